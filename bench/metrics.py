"""Blockwise retrieval scoring vs the brute-force N x N reference: time and peak memory.

"peak MB" is the process's peak RSS (torch itself is ~400 MB of it); "scoring MB" is what the
scoring added on top of the embeddings.

    python bench/metrics.py [--sizes 3782 20000 100000] [--dim 128]

Each (method, N) runs in a fresh subprocess so its peak RSS is its own. Brute force is skipped
where its N x N score matrix alone would not fit in half of this machine's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402


def child(method: str, n: int, dim: int) -> None:
    import torch
    import torch.nn.functional as F

    from model.metrics import per_query, rank_counts, rank_counts_reference

    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    gal = F.normalize(q + 0.8 * torch.randn(n, dim, generator=g), dim=-1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    counts = rank_counts(q, gal) if method == "blockwise" else rank_counts_reference(q, gal)
    r1 = float(per_query(*counts)["R@1"].mean())
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "extra_mb": (peak - base) / 1024, "R@1": r1}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3782, 20_000, 100_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), args.dim)
    mem_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    rows = []
    for n in args.sizes:
        for method in ("blockwise", "brute force"):
            need = 4 * n * n * 2  # scores + the comparison masks
            if method == "brute force" and need > mem_bytes / 2:
                rows.append({"N": n, "method": method, "seconds": float("nan"), "peak MB": float("nan"), "scoring MB": float("nan"),
                             "R@1": float("nan"), "note": f"skipped: N x N needs ~{need / 2**30:.0f} GiB"})
                continue
            out = subprocess.run([sys.executable, __file__, "--dim", str(args.dim), "--child", method.split()[0], str(n)],
                                 check=True, capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            rows.append({"N": n, "method": method, "seconds": res["seconds"], "peak MB": res["peak_mb"],
                         "scoring MB": res["extra_mb"], "R@1": 100 * res["R@1"], "note": ""})
    report("metrics", f"Scoring one direction, dim {args.dim}", rows)


if __name__ == "__main__":
    main()
