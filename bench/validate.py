"""Validation throughput: triples/s for the probe and for the Great Expectations suite.

    python bench/validate.py [--data data] [--split S] [--workers N] [--limit N]

Runs the two stages of `omniretriever data validate` on the dataset at --data (the default dataset;
every split unless --split), timed apart: the probe (a process pool over the media files) and the
suite (21 expectations with result_format COMPLETE, plus the Data Docs build). The one-off import
of great_expectations is timed separately and kept out of the suite's figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from dataset.probe import probe_table, read_lines  # noqa: E402
from dataset.rules import Thresholds  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--split", default=None)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=None, help="validate only the first N records")
    args = ap.parse_args(argv)
    if not (args.data / "manifests").is_dir():
        sys.exit(f"{args.data} is not a dataset root: run `omniretriever data pull {args.data}` first")
    lines = read_lines(args.data, args.split)[: args.limit]
    thresholds = Thresholds()

    start = time.perf_counter()
    table = probe_table(args.data, lines, thresholds, workers=args.workers)
    probe_s = time.perf_counter() - start

    start = time.perf_counter()
    import great_expectations  # noqa: F401  (imported once per process; not part of the suite's figure)
    from dataset.expectations import run_suite
    import_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        start = time.perf_counter()
        outcome = run_suite(table, thresholds, Path(tmp) / "data_docs")
        suite_s = time.perf_counter() - start

    n = len(lines)
    rows = [
        {"stage": f"probe ({args.workers} processes)", "triples": n, "seconds": probe_s, "triples/s": n / probe_s},
        {"stage": f"suite ({outcome.expectations} expectations + Data Docs)", "triples": n, "seconds": suite_s,
         "triples/s": n / suite_s},
    ]
    report("validate", f"Validating {n} triples of {args.data} ({len(outcome.reasons)} rejected)", rows,
           {"gx_import_seconds": import_s, "rejected": len(outcome.reasons), "cpu_count": os.cpu_count()})


if __name__ == "__main__":
    main()
