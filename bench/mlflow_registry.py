"""What MLflow tracking and the registry cost: per training step, per logged model, per registry command.

    python bench/mlflow_registry.py [--steps 300] [--repeats 3]

Everything runs against a fresh embedded-style sqlite store in a temp directory, with a model trained
for 2 steps on a small generated dataset (the `tiny` config). Timed, each `--repeats` times (median):
the tracker's per-step work over a `--steps`-step run (buffered step metrics, flushed every 10 steps,
as in training), logging the pyfunc model at the end of training (with MLflow's input-example check),
logging an evaluation, `register` (download, load, embed and checksum the model), `promote` (the gate
and the alias moves, under the lock) and `list`. Store creation (schema migrations) is reported once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def prepare(root: Path) -> tuple[Path, Path, dict]:
    """A small dataset, a model trained for 2 steps on it, and its evaluation on the test split."""
    from model.evaluate import evaluate
    from dataset.config import SynthConfig
    from dataset.synth import synthesize
    from model.train import TrainConfig, train

    data = root / "data"
    synthesize(data, SynthConfig(train=16, val=2, test=16, seed=3), workers=1, progress=False)
    run = root / "run"
    train(TrainConfig(data=data, out=run, steps=2, batch_size=8, warmup_steps=1, workers=1), progress=False)
    results = evaluate(run, data, "test", run / "results.json", workers=1, progress=False, n_boot=50)
    return data, run, results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="training steps whose tracking is timed")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from model.train import TrainConfig
    from registry import evaluation_log, logged_model, registry, store, tracking

    root = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    data, run, results = prepare(root)
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    t0 = time.perf_counter()
    client = store.client(uri)
    experiment = store.ensure_experiment(client, "bench")
    store_s = time.perf_counter() - t0
    metrics = json.loads((run / "train_log.jsonl").read_text().splitlines()[-1])

    def track_steps():
        tracker = tracking.MlflowTracker(TrainConfig(data=data, out=root / "tracked"), uri, "bench")
        tracker.on_train_start({"objective": "full", "seed": 0})
        for step in range(1, args.steps + 1):
            tracker.on_step(step, {k: v for k, v in metrics.items() if k != "step"})
        tracker.flush()
        return tracker.run_id

    def new_run() -> str:
        return client.create_run(experiment).info.run_id

    step_s, _ = timed(track_steps, args.repeats)
    run_ids = [new_run() for _ in range(args.repeats)]
    log_model_s, _ = timed(lambda: logged_model.log_trained_model(run_ids.pop(), run / "model", ["a caption"], tracking_uri=uri),
                           args.repeats)
    evaluated = [evaluation_log.log_evaluation(results, run / "results.json", new_run(), tracking_uri=uri)]
    log_eval_s, _ = timed(lambda: evaluation_log.log_evaluation(results, run / "results.json", new_run(), tracking_uri=uri),
                          args.repeats)
    logged_model.log_trained_model(evaluated[0], run / "model", ["a caption"], tracking_uri=uri)
    register_s, _ = timed(lambda: registry.register(evaluated[0], "bench", tracking_uri=uri), args.repeats)
    promote_times = []
    for _ in range(args.repeats):  # each promotion needs a fresh challenger, registered outside the timer
        registry.register(evaluated[0], "bench", tracking_uri=uri)
        promote_times.append(timed(lambda: registry.promote("bench", tracking_uri=uri), 1)[0])
    promote_s = statistics.median(promote_times)
    list_s, listed = timed(lambda: registry.list_versions("bench", tracking_uri=uri), args.repeats)

    rows = [
        {"operation": "create the sqlite store (once)", "seconds": store_s, "per": "store"},
        {"operation": f"tracker: start + {args.steps} steps + flush", "seconds": step_s,
         "per": f"{1000 * step_s / args.steps:.2f} ms/step"},
        {"operation": "log the pyfunc model (end of training)", "seconds": log_model_s, "per": "run"},
        {"operation": "log an evaluation (metrics, json, png, table)", "seconds": log_eval_s, "per": "evaluation"},
        {"operation": "register (download, load, embed, checksum)", "seconds": register_s, "per": "version"},
        {"operation": "promote (lock, gate, alias moves)", "seconds": promote_s, "per": "promotion"},
        {"operation": f"list ({len(listed)} versions)", "seconds": list_s, "per": "call"},
    ]
    report("mlflow_registry", f"MLflow tracking and registry on a local sqlite store (median of {args.repeats})", rows,
           {"steps": args.steps, "repeats": args.repeats, "command": "python bench/mlflow_registry.py " + " ".join(argv or sys.argv[1:])})


if __name__ == "__main__":
    main()
