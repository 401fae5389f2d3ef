"""Helpers shared by the benchmarks: a rich table on the console and a JSON file beside it."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "machine": platform.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def report(name: str, title: str, rows: list[dict], extra: dict | None = None, out: Path | None = None) -> Path:
    """Print rows as a table and write {"machine", "rows", **extra} to bench/results/<name>.json."""
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col, justify="right" if isinstance(rows[0][col], (int, float)) else "left")
    for row in rows:
        table.add_row(*(f"{v:,.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}, indent=2) + "\n")
    Console().print(f"wrote {path}")
    return path
