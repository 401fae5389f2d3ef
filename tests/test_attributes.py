import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from dataset.attributes import attribute_agreement, chance_agreement, read_scene_attributes, top1
from model.errors import OmniRetrieverError
from model.modalities import BENCH_VIEWS, DIRECTION_NAMES
from dataset.vocabulary import ATTRIBUTES
from omniretriever.cli import app

runner = CliRunner()


def test_chance_is_the_share_of_agreeing_pairs():
    assert chance_agreement(["a", "a", "b", "b"]) == pytest.approx(0.5)
    assert chance_agreement([1, 2, 3, 4]) == pytest.approx(0.25)
    assert chance_agreement(["x"] * 5) == pytest.approx(1.0)


def test_top1_matches_a_full_argmax_across_blocks():
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(300, 16, generator=gen), torch.randn(300, 16, generator=gen)
    assert torch.equal(top1(q, g, block=64), (q @ g.T).argmax(1))


def test_an_embedding_of_one_attribute_agrees_on_it_and_is_at_chance_on_an_independent_one():
    gen = torch.Generator().manual_seed(1)
    n = 2000
    kind = torch.randint(0, 5, (n,), generator=gen)
    other = torch.randint(0, 4, (n,), generator=gen)
    # every view: the kind as a one-hot plus small noise, so the top-1 result shares the kind and nothing else
    emb = {v: F.normalize(F.one_hot(kind, 5).float() + 0.01 * torch.randn(n, 5, generator=gen), dim=-1) for v in BENCH_VIEWS}
    out = attribute_agreement(emb, {"kind": kind.tolist(), "other": other.tolist()})
    assert set(out["directions"]) == set(DIRECTION_NAMES)
    for shares in out["directions"].values():
        assert shares["kind"] == 1.0
        assert abs(shares["other"] - out["chance"]["other"]) < 0.05
    assert out["chance"]["kind"] == pytest.approx(0.2, abs=0.02)


def _scenes(tmp_path, lines):
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "test.jsonl").write_text("".join(lines))
    return tmp_path


def test_scene_attributes_follow_the_order_of_the_ids(tmp_path):
    rows = [{"id": f"c{i}", **{a: f"{a}{i % 2}" for a in ATTRIBUTES}} for i in range(3)]
    root = _scenes(tmp_path, [json.dumps(r) + "\n" for r in rows])
    got = read_scene_attributes(root, "test", ["c2", "c0"])
    assert got["kind"] == ["kind0", "kind0"] and got["size"] == ["size0", "size0"]
    assert list(got) == list(ATTRIBUTES)


@pytest.mark.parametrize("lines, message", [
    (None, "not found"),
    (['{"id": "c0", broken\n'], "test.jsonl:1: not a scene record"),
    (['{"id": "other"}\n'], "no scene for 1 item(s)"),
    (['{"id": "c0", "kind": "ball"}\n'], "lack attribute(s) size"),
])
def test_bad_scene_files_are_named(tmp_path, lines, message):
    root = tmp_path if lines is None else _scenes(tmp_path, lines)
    with pytest.raises(OmniRetrieverError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_scene_attributes(root, "test", ["c0"])


@pytest.mark.parametrize("run", ["tiny_run", "omni_run"])
def test_cli_writes_the_table_for_a_trained_model(run, tiny_data, tmp_path, request):
    out = tmp_path / "attributes.json"
    res = runner.invoke(app, ["attributes", "--model", str(request.getfixturevalue(run)), "--data", str(tiny_data), "--out", str(out),
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "top-1 attribute agreement" in res.output and "chance" in res.output
    result = json.loads(out.read_text())
    assert result["n_items"] == 24 and set(result["directions"]) == set(DIRECTION_NAMES)
    assert all(0.0 <= s <= 1.0 for shares in result["directions"].values() for s in shares.values())


def test_cli_names_a_dataset_without_scenes(tiny_run, tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("scenes"))
    out = tmp_path / "attributes.json"
    res = runner.invoke(app, ["attributes", "--model", str(tiny_run), "--data", str(data), "--out", str(out), "--workers", "1"])
    assert res.exit_code == 2
    assert "scenes" in res.output and "omniretriever data synth" in res.output
    assert not out.exists()
