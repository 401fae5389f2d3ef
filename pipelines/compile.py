"""Compile the pipelines (cluster flavour) to Kubeflow IR YAML: pipelines/compiled/omniretriever.yaml (train)
and pipelines/compiled/omniretriever-index.yaml (index a library)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

COMPILED = Path(__file__).resolve().parent / "compiled" / "omniretriever.yaml"
COMPILED_INDEX = COMPILED.with_name("omniretriever-index.yaml")
PIPELINES = ("train", "index")
_DEFAULT_COMMENT = re.compile(r"^(#\s+\w+: \w+ \[Default: )(.*)(\])$")


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def stable_header(text: str) -> str:
    """kfp's header comment prints dict defaults in protobuf map order, which changes from process to
    process; print them with sorted keys so the same pipeline always compiles to the same bytes."""
    lines = []
    for line in text.splitlines(keepends=True):
        m = _DEFAULT_COMMENT.match(line.rstrip("\n"))
        if m and m.group(2)[:1] in "[{":
            line = f"{m.group(1)}{_sorted(ast.literal_eval(m.group(2)))!r}{m.group(3)}\n"
        lines.append(line)
    return "".join(lines)


def compile_pipeline(out: str | Path = COMPILED, pipeline: str = "train") -> Path:
    """Write the IR YAML of the containerized pipeline ("train" or "index") to `out` (atomically) and return
    its path."""
    from kfp import compiler

    from pipelines.index_pipeline import build_index_pipeline
    from pipelines.pipeline import build_pipeline

    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline {pipeline!r} is not one of {', '.join(PIPELINES)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")  # kfp insists on a .yaml suffix
    compiler.Compiler().compile(build_pipeline() if pipeline == "train" else build_index_pipeline(), str(tmp))
    tmp.write_text(stable_header(tmp.read_text()))
    tmp.replace(out)
    return out
