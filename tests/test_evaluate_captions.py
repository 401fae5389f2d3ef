"""Evaluation with several captions per item: every caption queries text->media, any of an item's captions
is a hit in media->text, media galleries hold each item once; and `evaluate --benchmark` names its protocol
and prints the paper's reference beside ours."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from model.data import load_bank
from model.evaluate import caption_embeddings, embed_views, evaluate
from model.manifest import Record, read_split, write_manifest
from model.metrics import direction_metrics_multi
from omniretriever.cli import app


@pytest.fixture(scope="module")
def captioned(tiny_data, tmp_path_factory) -> Path:
    """tiny_data's test split with two further captions an item."""
    root = tmp_path_factory.mktemp("captioned") / "data"
    shutil.copytree(tiny_data / "videos", root / "videos", ignore=lambda d, names: [n for n in names if "test-" not in n])
    recs = [Record(r.id, r.text, r.video, r.audio, (f"{r.text}, seen again", f"clip number {i}"))
            for i, r in enumerate(read_split(tiny_data, "test"))]
    write_manifest(root / "manifests" / "test.jsonl", recs)
    return root


def test_every_caption_queries_and_any_caption_is_a_hit(captioned, tiny_run, tmp_path):
    results = evaluate(tiny_run, captioned, "test", tmp_path / "r.json", workers=1, progress=False, n_boot=10)
    d = results["directions"]
    assert results["protocol"] == {"captions": "every caption", "items": 24, "with_video": 24, "with_audio": 24,
                                   "caption_queries": 72}
    assert (d["t2v"]["n"], d["t2v"]["n_gallery"], d["t2v"]["n_items"]) == (72, 24, 24)  # each video once
    assert (d["v2t"]["n"], d["v2t"]["n_gallery"], d["v2t"]["n_items"]) == (24, 72, 24)
    assert (d["t2av"]["n"], d["av2t"]["n_gallery"]) == (72, 72)
    assert (d["tv2a"]["n"], d["tv2a"]["n_gallery"]) == (24, 24)  # fused views with text: the main caption, once
    # the same figures from the embeddings, by hand
    from model.store import load_model

    model = load_model(tiny_run)
    bank = load_bank(captioned, "test", model.config, workers=1, progress=False)
    emb = embed_views(model, bank)
    z, item = caption_embeddings(model, bank)
    assert z.shape == (72, emb["t"].shape[1]) and torch.allclose(z[item == 0][0], emb["t"][0], atol=1e-6)
    t2v = direction_metrics_multi(z, emb["v"], item, torch.arange(24), n_boot=10)
    v2t = direction_metrics_multi(emb["v"], z, torch.arange(24), item, n_boot=10)
    assert d["t2v"]["R@1"] == pytest.approx(t2v["R@1"]) and d["v2t"]["MRR"] == pytest.approx(v2t["MRR"])


def test_one_caption_an_item_is_scored_as_the_benchmark_always_was(tiny_data, tiny_run, tmp_path):
    results = evaluate(tiny_run, tiny_data, "test", None, workers=1, progress=False, n_boot=10)
    assert results["protocol"]["captions"] == "one per item" and results["directions"]["t2v"]["n"] == 24
    assert "n_items" not in results["directions"]["t2v"]


def test_evaluate_benchmark_prints_the_papers_reference(captioned, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    res = CliRunner().invoke(app, ["evaluate", "--model", str(run), "--data", str(captioned), "--benchmark", "msrvtt",
                                   "--workers", "1", "--no-track"])
    assert res.exit_code == 0, res.output
    assert "paper R@1" in res.output and "47.90" in res.output
    results = json.loads((run / "results-msrvtt.json").read_text())
    assert results["protocol"]["benchmark"] == "msrvtt" and results["reference"]["R@1"] == {"t2v": 47.9}
    assert results["protocol"]["captions"] == "one per item"  # 1k-A: one sentence a video, the main caption
    bad = CliRunner().invoke(app, ["evaluate", "--model", str(run), "--data", str(captioned), "--benchmark", "nope",
                                   "--no-track"])
    assert bad.exit_code == 2 and "unknown benchmark 'nope'" in bad.output
