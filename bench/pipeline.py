"""Wall time of each pipeline step in a local run (kfp.local SubprocessRunner), the figure `make run` reports.

    python bench/pipeline.py [--data data] [--train-steps N] [--batch-size N] [--root runs/bench-pipeline]

Runs the whole local pipeline once, exactly as `omniretriever pipeline run` does (the working
directory's DVC project and MLflow store), and reports each step's wall time and its share of the
total. The first run on a machine includes decoding the clips into the feature cache (train and
evaluate); a second run reads the cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from model.defaults import BATCH_SIZE, TRAIN_STEPS  # noqa: E402
from pipelines.local import local_arguments, run_local  # noqa: E402
from pipelines.report import outcome  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--train-steps", type=int, default=TRAIN_STEPS)
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--root", type=Path, default=Path("runs/bench-pipeline"))
    args = ap.parse_args(argv)
    run = run_local(local_arguments(args.data, train_steps=args.train_steps, batch_size=args.batch_size), args.root)
    result = outcome(run)
    total = sum(s.seconds or 0.0 for s in run.steps)
    rows = [{"step": s.name, "status": s.status, "seconds": round(s.seconds or 0.0, 1),
             "share %": round(100 * (s.seconds or 0.0) / max(total, 1e-9), 1)} for s in run.steps]
    rows.append({"step": "total", "status": result.kind, "seconds": round(total, 1), "share %": 100.0})
    report("pipeline", f"local pipeline run on {args.data} ({args.train_steps} steps x {args.batch_size})", rows,
           {"outcome": result.message, "train_steps": args.train_steps, "batch_size": args.batch_size,
            "data": str(args.data), "run": str(run.root)})
    if result.code:
        raise SystemExit(result.code)


if __name__ == "__main__":
    main()
