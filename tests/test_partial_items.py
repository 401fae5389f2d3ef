"""Items without video or without audio, end to end: the manifest says null (or the file has no such stream),
decoding flags it, evaluation scores only the directions an item can be queried in, training masks what an
item lacks, and the index embeds an item only from what it has, marking entries that hold part of a view."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from model.data import load_bank
from model.evaluate import embed_views, evaluate, score_embeddings
from model.inference import Embedder
from model.losses import Objective, info_nce
from model.manifest import read_split, resolve_media
from model.media import DecodeConfig
from model.modalities import BENCH_VIEWS
from omniretriever.cli import app
from serving.index import load_index

AUDIO_ONLY = range(0, 4)  # "video": null, "audio": the mp4 (its audio track)
VIDEO_ONLY = range(4, 8)  # "audio": null
SILENT_FILE = range(8, 10)  # "audio" names an mp4 that has no audio stream: video-only too


def strip_audio(src: Path, dst: Path) -> Path:
    """A copy of src's video stream alone (remuxed, not re-encoded)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)
    return dst


def make_partial(tiny_data: Path, root: Path) -> Path:
    """tiny_data's train and test splits with items 0-3 audio-only, 4-7 video-only and 8-9 video-only by file."""
    shutil.copytree(tiny_data / "videos", root / "videos")
    (root / "manifests").mkdir(parents=True)
    for split in ("train", "test"):
        lines = []
        for i, rec in enumerate(read_split(tiny_data, split)):
            obj = json.loads(rec.to_json())
            if i in AUDIO_ONLY:
                obj["video"] = None
            elif i in VIDEO_ONLY:
                obj["audio"] = None
            elif i in SILENT_FILE:
                silent = f"videos/{rec.id}-silent.mp4"
                strip_audio(root / rec.video, root / silent)
                obj["video"] = obj["audio"] = silent
            lines.append(json.dumps(obj))
        (root / "manifests" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def partial_data(tiny_data, tmp_path_factory) -> Path:
    return make_partial(tiny_data, tmp_path_factory.mktemp("partial") / "data")


def test_the_bank_flags_what_each_item_lacks_and_holds_zeros_there(partial_data, tiny_data):
    bank = load_bank(partial_data, "test", DecodeConfig(), workers=1, progress=False)
    n = len(bank)
    no_video = torch.zeros(n, dtype=torch.bool)
    no_video[list(AUDIO_ONLY)] = True
    no_audio = torch.zeros(n, dtype=torch.bool)
    no_audio[list(VIDEO_ONLY) + list(SILENT_FILE)] = True
    assert torch.equal(bank.has_video, ~no_video) and torch.equal(bank.has_audio, ~no_audio)
    assert not bank.complete and int(bank.has("av").sum()) == n - 10 and bool(bank.has("t").all())
    assert int(bank.frames[no_video].abs().sum()) == 0  # no frames invented: zeros, and flagged
    assert bank.frames[~no_video].float().mean() > 10
    # an audio-only item's audio is its mp4's audio track placed as for the complete item; a video-only
    # item's frames are the complete item's
    whole = load_bank(tiny_data, "test", DecodeConfig(), workers=1, progress=False, limit=8)
    assert torch.equal(bank.mel[:4], whole.mel[:4]) and torch.equal(bank.frames[4:8], whole.frames[4:8])


def test_evaluation_queries_only_what_an_item_holds(partial_data, tiny_run, tmp_path):
    results = evaluate(tiny_run, partial_data, "test", tmp_path / "results.json", workers=1, progress=False, n_boot=10)
    d = results["directions"]
    n = results["n_items"]
    assert n == 24 and results["protocol"] == {"captions": "one per item", "items": 24, "with_video": 20, "with_audio": 18}
    assert (d["t2v"]["n"], d["t2v"]["n_gallery"]) == (20, 20)
    assert (d["t2a"]["n"], d["t2a"]["n_gallery"]) == (18, 18)
    assert (d["v2a"]["n"], d["v2a"]["n_gallery"]) == (14, 18)  # audio-only items: distractors in the audio gallery
    assert (d["a2v"]["n"], d["a2v"]["n_gallery"]) == (14, 20)  # video-only items: distractors in the video gallery
    assert (d["t2av"]["n"], d["t2av"]["n_gallery"]) == (14, 14)
    assert (d["a2tv"]["n"], d["a2tv"]["n_gallery"]) == (14, 20)
    assert results["nonfinite_rows"] == dict.fromkeys(BENCH_VIEWS, 0) and "unscored" not in results
    # the same numbers from the embeddings of the items that hold each view, scored by hand
    from model.store import load_model

    model = load_model(tiny_run)
    bank = load_bank(partial_data, "test", model.config, workers=1, progress=False)
    emb = embed_views(model, bank)
    for view in BENCH_VIEWS:  # an item is never embedded in a view it does not hold
        assert bool(torch.isnan(emb[view][~bank.has(view)]).all()) and bool(torch.isfinite(emb[view][bank.has(view)]).all())
    again = score_embeddings(emb, n_boot=10, has={v: bank.has(v) for v in BENCH_VIEWS})
    assert again["AVG-all"] == pytest.approx(results["AVG-all"])
    assert (tmp_path / "results.png").is_file()


def test_masked_pairwise_infonce_is_the_infonce_of_the_rows_that_hold_the_pair():
    torch.manual_seed(0)
    a, b = (torch.nn.functional.normalize(torch.randn(6, 8), dim=-1) for _ in range(2))
    scale = torch.tensor(10.0)
    keep = torch.tensor([True, False, True, True, False, True])
    assert torch.allclose(info_nce(a, b, scale, keep), info_nce(a[keep], b[keep], scale))
    assert torch.equal(info_nce(a, b, scale, torch.ones(6, dtype=torch.bool)), info_nce(a, b, scale))
    none = info_nce(a.requires_grad_(), b, scale, torch.zeros(6, dtype=torch.bool))
    none.backward()  # no row holds the pair: zero, and a graph (every rank must reach backward)
    assert float(none.detach()) == 0.0 and torch.equal(a.grad, torch.zeros_like(a))


def test_the_full_objective_masks_partial_rows_and_drops_hard_negatives_without_their_slot():
    torch.manual_seed(1)
    z = {k: torch.nn.functional.normalize(torch.randn(5, 8), dim=-1) for k in ("T", "V", "A", "TVA", "TVA_aug", "TVA_hard")}
    objective = Objective("full")
    everything = {m: torch.ones(5, dtype=torch.bool) for m in "TVA"}
    full, masked = objective(z, 0), objective(z, 0, everything)
    assert all(torch.allclose(full[k], masked[k]) for k in ("pairwise_loss", "distill_loss", "tuple_loss"))
    # rows 0-2 complete, row 3 without audio, row 4 without video
    present = {"T": torch.ones(5, dtype=torch.bool), "V": torch.tensor([1, 1, 1, 1, 0], dtype=torch.bool),
               "A": torch.tensor([1, 1, 1, 0, 1], dtype=torch.bool)}
    out = objective(z, 1, present)  # step 1 swaps the audio slot: row 2's hard negative takes row 3's, which it lacks
    assert all(torch.isfinite(v) for v in out.values())
    scale = objective.logit_scale()
    tv = info_nce(z["T"][:4], z["V"][:4], scale)
    ta = info_nce(z["T"][[0, 1, 2, 4]], z["A"][[0, 1, 2, 4]], scale)
    va = info_nce(z["V"][:3], z["A"][:3], scale)
    assert torch.allclose(out["pairwise_loss"], (tv + ta + va) / 3)
    teacher = z["TVA"][:3]
    assert torch.allclose(out["distill_loss"], sum(info_nce(z[m][:3], teacher, scale) for m in "TVA") / 3)
    anchor, pos, hard = z["TVA"][:3], z["TVA_aug"][:3], z["TVA_hard"][:3]
    logits = scale * torch.cat([anchor @ pos.T, (anchor * hard).sum(-1, keepdim=True)], dim=1)
    logits[2, -1] = -float("inf")  # row 2's hard negative is dropped
    assert torch.allclose(out["tuple_loss"], torch.nn.functional.cross_entropy(logits, torch.arange(3)))


def test_training_on_partial_items_runs_and_stays_finite(partial_data, tmp_path):
    from model.train import TrainConfig, train

    summary = train(TrainConfig(data=partial_data, out=tmp_path / "run", steps=4, batch_size=16, warmup_steps=1,
                                checkpoint_every=4, workers=1), progress=False)
    assert summary["steps"] == 4 and (tmp_path / "run" / "model").is_dir()
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(np.isfinite(row[k]) for row in log for k in ("pairwise_loss", "distill_loss", "tuple_loss"))


def test_the_index_embeds_an_item_only_from_what_it_has(partial_data, tiny_run, tmp_path):
    out = tmp_path / "g.safetensors"
    res = CliRunner().invoke(app, ["index", "build", "--model", str(tiny_run), "--data", str(partial_data), "--split",
                                   "test", "--view", "a", "--view", "av", "--view", "v", "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "entries embedded from part of their view" in res.output and "av 10" in res.output
    index = load_index(out)
    recs = read_split(partial_data, "test")
    ids = [r.id for r in recs]
    video_only = {ids[i] for i in (*VIDEO_ONLY, *SILENT_FILE)}
    audio_only = {ids[i] for i in AUDIO_ONLY}
    assert set(index.entries["a"].ids) == set(ids) - video_only  # never an audio embedding for a video-only clip
    assert set(index.entries["v"].ids) == set(ids) - audio_only
    av = index.entries["av"]
    assert av.ids == ids  # every item, in manifest order: the av entry of a partial one is what it holds
    marks = dict(zip(av.ids, av.modalities))
    assert {marks[i] for i in video_only} == {"v"} and {marks[i] for i in audio_only} == {"a"}
    assert {marks[i] for i in set(ids) - video_only - audio_only} == {"av"}
    by_id = lambda view: dict(zip(index.entries[view].ids, index.embeddings[view]))  # noqa: E731
    for i in video_only:  # the av entry of a video-only clip is its video embedding (batched differently: rounding)
        np.testing.assert_allclose(by_id("av")[i], by_id("v")[i], atol=1e-6)
    for i in audio_only:
        np.testing.assert_allclose(by_id("av")[i], by_id("a")[i], atol=1e-6)
    # and what the served encoder computes for the same input
    rec = recs[VIDEO_ONLY[0]]
    np.testing.assert_allclose(by_id("av")[rec.id], Embedder(tiny_run).embed([{"video": str(resolve_media(partial_data, rec.video))}])[0],
                               atol=1e-5)
    hits = index.search_hits(by_id("av")[rec.id][None], "av", 3)
    assert hits.ids[0, 0] == rec.id and hits.modalities[0, 0] == "v" and hits.start[0, 0] == 0 < hits.end[0, 0]
