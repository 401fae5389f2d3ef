"""The model registry against a real MLflow sqlite store: register, the gate, promote, rollback, list, bad
inputs that change nothing, two racing promotions, and the champion loaded in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model.modalities import DIRECTION_NAMES
from omniretriever.cli import app
from registry.registry import (CHALLENGER, CHAMPION, PREVIOUS, RegisteredVersion, RegistryError, gate, list_versions,
                               promote, register, rollback)
from tests.mlflow_helpers import logged_weights, new_run, registry_state, shifted

runner = CliRunner()


@pytest.fixture(scope="module")
def store() -> str:
    return os.environ["MLFLOW_TRACKING_URI"]


@pytest.fixture(scope="module")
def base_results(tiny_run, tiny_data, tmp_path_factory) -> dict:
    """The real evaluation of tiny_run on tiny_data's test split."""
    from model.evaluate import evaluate

    return evaluate(tiny_run, tiny_data, "test", tmp_path_factory.mktemp("eval") / "results.json", workers=1,
                    progress=False, n_boot=50)


@pytest.fixture(scope="module")
def make_run(store, tiny_run, base_results, tmp_path_factory):
    """make_run(deltas) -> the id of a new run holding tiny_run's model and its evaluation with R@1 moved by deltas."""
    workdir = tmp_path_factory.mktemp("runs")

    def make(deltas: dict[str, float] | None = None, evaluated: bool = True) -> str:
        return new_run(store, tiny_run / "model", shifted(base_results, deltas or {}) if evaluated else None, workdir)

    return make


@pytest.fixture(scope="module")
def runs(make_run) -> dict[str, str]:
    """Runs of known quality around the real evaluation lifted by 20 points (so no drop is clipped at 0):
    a base, a better one (5 more everywhere), one whose t2v loses 10."""
    lifted = {d: 20.0 for d in DIRECTION_NAMES}
    return {"base": make_run(lifted), "better": make_run({d: 25.0 for d in DIRECTION_NAMES}),
            "t2v_drop": make_run({**lifted, "t2v": 10.0})}


def aliases(store: str, name: str) -> dict[str, str]:
    return registry_state(store)[name]["aliases"]


# ---------------------------------------------------------------------------------------------------
# the gate itself


def version(n: str, avg_all: float, **r1: float) -> RegisteredVersion:
    metrics = {f"{d}.R1": r1.get(d, avg_all) for d in DIRECTION_NAMES}
    metrics.update({"AVG-all": avg_all, "AVG-single": avg_all, "AVG-dual": avg_all})
    return RegisteredVersion("m", n, f"run{n}", avg_all, metrics=metrics, split="test", n_items=100)


@pytest.mark.parametrize("challenger,champion,kwargs,promoted,reason", [
    (version("1", 5.0), None, {"floor": 1.0}, True, None),
    (version("1", 0.5), None, {"floor": 1.0}, False, "AVG-all 0.50 is below the floor 1.00"),
    (version("2", 10.0), version("1", 8.0), {}, True, None),
    (version("2", 8.5), version("1", 8.0), {"min_gain": 1.0}, False, "AVG-all gained +0.50 (8.00 -> 8.50), less than the required 1.00"),
    (version("2", 10.0, a2v=4.0), version("1", 8.0), {"max_drop": 2.0}, False, "a2v: R@1 dropped 4.00 (8.00 -> 4.00), more than the allowed 2.00"),
    (version("2", 10.0, a2v=6.5), version("1", 8.0), {"max_drop": 2.0}, True, None),
    (version("2", 7.9), version("1", 8.0), {"min_gain": -0.5}, True, None),
])
def test_gate_rules(challenger, champion, kwargs, promoted, reason):
    decision = gate(challenger, champion, **kwargs)
    assert decision.promoted is promoted
    assert (reason is None and decision.reasons == []) or any(r.startswith(reason) for r in decision.reasons), decision.reasons
    assert len(decision.rows) == (1 if champion is None else 13)


def test_gate_refuses_evaluations_of_different_galleries():
    other = version("1", 5.0)
    other.n_items = 1000
    decision = gate(version("2", 9.0), other)
    assert not decision.promoted and "not comparable" in decision.reasons[0]


# ---------------------------------------------------------------------------------------------------
# register, promote, rollback, list through the library


def test_register_sets_challenger_and_records_the_evaluation(store, runs, base_results):
    registered = register(runs["base"], "reg-tags", tracking_uri=store)
    assert (registered.version, registered.aliases, registered.run_id) == ("1", [CHALLENGER], runs["base"])
    assert registered.avg_all == pytest.approx(base_results["AVG-all"] + 20.0)
    for d in DIRECTION_NAMES:
        assert registered.metrics[f"{d}.R1"] == pytest.approx(base_results["directions"][d]["R@1"] + 20.0)
    assert registered.tags["data_version"] and registered.tags["git_commit"] and registered.n_items == 24
    assert registered.model_uri.startswith("models:/m-")


def test_promote_rollback_and_list(store, runs):
    name = "flow"
    register(runs["base"], name, tracking_uri=store)
    first = promote(name, tracking_uri=store)
    assert first.promoted and first.champion_before is None and aliases(store, name) == {CHAMPION: "1"}

    register(runs["t2v_drop"], name, tracking_uri=store)
    before = registry_state(store)
    refused = promote(name, max_drop=2.0, tracking_uri=store)
    assert not refused.promoted and refused.champion_after == "1"
    assert [row.metric for row in refused.rows if not row.ok] == ["AVG-all", "t2v R@1"]
    assert any(r.startswith("t2v: R@1 dropped 10.00") and "(--max-drop)" in r for r in refused.reasons)
    assert any(r.startswith("AVG-all gained -") for r in refused.reasons)
    assert registry_state(store) == before  # failing changes nothing

    register(runs["better"], name, tracking_uri=store)
    second = promote(name, min_gain=1.0, max_drop=0.0, tracking_uri=store)
    assert second.promoted and (second.challenger, second.champion_before, second.champion_after) == ("3", "1", "3")
    assert aliases(store, name) == {CHAMPION: "3", PREVIOUS: "1"}

    assert rollback(name, tracking_uri=store) == "1"
    assert aliases(store, name) == {CHAMPION: "1"}  # v1 had no champion before it
    with pytest.raises(RegistryError, match="no version with alias 'previous'"):
        rollback(name, tracking_uri=store)
    listed = list_versions(name, tracking_uri=store)
    assert [(v.version, v.aliases) for v in listed] == [("1", [CHAMPION]), ("2", []), ("3", [])]
    assert listed[2].avg_all == pytest.approx(listed[0].avg_all + 5.0)


def test_rollbacks_chain_through_previous_champions(store, runs):
    name = "chain"
    for key in ("base", "better", "better"):
        register(runs[key], name, tracking_uri=store)
        assert promote(name, tracking_uri=store).promoted
    assert aliases(store, name) == {CHAMPION: "3", PREVIOUS: "2"}
    assert rollback(name, tracking_uri=store) == "2"
    assert aliases(store, name) == {CHAMPION: "2", PREVIOUS: "1"}
    assert rollback(name, tracking_uri=store) == "1"
    assert aliases(store, name) == {CHAMPION: "1"}


# ---------------------------------------------------------------------------------------------------
# bad input: a clear error and no change


def run_without_evaluation(make_run, store, base) -> str:
    return make_run(evaluated=False)


def run_missing_a_direction(make_run, store, base) -> str:
    """Evaluation metrics for 11 directions only (log_evaluation itself refuses partial results)."""
    from mlflow.entities import Metric

    from registry.evaluation_log import evaluation_metrics
    from registry.store import client

    run_id = make_run(evaluated=False)
    metrics = {k: v for k, v in evaluation_metrics(base).items() if ".a2v." not in k}
    client(store).log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    return run_id


def run_with_truncated_weights(make_run, store, base) -> str:
    run_id = make_run()
    weights = logged_weights(store, run_id)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return run_id


def run_with_flipped_weights(make_run, store, base) -> str:
    run_id = make_run()
    weights = logged_weights(store, run_id)
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # the safetensors still parses; only the checksum notices
    weights.write_bytes(bytes(data))
    return run_id


@pytest.mark.parametrize("make_bad,message", [
    (lambda make_run, store, base: "f" * 32, "unknown run 'ffffffffffffffffffffffffffffffff'"),
    (run_without_evaluation, "has no evaluation results for split 'test'"),
    (run_missing_a_direction, "the 'test' evaluation lacks a2v"),
    (run_with_truncated_weights, "the logged model's artifacts do not load"),
    (run_with_flipped_weights, "does not match the checksum recorded when it was logged"),
], ids=["unknown-run", "no-evaluation", "missing-direction", "truncated-weights", "corrupted-weights"])
def test_bad_runs_are_refused_and_change_nothing(store, runs, make_run, base_results, make_bad, message):
    name = "guarded"
    if name not in registry_state(store):
        register(runs["base"], name, tracking_uri=store)
        promote(name, tracking_uri=store)
    run_id = make_bad(make_run, store, base_results)
    before = registry_state(store)
    with pytest.raises(RegistryError, match=message):
        register(run_id, name, tracking_uri=store)
    assert registry_state(store) == before


@pytest.mark.parametrize("args,code,message", [
    (["registry", "register", "nope"], 2, "error: unknown run 'nope'"),
    (["registry", "promote", "--name", "never-registered"], 2, "error: no registered model named 'never-registered'"),
    (["registry", "promote", "--max-drop", "-1"], 2, "--max-drop=-1.0 (must be finite and >= 0)"),
    (["registry", "list", "--name", "bad'name"], 2, "invalid model name"),
    (["registry", "rollback", "--name", "never-registered"], 2, "no registered model named"),
])
def test_cli_bad_input_exits_2(args, code, message):
    res = runner.invoke(app, args)
    assert res.exit_code == code and message in res.output, res.output


def test_cli_exit_codes_and_the_gate_table(store, runs):
    name = "cli-gate"
    registered = runner.invoke(app, ["registry", "register", runs["base"], "--name", name])
    assert registered.exit_code == 0 and "registered cli-gate version 1" in registered.output, registered.output
    assert "Downloading artifacts" not in registered.output, "no progress bar per downloaded file"
    passed = runner.invoke(app, ["registry", "promote", "--name", name])
    assert passed.exit_code == 0 and "promoted: v1 is champion" in passed.output
    assert runner.invoke(app, ["registry", "register", runs["t2v_drop"], "--name", name]).exit_code == 0
    refused = runner.invoke(app, ["registry", "promote", "--name", name, "--max-drop", "3"])
    assert refused.exit_code == 1, refused.output
    assert "refused: v2 stays challenger" in refused.output and "t2v: R@1 dropped 10.00" in refused.output
    assert all(d in refused.output for d in DIRECTION_NAMES)  # direction by direction
    listed = runner.invoke(app, ["registry", "list", "--name", name])
    assert listed.exit_code == 0 and "champion" in listed.output and "challenger" in listed.output


@pytest.mark.parametrize("cmd", [["registry"], ["registry", "register"], ["registry", "promote"], ["registry", "rollback"],
                                 ["registry", "list"]], ids=lambda c: " ".join(c))
def test_registry_commands_have_help(cmd):
    res = runner.invoke(app, cmd + ["--help"])
    assert res.exit_code == 0 and "Usage" in res.output


# ---------------------------------------------------------------------------------------------------
# two processes racing


def test_two_racing_promotions_leave_consistent_aliases(store, runs):
    """Both processes pause between deciding and writing; the lock makes the second decide after the first."""
    name = "race"
    register(runs["base"], name, tracking_uri=store)
    assert promote(name, tracking_uri=store).promoted
    register(runs["better"], name, tracking_uri=store)
    env = {**os.environ, "OMNIRETRIEVER_PROMOTE_DELAY_S": "3"}
    cmd = [sys.executable, "-m", "omniretriever", "registry", "promote", "--name", name, "--tracking-uri", store]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    assert any("no version with alias 'challenger' (version 2 is champion)" in o for o in outs), outs
    assert aliases(store, name) == {CHAMPION: "2", PREVIOUS: "1"}


# ---------------------------------------------------------------------------------------------------
# the champion, loaded in a fresh process


FRESH = textwrap.dedent("""
    import json, sys
    import mlflow, numpy as np, pandas as pd
    rows = json.load(open(sys.argv[1]))
    for row in rows:
        if row.get("audio_bytes"):
            row["audio"] = open(row.pop("audio_bytes"), "rb").read()
    model = mlflow.pyfunc.load_model("models:/omniretriever@champion")
    np.save(sys.argv[2], model.predict(pd.DataFrame(rows, columns=["text", "video", "audio"])))
""")


def test_champion_loads_in_a_fresh_process_and_embeds_like_training(tracked_run, tiny_data, store, tmp_path):
    from model.inference import Embedder
    from model.manifest import read_split, resolve_media

    run_dir, run_id = tracked_run
    registered = runner.invoke(app, ["registry", "register", str(run_dir)])  # a run directory names its run
    assert registered.exit_code == 0 and f"run {run_id}" in registered.output, registered.output
    assert runner.invoke(app, ["registry", "promote"]).exit_code == 0  # models:/omniretriever@champion
    recs = read_split(tiny_data, "test")[:3]
    paths = [(r.text, str(resolve_media(tiny_data, r.video)), str(resolve_media(tiny_data, r.audio))) for r in recs]
    rows = [{"text": paths[0][0]}, {"video": paths[1][1]}, {"audio_bytes": paths[2][2]},
            {"text": paths[0][0], "video": paths[0][1]}, {"text": paths[1][0], "video": paths[1][1], "audio": paths[1][2]}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "fresh.py").write_text(FRESH)
    subprocess.run([sys.executable, str(tmp_path / "fresh.py"), str(tmp_path / "rows.json"), str(tmp_path / "emb.npy")],
                   check=True, timeout=240, cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": store})
    fresh = np.load(tmp_path / "emb.npy")
    local_rows = [{("audio" if k == "audio_bytes" else k): (Path(v).read_bytes() if k == "audio_bytes" else v)
                   for k, v in row.items()} for row in rows]
    here = Embedder(run_dir).embed(local_rows)
    assert fresh.shape == here.shape == (5, here.shape[1]) and fresh.dtype == np.float32
    np.testing.assert_allclose(fresh, here, atol=1e-5)
    # the champion is what `index add --model models:/omniretriever@champion` embeds with (its weights checked)
    from model.store import weights_digest
    from serving.store import store_collections

    db = tmp_path / "library.db"
    added = subprocess.run([sys.executable, "-m", "omniretriever", "index", "add", "--model",
                            "models:/omniretriever@champion", "--data", str(tiny_data), "--split", "test", "--uri",
                            str(db), "--view", "t", "--workers", "1"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "MLFLOW_TRACKING_URI": store})
    assert added.returncode == 0, added.stderr[-2000:]
    assert [c["weights_sha256"] for c in store_collections(db)] == [weights_digest(run_dir)]
    bad = subprocess.run([sys.executable, "-m", "omniretriever", "index", "add", "--model", "models:/omniretriever@nope",
                          "--data", str(tiny_data), "--split", "test", "--uri", str(tmp_path / "x.db")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": store})
    assert bad.returncode == 2 and "has no version or alias 'nope'" in bad.stderr + bad.stdout
