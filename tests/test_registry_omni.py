"""The registry with the Qwen2.5-Omni backbone, whose logged model holds its LoRA, head and base.json but never
the base's weights: a tracked omni run and its registered version name the backbone and the base checkpoint,
the pyfunc loads over a base given in model_config (moved: accepted; other weights: refused naming both
digests), the tiny model refuses that key, and the gate refuses a change of base unless told to allow it."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from model.errors import CheckpointError
from model.modalities import DIRECTION_NAMES
from omniretriever.cli import app
from registry.registry import CHAMPION, PREVIOUS, RegisteredVersion, gate, promote, register
from registry.store import client
from tests.conftest import omni_train_args
from tests.mlflow_helpers import registry_state

runner = CliRunner()


@pytest.fixture(scope="module")
def store() -> str:
    """The session's store (tests/conftest.py), where `tracked_run` was logged too."""
    return os.environ["MLFLOW_TRACKING_URI"]


@pytest.fixture(scope="module")
def tracked_omni(tiny_data, thinker_dir, omni_config, store, tmp_path_factory) -> tuple[Path, str]:
    """`omniretriever train --config omni_config --checkpoint thinker_dir` with tracking on, then `omniretriever
    evaluate` on the test split into the same run: (RUN, the MLflow run id)."""
    out = tmp_path_factory.mktemp("tracked-omni") / "run"
    res = runner.invoke(app, omni_train_args(tiny_data, out, omni_config, thinker_dir, "--tracking-uri", store))
    assert res.exit_code == 0, res.output
    run_id = re.search(r"mlflow run: (\w+)", res.output).group(1)
    res = runner.invoke(app, ["evaluate", "--model", str(out), "--data", str(tiny_data), "--split", "test", "--workers", "1"])
    assert res.exit_code == 0 and f"mlflow run: {run_id}" in res.output, res.output
    return out, run_id


@pytest.fixture(scope="module")
def omni_version(tracked_omni, store) -> RegisteredVersion:
    return register(tracked_omni[1], "omni-base", tracking_uri=store)


@pytest.fixture(scope="module")
def base_tags(thinker_dir) -> dict[str, str]:
    """The tags a model trained on thinker_dir carries: its backbone and the base's identity."""
    from model.omni.checkpoint import find_checkpoint

    identity = find_checkpoint(thinker_dir).identity()
    return {"backbone": "qwen2_5_omni", "base_checkpoint": identity["path"], "base_sha256": identity["digest"],
            "base_layout": identity["layout"]}


def changed_base(thinker_dir: Path, into: Path) -> Path:
    """A copy of thinker_dir with one weight of the first LLM layer moved by 1."""
    shutil.copytree(thinker_dir, into)
    weights = load_file(into / "model.safetensors")
    key = next(k for k in sorted(weights) if k.startswith("model.layers.0"))
    weights[key] = weights[key] + 1
    save_file(weights, into / "model.safetensors", metadata={"format": "pt"})
    return into


def test_the_run_and_its_version_name_the_backbone_and_the_base(tracked_omni, omni_version, base_tags, store):
    run = client(store).get_run(tracked_omni[1])
    assert base_tags.items() <= run.data.tags.items()
    stored = client(store).get_model_version("omni-base", omni_version.version).tags
    assert base_tags.items() <= stored.items() and base_tags.items() <= omni_version.tags.items()
    assert omni_version.base == ("qwen2_5_omni", base_tags["base_sha256"])

    res = runner.invoke(app, ["registry", "list", "--name", "omni-base", "--tracking-uri", store])
    assert res.exit_code == 0 and "qwen2_5_omni" in res.output, res.output
    res = runner.invoke(app, ["registry", "show", omni_version.version, "--name", "omni-base", "--tracking-uri", store])
    assert res.exit_code == 0, res.output
    for tag, value in base_tags.items():
        assert re.search(rf"^{tag} +{re.escape(value)}$", res.output, re.M), (tag, res.output)
    assert "model_config={'base_checkpoint': DIR}" in res.output
    res = runner.invoke(app, ["registry", "show", "nosuch", "--name", "omni-base", "--tracking-uri", store])
    assert res.exit_code == 2 and "no version or alias 'nosuch'" in res.output


def test_the_registered_model_loads_over_a_moved_base_as_the_embedder_does(omni_version, tracked_omni, thinker_dir,
                                                                          tiny_data, store, tmp_path):
    import mlflow

    from model.inference import Embedder
    from model.manifest import read_split, resolve_media

    moved = shutil.copytree(thinker_dir, tmp_path / "moved")
    client(store)  # points mlflow at the store
    pyfunc = mlflow.pyfunc.load_model(omni_version.uri, model_config={"base_checkpoint": str(moved)})
    assert pyfunc.unwrap_python_model().embedder.loaded.encoder.checkpoint.root == moved
    records = read_split(tiny_data, "test")[:3]
    media = [str(resolve_media(tiny_data, r.video)) for r in records]
    rows = ([{"text": r.text} for r in records] + [{"text": r.text, "video": m, "audio": m} for r, m in zip(records, media)]
            + [{"audio": m} for m in media])
    got = pyfunc.predict(pd.DataFrame(rows, columns=["text", "video", "audio"]))
    np.testing.assert_allclose(got, Embedder(tracked_omni[0]).embed(rows), atol=1e-5)


def test_a_base_with_other_weights_is_refused_naming_both_digests(omni_version, base_tags, thinker_dir, store, tmp_path):
    import mlflow

    from model.omni.checkpoint import find_checkpoint

    changed = changed_base(thinker_dir, tmp_path / "changed")
    found = find_checkpoint(changed).digest
    client(store)
    with pytest.raises(CheckpointError, match=f"digest {found}.*digest {base_tags['base_sha256']}"):
        mlflow.pyfunc.load_model(omni_version.uri, model_config={"base_checkpoint": str(changed)})


def test_the_tiny_model_refuses_a_base_checkpoint(tracked_run, thinker_dir, store):
    import mlflow

    tags = client(store).get_run(tracked_run[1]).data.tags
    assert tags["backbone"] == "tiny" and not {"base_checkpoint", "base_sha256", "base_layout"} & set(tags)
    with pytest.raises(CheckpointError, match="base_checkpoint=.* this model has no base checkpoint to load"):
        mlflow.pyfunc.load_model(tags["model_uri"], model_config={"base_checkpoint": str(thinker_dir)})


def version(n: str, **tags: str) -> RegisteredVersion:
    metrics = {f"{d}.R1": 10.0 for d in DIRECTION_NAMES} | {"AVG-all": 10.0, "AVG-single": 10.0, "AVG-dual": 10.0}
    return RegisteredVersion("m", n, f"run{n}", 10.0, metrics=metrics, split="test", n_items=24, tags=tags)


OMNI = {"backbone": "qwen2_5_omni", "base_sha256": "a" * 64, "base_checkpoint": "/bases/a"}


@pytest.mark.parametrize("challenger,champion,promoted", [
    (OMNI, OMNI, True),
    ({"backbone": "tiny"}, {"backbone": "tiny"}, True),
    ({**OMNI, "base_checkpoint": "/moved/a"}, OMNI, True),  # the same weights elsewhere
    ({**OMNI, "base_sha256": "b" * 64}, OMNI, False),
    (OMNI, {"backbone": "tiny"}, False),
    (OMNI, {}, False),  # a champion registered before backbones were tagged: a tiny one
    ({"backbone": "tiny"}, {}, True),
])
def test_the_gate_compares_only_versions_over_the_same_base(challenger, champion, promoted):
    decision = gate(version("2", **challenger), version("1", **champion))
    assert decision.promoted is promoted, decision.reasons
    assert [r.split(":")[0] for r in decision.reasons] == ([] if promoted else ["different base"])
    allowed = gate(version("2", **challenger), version("1", **champion), allow_base_change=True)
    assert allowed.promoted and len(allowed.notes) == (not promoted)


def test_promoting_over_another_base_needs_allow_base_change(tracked_run, tracked_omni, store):
    name, loose = "base-change", ["--min-gain", "-100", "--max-drop", "100"]
    register(tracked_run[1], name, tracking_uri=store)
    assert promote(name, floor=0.0, tracking_uri=store).promoted
    register(tracked_omni[1], name, tracking_uri=store)
    before = registry_state(store)[name]
    refused = promote(name, -100.0, 100.0, tracking_uri=store)
    assert not refused.promoted and registry_state(store)[name] == before
    digest = client(store).get_model_version(name, "2").tags["base_sha256"]
    assert len(refused.reasons) == 1 and refused.reasons[0].startswith(
        f"different base: challenger v2 is qwen2_5_omni over base sha256 {digest[:12]} (base_checkpoint ")
    assert "champion v1 is tiny (base_checkpoint -)" in refused.reasons[0]

    res = runner.invoke(app, ["registry", "promote", "--name", name, *loose, "--tracking-uri", store])
    assert res.exit_code == 1 and "different base" in res.output and registry_state(store)[name] == before, res.output
    res = runner.invoke(app, ["registry", "promote", "--name", name, *loose, "--allow-base-change", "--tracking-uri", store])
    assert res.exit_code == 0 and "allowed: different base" in res.output, res.output
    assert registry_state(store)[name]["aliases"] == {CHAMPION: "2", PREVIOUS: "1"}
    assert "allowed: different base" in client(store).get_model_version(name, "2").tags["gate"]
