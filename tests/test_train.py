"""Training and evaluation end to end on a small generated dataset, through the CLI."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from model.cli import app
from model.data import ClipBank
from model.text import TextTokenizer
from model.modalities import DIRECTION_NAMES, A, T, V
from model.train import TrainConfig, batch_indices, keep_indices, lr_at, train
from tests.conftest import Interrupted, StopAtFirstCheckpoint

runner = CliRunner()


def train_args(data: Path, out: Path, *extra: str, steps: int = 6) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--batch-size", "8", "--steps", str(steps),
            "--checkpoint-every", "2", "--warmup-steps", "2", "--workers", "1", *extra]


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    res = runner.invoke(app, train_args(tiny_data, out))
    assert res.exit_code == 0, res.output
    return out


def test_run_directory_layout(trained_run):
    assert sorted(p.name for p in (trained_run / "model").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert [p.name for p in sorted((trained_run / "checkpoints").iterdir())] == ["step-000004", "step-000006"]
    log = [json.loads(line) for line in (trained_run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert {"pairwise_loss", "distill_loss", "tuple_loss", "loss", "lr", "logit_scale"} <= set(log[0])
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)


@pytest.mark.parametrize("objective,terms", [("pairwise", {"pairwise_loss"}), ("distill", {"pairwise_loss", "distill_loss"})])
def test_ablation_objectives_train(tiny_data, tmp_path, objective, terms):
    summary = train(TrainConfig(data=tiny_data, out=tmp_path / objective, objective=objective, steps=2, batch_size=8,
                                warmup_steps=1, workers=1), progress=False)
    assert {k for k in summary["final"] if k.endswith("_loss")} == terms


def test_callbacks_see_every_step(tiny_data, tmp_path):
    seen = {"start": 0, "steps": [], "ckpt": [], "end": 0}

    class Recorder:
        def on_train_start(self, params):
            seen["start"] += 1
            assert params["objective"] == "full" and "encoder" in params

        def on_step(self, step, metrics):
            seen["steps"].append(step)

        def on_checkpoint(self, step, path):
            seen["ckpt"].append(step)

        def on_train_end(self, summary):
            seen["end"] += 1

    train(TrainConfig(data=tiny_data, out=tmp_path / "cb", steps=3, batch_size=8, checkpoint_every=2, workers=1),
          callbacks=[Recorder()], progress=False)
    assert seen == {"start": 1, "steps": [1, 2, 3], "ckpt": [2, 3], "end": 1}


def test_existing_run_needs_resume(trained_run, tiny_data):
    res = runner.invoke(app, train_args(tiny_data, trained_run))
    assert res.exit_code == 2 and "pass --resume" in res.output


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps=0 (must be >= 1)"),
    (["--objective", "triple"], "--objective='triple' (must be one of pairwise, distill, full)"),
    (["--temperature", "0"], "--temperature=0.0 (must be a finite number > 0)"),
    (["--lr", "nan"], "--lr=nan (must be a finite number > 0)"),
    (["--seed", "-1"], "--seed=-1 (must be >= 0)"),
    (["--workers", "0"], "--workers=0 (must be >= 1"),
    (["--token-keep", "0"], "--token-keep=0.0 (must be in (0, 1])"),
    (["--unmasked-steps", "1.5"], "--unmasked-steps=1.5"),
    (["--config", "huge"], "unknown config 'huge'"),
    (["--config", "{tmp}/broken.json"], "cannot read encoder config {tmp}/broken.json"),
    (["--data", "{tmp}/nowhere"], "{tmp}/nowhere: no such dataset directory"),
    (["--data", "{tmp}/test-only"], "{tmp}/test-only has no 'train' split: {tmp}/test-only/manifests/train.jsonl does not "
                                    "exist (its splits are test)"),
    (["--batch-size", "49"], "--batch-size=49 x 1 process(es) is larger than the training split (48 clips in "
                             "{data}/manifests/train.jsonl); the largest batch that fits is --batch-size=48"),
    (["--data", "{tmp}/one-clip"], "--batch-size=8 x 1 process(es) is larger than the training split (1 clips in "
                                   "{tmp}/one-clip/manifests/train.jsonl); the split is too small to train on: a step "
                                   "needs at least 2 clips per process"),
], ids=lambda v: " ".join(v).replace("{tmp}/", "") if isinstance(v, list) else "")
def test_bad_training_options(tiny_data, tmp_path, monkeypatch, args, message):
    """Every option is checked before anything is decoded: each of these fails at once, naming the option."""
    import model.train

    def no_decoding(*a, **kw):
        raise AssertionError("the training split was decoded before the options were checked")

    monkeypatch.setattr(model.train, "load_bank", no_decoding)
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "test-only" / "manifests").mkdir(parents=True)
    (tmp_path / "test-only" / "manifests" / "test.jsonl").write_text("")
    (tmp_path / "one-clip" / "manifests").mkdir(parents=True)
    first = (tiny_data / "manifests" / "train.jsonl").read_text().splitlines()[0]
    (tmp_path / "one-clip" / "manifests" / "train.jsonl").write_text(first + "\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    started = time.perf_counter()
    res = runner.invoke(app, train_args(tiny_data, tmp_path / "bad") + args)
    assert res.exit_code == 2, res.output
    message = message.replace("{tmp}", str(tmp_path)).replace("{data}", str(tiny_data))
    assert message in " ".join(res.output.split())  # rich may wrap long lines
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "bad").exists()  # nothing written either


@pytest.mark.parametrize("field,value,message", [
    ("weight_decay", -0.1, "--weight-decay=-0.1 (must be a finite number >= 0)"),
    ("grad_clip", float("inf"), "--grad-clip=inf (must be a finite number > 0)"),
    ("batch_size", 1, "--batch-size=1 (must be >= 2)"),
])
def test_bad_training_config_values(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(data=Path("."), out=Path("."), **{field: value})


def test_several_bad_options_are_named_together():
    with pytest.raises(ValueError, match=re.escape("--objective='x' (must be one of pairwise, distill, full); --seed=-3")):
        TrainConfig(data=Path("."), out=Path("."), objective="x", seed=-3)


def test_schedule_and_batches():
    cfg = TrainConfig(data=Path("."), out=Path("."), steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0) and lr_at(99, cfg) < 0.01
    epoch = torch.cat([batch_indices(10, 3, s, 0) for s in range(3)])
    assert len(set(epoch.tolist())) == 9  # one epoch: no row twice
    assert torch.equal(batch_indices(10, 3, 4, 0), batch_indices(10, 3, 4, 0))


def _bank(captions):
    n = len(captions or [("x",)] * 3)
    return ClipBank(ids=[f"c{i}" for i in range(n)], texts=[f"main {i}" for i in range(n)],
                    frames=torch.zeros(n, 1, 1, 1, 3, dtype=torch.uint8), mel=torch.zeros(n, 1, 1),
                    has_audio=torch.ones(n, dtype=torch.bool), captions=captions)


def test_a_step_draws_one_of_each_clips_captions():
    bank = _bank([("main 0", "alt 0a", "alt 0b"), ("main 1",), ("main 2", "alt 2a")])
    idx = torch.tensor([0, 1, 2, 0])
    seen = [bank.sample_texts(idx, torch.Generator().manual_seed(s)) for s in range(60)]
    for row, clip in enumerate(idx.tolist()):
        assert {draw[row] for draw in seen} == set(bank.captions[clip])  # every caption drawn, nothing else
    assert bank.sample_texts(idx, torch.Generator().manual_seed(3)) == seen[3]  # seeded: resumable
    assert bank.all_texts() == ["main 0", "alt 0a", "alt 0b", "main 1", "main 2", "alt 2a"]


def test_a_bank_without_further_captions_uses_the_main_one_and_no_randomness():
    bank = _bank(None)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert bank.sample_texts(torch.tensor([2, 0]), gen) == ["main 2", "main 0"]
    assert torch.equal(gen.get_state(), state)  # runs on single-caption data draw as they always did
    assert bank.all_texts() == bank.texts


def test_the_tokenizer_knows_the_words_of_every_caption(trained_run, tiny_data):
    from model.manifest import read_split

    alts = [alt for r in read_split(tiny_data, "train") for alt in r.alt_texts]
    assert alts  # the default dataset gives training clips several captions
    tok = TextTokenizer.load(trained_run / "model" / "tokenizer.json", 64)
    pieces = {t for alt in alts for t in tok.tokenizer.encode(alt).tokens}
    assert not [t for t in pieces if t.startswith("##") or t == "[UNK]"]  # whole words, none spelled out


def test_keep_indices_draw_a_sorted_per_row_subset_of_video_and_audio_only():
    B = 4
    lengths = {V: 8, A: 6}
    assert keep_indices(lengths, B, 1.0, torch.Generator().manual_seed(0)) == {}  # every token, nothing drawn
    kept = keep_indices({T: 5, **lengths}, B, 0.5, torch.Generator().manual_seed(0))
    assert set(kept) == {V, A}  # text keeps every token (and its padding mask)
    assert kept[V].shape == (B, 4) and kept[A].shape == (B, 3)
    for row in kept[V].tolist():  # each row keeps distinct tokens of its own, in their original order
        assert row == sorted(set(row)) and all(p in range(8) for p in row)
    assert len({tuple(r) for r in kept[V].tolist()}) > 1  # drawn per row, not once for the batch
    again = keep_indices(lengths, B, 0.5, torch.Generator().manual_seed(0))
    assert all(torch.equal(again[m], kept[m]) for m in (V, A))  # seeded: resumable


def test_a_run_that_decodes_equals_a_run_that_reads_the_feature_cache(tiny_data, tmp_path):
    """Bitwise: the first run decodes every clip (cold cache), the second reads them back; a decoded clip
    once came back in another memory layout than a cached one, and the weights drifted apart."""
    from model.config import load_config
    from model.data import load_bank

    cfg = load_config("tiny").decode
    cold = load_bank(tiny_data, "train", cfg, cache_dir=tmp_path / "cache", workers=1, progress=False)
    warm = load_bank(tiny_data, "train", cfg, cache_dir=tmp_path / "cache", workers=1, progress=False)
    for name in ("frames", "mel"):
        a, b = getattr(cold, name), getattr(warm, name)
        assert a.is_contiguous() and b.is_contiguous() and torch.equal(a, b), name
    runs = {}
    for label in ("cold", "warm"):  # the same fresh cache: the first run fills it, the second reads it
        out = tmp_path / label
        train(TrainConfig(data=tiny_data, out=out, steps=3, batch_size=8, warmup_steps=1, workers=1,
                          cache_dir=tmp_path / "cache2"), progress=False)
        runs[label] = load_file(out / "model" / "model.safetensors")
    assert all(torch.equal(runs["cold"][k], runs["warm"][k]) for k in runs["cold"])


def test_token_dropping_trains_and_resumes_exactly(tiny_data, tmp_path):
    """With --token-keep the subsets come from the step's generator: two runs, one resumed, agree."""
    def cfg(out: Path) -> TrainConfig:
        return TrainConfig(data=tiny_data, out=out, steps=4, batch_size=8, warmup_steps=1, workers=1,
                           checkpoint_every=2, token_keep=0.5, unmasked_steps=0.25)
    train(cfg(tmp_path / "a"), progress=False)
    with pytest.raises(Interrupted):
        train(cfg(tmp_path / "b"), callbacks=[StopAtFirstCheckpoint()], progress=False)
    train(cfg(tmp_path / "b"), resume=True, progress=False)
    a, b = load_file(tmp_path / "a" / "model" / "model.safetensors"), load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # about 10 s: two trainings, one killed with SIGKILL
def test_killed_run_resumes_to_identical_weights(tiny_data, tmp_path):
    """kill -9 mid-run, rerun with --resume: same final weights as an uninterrupted run."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    def args(out: Path) -> list[str]:
        return [sys.executable, "-m", "model.cli", *train_args(tiny_data, out, steps=10)]

    subprocess.run(args(straight), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(args(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step-000004" / "state.json").exists():
        assert time.time() < deadline and proc.poll() is None, "training ended before the first checkpoints"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model").exists()
    subprocess.run(args(killed) + ["--resume"], check=True, capture_output=True, timeout=300)
    a, b = load_file(straight / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(line)["step"] for line in (killed / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 11))


def test_evaluate_writes_twelve_directions_and_a_plot(trained_run, tiny_data):
    out = trained_run / "eval" / "results.json"
    res = runner.invoke(app, ["evaluate", "--model", str(trained_run), "--data", str(tiny_data), "--out", str(out),
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())
    assert list(results["directions"]) == list(DIRECTION_NAMES)
    for m in results["directions"].values():
        assert {"R@1", "R@5", "R@10", "MdR", "MnR", "MRR", "NDCG@10", "R@1_ci95"} <= set(m)
        assert 0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= 100
    assert {"AVG-single", "AVG-dual", "AVG-all"} <= set(results)
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "AVG-all" in res.output


def test_evaluate_a_missing_model(tiny_data, tmp_path):
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path), "--data", str(tiny_data)])
    assert res.exit_code == 2 and "is not a saved model" in res.output


def test_resuming_a_finished_run_changes_nothing(trained_run, tiny_data):
    before = (trained_run / "model" / "model.safetensors").read_bytes()
    summary = (trained_run / "train_summary.json").read_text()
    res = runner.invoke(app, train_args(tiny_data, trained_run, "--resume"))
    assert res.exit_code == 0 and "already trained for 6 steps" in res.output
    assert (trained_run / "model" / "model.safetensors").read_bytes() == before
    assert (trained_run / "train_summary.json").read_text() == summary


def test_a_corrupt_clip_stops_loading_with_an_error_naming_it(tiny_data, tmp_path):
    import shutil

    from model.data import load_bank
    from model.errors import MediaError
    from model.media import DecodeConfig

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = data / "videos" / "train-000003.mp4"
    victim.write_bytes(victim.read_bytes()[:500])
    with pytest.raises(MediaError, match="train-000003.mp4") as err:
        load_bank(data, "train", DecodeConfig(), workers=2, progress=False)
    assert "truncated" in err.value.reason or "cannot open" in err.value.reason


def test_evaluation_views_equal_separate_forwards(trained_run, tiny_data):
    from model.data import load_bank, make_batch
    from model.evaluate import embed_views
    from model.modalities import VIEWS
    from model.store import load_model

    model = load_model(trained_run)
    bank = load_bank(tiny_data, "test", model.config.decode, workers=1, progress=False)
    emb = embed_views(model, bank, batch_size=10)  # several batches, the last one partial
    batch = make_batch(bank, list(range(len(bank))), model.tokenizer)
    with torch.no_grad():
        for view, z in emb.items():
            assert torch.allclose(z, model.encoder(batch, VIEWS[view]), atol=1e-5), view


def test_ablation_reuses_a_run_only_when_its_recipe_matches(tiny_data, tmp_path, monkeypatch):
    from model import ablation

    monkeypatch.setattr(ablation, "TrainConfig", lambda **kw: TrainConfig(**kw, batch_size=8, warmup_steps=1))
    first = ablation.run_one(tiny_data, tmp_path, "pairwise", 0, 2, "tiny", 1)
    assert ablation.run_one(tiny_data, tmp_path, "pairwise", 0, 2, "tiny", 1) == first  # reused, not retrained
    with pytest.raises(FileExistsError, match="steps differ"):
        ablation.run_one(tiny_data, tmp_path, "pairwise", 0, 3, "tiny", 1)
    # the packaged architecture changed since the run was trained (same config name): refused, naming the fields
    run_config = tmp_path / "pairwise-seed0" / "model" / "config.json"
    saved = json.loads(run_config.read_text())
    run_config.write_text(json.dumps({**saved, "tubelet_frames": 2, "decode": {**saved["decode"], "num_frames": 8}}))
    with pytest.raises(FileExistsError, match=r"architecture decode, architecture tubelet_frames differ"):
        ablation.run_one(tiny_data, tmp_path, "pairwise", 0, 2, "tiny", 1)


# ---------------------------------------------------------------------------------------------------
# divergence: a non-finite loss or gradient stops training loudly


def test_a_diverging_run_stops_at_the_first_non_finite_loss(tiny_data, tmp_path):
    """lr 1e6 turns the weights to NaN within a couple of steps: exit 1 naming the step and the term,
    the checkpoints before it kept, no model and no summary."""
    out = tmp_path / "run"
    res = runner.invoke(app, train_args(tiny_data, out, "--lr", "1e6", "--checkpoint-every", "1", steps=6))
    assert res.exit_code == 1, res.output
    message = " ".join(res.output.split())
    found = re.search(r"error: training diverged at step (\d+): (\w+_loss) is (nan|inf) \(", message)
    assert found, message
    step = int(found.group(1))
    kept = [f"step-{s:06d}" for s in range(1, step)]
    assert kept, "diverged at the first step: nothing to check about the checkpoints"
    assert f"the last good checkpoint is {out / 'checkpoints' / kept[-1]}" in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == kept
    assert not (out / "model").exists() and not (out / "train_summary.json").exists()
    log = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, step))  # the diverged step is not logged as if it had trained


def test_the_reason_names_the_first_non_finite_term_or_the_gradient():
    from model.train import nonfinite_reason

    assert nonfinite_reason({"pairwise_loss": 2.0, "loss": 2.0, "grad_norm": 1.0}) is None
    assert nonfinite_reason({"pairwise_loss": 4.1, "tuple_loss": float("nan"), "loss": float("nan"), "grad_norm": 3.0}) == (
        "tuple_loss is nan (pairwise_loss 4.1, loss nan, grad_norm 3)")
    assert nonfinite_reason({"pairwise_loss": 4.1, "loss": 4.1, "grad_norm": float("inf")}) == (
        "the gradient norm is inf (pairwise_loss 4.1, loss 4.1)")


def test_divergence_before_any_checkpoint_says_so(tiny_data, tmp_path):
    from model.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="no checkpoint was written") as err:
        train(TrainConfig(data=tiny_data, out=tmp_path / "run", steps=4, batch_size=8, warmup_steps=1, lr=1e6,
                          checkpoint_every=4, workers=1), progress=False)
    assert err.value.checkpoint is None and err.value.step >= 2
    assert not (tmp_path / "run" / "checkpoints").exists()


class AbortRecorder:
    def __init__(self):
        self.seen: list[str] = []

    def on_train_start(self, params):
        self.seen.append("start")

    def on_train_abort(self, exc):
        self.seen.append(f"abort {type(exc).__name__}")


def test_an_error_in_setup_reaches_the_abort_hook(tmp_path):
    recorder = AbortRecorder()
    with pytest.raises(FileNotFoundError, match="no such dataset directory"):
        train(TrainConfig(data=tmp_path / "nowhere", out=tmp_path / "run", workers=1), callbacks=[recorder], progress=False)
    assert recorder.seen == ["abort FileNotFoundError"]  # once, without a start


def test_an_abort_hook_that_fails_does_not_hide_the_error(tiny_data, tmp_path):
    class Crash(Exception):
        pass

    class CrashOnStep:
        def on_step(self, step, metrics):
            raise Crash("the step callback crashed")

    class BrokenAbort:
        def on_train_abort(self, exc):
            raise OSError("store unreachable")

    recorder = AbortRecorder()
    with pytest.raises(Crash, match="the step callback crashed") as err:
        train(TrainConfig(data=tiny_data, out=tmp_path / "run", steps=2, batch_size=8, warmup_steps=1, workers=1),
              callbacks=[BrokenAbort(), CrashOnStep(), recorder], progress=False)
    assert recorder.seen == ["start", "abort Crash"]  # told once, although another hook failed first
    assert err.value.__notes__ == ["BrokenAbort.on_train_abort failed as well: OSError: store unreachable"]


def test_the_ablation_reports_diverged_runs_as_failed(tiny_data, tmp_path, monkeypatch):
    """Runs that diverge are listed with their reason, never scored; the means are over the runs that
    finished; the command exits 1 after writing the report."""
    from model import ablation

    def recipe(**kw):  # every run but pairwise seed 0 diverges
        lr = 2e-3 if (kw["objective"], kw["seed"]) == ("pairwise", 0) else 1e6
        return TrainConfig(**kw, batch_size=8, warmup_steps=1, lr=lr)

    monkeypatch.setattr(ablation, "TrainConfig", recipe)
    report, runs = tmp_path / "RESULTS.md", tmp_path / "runs"
    summary = ablation.run_ablation(tiny_data, runs, report, [0, 1], 3, objectives=("pairwise", "distill"), workers=1)
    assert (summary["pairwise"]["finished"], summary["pairwise"]["runs"]) == (1, 2)
    assert summary["distill"] == {"runs": 2, "finished": 0, "AVG-single": None, "AVG-dual": None, "AVG-all": None}
    failure = json.loads((runs / "distill-seed1" / "failed.json").read_text())
    assert failure["failed"].startswith("training diverged at step") and failure["seed"] == 1
    text = report.read_text()
    assert "| pairwise | 1 of 2 |" in text and "| distill | 0 of 2 | all 2 runs failed | – |" in text
    assert "Failed runs (not in the means above)" in text and "| distill | 1 | training diverged at step" in text
    assert len(json.loads((runs / "ablation.json").read_text())["failed"]) == 3

    def only_new_runs(cfg, **kw):  # finished and failed runs are reused; only full's two are new
        assert cfg.objective == "full", f"{cfg.out} was trained again"
        return train(cfg, **kw)

    monkeypatch.setattr(ablation, "train", only_new_runs)
    res = runner.invoke(app, ["ablation", "--data", str(tiny_data), "--seed", "0", "--seed", "1", "--steps", "3",
                              "--out-dir", str(runs), "--report", str(report), "--workers", "1"])
    assert res.exit_code == 1, res.output
    assert "distill   all 2 runs failed" in res.output and "(1 of 2 runs)" in res.output
    assert "5 of 6 runs failed" in " ".join(res.output.split())
    assert "| full | 0 of 2 | all 2 runs failed |" in report.read_text()


def test_evaluating_a_model_with_nan_weights_scores_zero_and_warns(trained_run, tiny_data, tmp_path):
    """A diverged model's NaN embeddings rank last: R@1 0 in every direction (not 100), with the
    non-finite rows counted in results.json and named on stderr."""
    import shutil

    from safetensors.torch import save_file

    model = tmp_path / "run" / "model"
    shutil.copytree(trained_run / "model", model)
    weights = load_file(model / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()},
              model / "model.safetensors")
    out = tmp_path / "results.json"
    res = runner.invoke(app, ["evaluate", "--model", str(model.parent), "--data", str(tiny_data), "--out", str(out),
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())
    assert results["nonfinite_rows"] == {"t": 24, "v": 24, "a": 24, "tv": 24, "av": 24, "at": 24}
    assert all(m["R@1"] == 0.0 for m in results["directions"].values()) and results["AVG-all"] == 0.0
    assert "warning: 24 of 24 rows of view 't' are not finite (NaN or inf): they rank last" in res.stderr
    assert res.stderr.count("warning:") == 6


def test_evaluating_a_missing_split_fails_before_decoding(trained_run, tiny_data, monkeypatch):
    import model.evaluate

    def no_decoding(*a, **kw):
        raise AssertionError("the split was decoded before its manifest was checked")

    monkeypatch.setattr(model.evaluate, "load_bank", no_decoding)
    res = runner.invoke(app, ["evaluate", "--model", str(trained_run), "--data", str(tiny_data), "--split", "dev"])
    assert res.exit_code == 2
    assert (f"{tiny_data} has no 'dev' split: {tiny_data / 'manifests' / 'dev.jsonl'} does not exist "
            "(its splits are test, train, val)") in " ".join(res.output.split())


def test_the_ablation_counts_non_finite_embeddings_as_a_failure():
    from model.ablation import _nonfinite_views

    assert _nonfinite_views({"nonfinite_rows": {"t": 0, "v": 0}, "n_items": 24}) is None
    assert _nonfinite_views({"nonfinite_rows": {"t": 3, "v": 0, "av": 24}, "n_items": 24}) == (
        "the trained model's test embeddings are not finite (view 't' 3 of 24 rows, view 'av' 24 of 24 rows)")
