"""Compile the pipeline (cluster flavour) to Kubeflow IR YAML: pipelines/compiled/omniretriever.yaml."""

from __future__ import annotations

from pathlib import Path

COMPILED = Path(__file__).resolve().parent / "compiled" / "omniretriever.yaml"


def compile_pipeline(out: str | Path = COMPILED) -> Path:
    """Write the IR YAML of the containerized pipeline to `out` (atomically) and return its path."""
    from kfp import compiler

    from pipelines.pipeline import build_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")  # kfp insists on a .yaml suffix
    compiler.Compiler().compile(build_pipeline(), str(tmp))
    tmp.replace(out)
    return out
