"""Public benchmarks in tracking and the registry: a benchmark's evaluation is logged under its own prefix
(only the directions it scores), a version is registered with its benchmark R@1, and gate rules judge them."""

from __future__ import annotations

import copy
import os

import pytest

from model.modalities import DIRECTION_NAMES
from registry.registry import GateRule, RegisteredVersion, RegistryError, gate, parse_rule, promote, register
from tests.mlflow_helpers import new_run


def version(n: str, avg_all: float, **bench: float) -> RegisteredVersion:
    metrics = {f"{d}.R1": avg_all for d in DIRECTION_NAMES}
    metrics.update({"AVG-all": avg_all, "AVG-single": avg_all, "AVG-dual": avg_all})
    metrics.update({f"{k.replace('_', '.')}.R1": v for k, v in bench.items()})
    return RegisteredVersion("m", n, f"run{n}", avg_all, metrics=metrics, split="test", n_items=100)


def test_rules_parse_and_bad_ones_are_named():
    assert parse_rule("clotho.t2a >= 15") == GateRule("clotho", "t2a", "floor", 15.0)
    assert parse_rule("msrvtt.t2v drop <= 2.5") == GateRule("msrvtt", "t2v", "drop", 2.5)
    assert str(parse_rule("msrvtt.t2v drop<=2")) == "msrvtt.t2v drop <= 2"
    for text, message in [("clotho t2a >= 1", "expected 'BENCHMARK.DIRECTION >= R1'"),
                          ("nope.t2a >= 1", "unknown benchmark 'nope'"), ("clotho.t2x >= 1", "unknown direction 't2x'"),
                          ("clotho.t2a > 1", "expected")]:
        with pytest.raises(RegistryError, match=message):
            parse_rule(text)


@pytest.mark.parametrize("challenger,champion,rule,promoted,words", [
    (version("2", 10, clotho_t2a=20), version("1", 8, clotho_t2a=18), "clotho.t2a >= 15", True, None),
    (version("2", 10, clotho_t2a=12), version("1", 8, clotho_t2a=18), "clotho.t2a >= 15", False, "clotho.t2a >= 15: R@1 is 12.00"),
    (version("2", 10, clotho_t2a=15), version("1", 8, clotho_t2a=18), "clotho.t2a drop <= 2", False,
     "clotho.t2a drop <= 2: R@1 dropped 3.00 (18.00 -> 15.00)"),
    (version("2", 10, clotho_t2a=17), version("1", 8, clotho_t2a=18), "clotho.t2a drop <= 2", True, None),
    (version("2", 10), version("1", 8, clotho_t2a=18), "clotho.t2a >= 1", False, "clotho.t2a >= 1: challenger v2 has no clotho.t2a.R1"),
    (version("1", 5, msrvtt_t2v=3), None, "msrvtt.t2v >= 4", False, "msrvtt.t2v >= 4: R@1 is 3.00"),
    (version("1", 5, msrvtt_t2v=3), None, "msrvtt.t2v drop <= 1", True, None),  # nothing to compare with: noted
])
def test_gate_judges_benchmark_directions(challenger, champion, rule, promoted, words):
    decision = gate(challenger, champion, rules=(parse_rule(rule),))
    assert decision.promoted is promoted, decision.reasons
    assert words is None or any(r.startswith(words) for r in decision.reasons), decision.reasons
    assert decision.rows[-1].rule == str(parse_rule(rule))
    if champion is None and promoted:
        assert decision.notes == ["msrvtt.t2v drop <= 1: no champion to compare with"]


def clotho_results(base: dict) -> dict:
    """An audio-only benchmark's results: only t2a and a2t scored."""
    out = copy.deepcopy(base)
    out["directions"] = {d: out["directions"][d] for d in ("t2a", "a2t")}
    out["unscored"] = [d for d in DIRECTION_NAMES if d not in out["directions"]]
    single = (out["directions"]["t2a"]["R@1"] + out["directions"]["a2t"]["R@1"]) / 2
    out.update({"AVG-single": single, "AVG-dual": None, "AVG-all": single, "split": "test"})
    out["protocol"] = {"captions": "every caption", "benchmark": "clotho"}
    return out


def test_a_benchmark_is_logged_under_its_name_registered_and_gated(tiny_run, tiny_data, tmp_path):
    from model.evaluate import evaluate
    from registry.evaluation_log import log_evaluation
    from registry.store import client

    uri = os.environ["MLFLOW_TRACKING_URI"]
    base = evaluate(tiny_run, tiny_data, "test", tmp_path / "results.json", workers=1, progress=False, n_boot=10)
    run_id = new_run(uri, tiny_run / "model", base, tmp_path)
    bench = clotho_results(base)
    (tmp_path / "clotho.json").write_text("{}")
    log_evaluation(bench, tmp_path / "clotho.json", run_id, tracking_uri=uri)
    metrics = client(uri).get_run(run_id).data.metrics
    assert metrics["clotho.t2a.R1"] == pytest.approx(bench["directions"]["t2a"]["R@1"])
    assert "clotho.t2v.R1" not in metrics and "clotho.AVG-dual" not in metrics and "clotho.AVG-all" in metrics
    assert metrics["test.AVG-all"] == pytest.approx(base["AVG-all"])  # the split's own evaluation untouched
    registered = register(run_id, name="bench-gated", tracking_uri=uri)
    assert float(registered.tags["clotho.t2a.R1"]) == pytest.approx(bench["directions"]["t2a"]["R@1"])
    assert registered.metrics["clotho.a2t.R1"] == pytest.approx(bench["directions"]["a2t"]["R@1"])
    refused = promote("bench-gated", floor=0.0, tracking_uri=uri, rules=["clotho.t2a >= 101"])
    assert not refused.promoted and refused.reasons[0].startswith("clotho.t2a >= 101: R@1 is")
    passed = promote("bench-gated", floor=0.0, tracking_uri=uri, rules=["clotho.t2a >= 0"])
    assert passed.promoted and passed.champion_after == registered.version
    with pytest.raises(RegistryError, match="unknown benchmark"):
        promote("bench-gated", tracking_uri=uri, rules=["nope.t2a >= 0"])


def test_a_partial_evaluation_without_its_unscored_list_is_still_refused(tiny_run, tmp_path):
    from registry.evaluation_log import log_evaluation
    from registry.store import TrackingError

    results = {"directions": {"t2a": {"R@1": 1.0}}, "AVG-single": 1.0, "AVG-dual": None, "AVG-all": 1.0}
    with pytest.raises(TrackingError, match="lack t2v"):
        log_evaluation(results, tmp_path / "r.json", None, tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
