"""What `omniretriever pipeline run` prints after a local run: the steps with their wall times, the
12-direction table, the validation and gate outcomes, and where everything is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipelines.local import LocalRun

STEPS = ("pull-data", "validate-data", "version-data", "fetch-checkpoint", "train-model", "evaluate-model",
         "register-model", "gate-model", "export-model", "plan-index", "index-shard", "publish-index",
         "deploy-model")  # no-checkpoint, a stand-in, is not shown


@dataclass(frozen=True)
class Outcome:
    """How a run ended: `code` is the exit status (0 for a completed run, validation failures and
    unpromoted models included; 1 for a failed step) and `message` says what happened."""

    kind: str  # failed | validation-failed | not-promoted | promoted
    code: int
    message: str


def _meta(run: LocalRun, step: str, artifact: str) -> dict:
    art = run.artifact(step, artifact)
    return art["metadata"] if art else {}


def validation(run: LocalRun) -> dict:
    """The validation step's verdict and counts (its report's metadata)."""
    return _meta(run, "validate-data", "report")


def gate(run: LocalRun) -> dict:
    """The gate's decision: promoted, challenger, champion_before, reasons (its note's metadata)."""
    return _meta(run, "gate-model", "decision")


def outcome(run: LocalRun) -> Outcome:
    failed = run.failed_step
    if failed is not None or run.error:
        name = failed.name if failed else "unknown step"
        reason = failed.error if failed else run.error
        return Outcome("failed", 1, f"step {name!r} failed: {reason}")
    checked, decided = validation(run), gate(run)
    if checked.get("passed") is False:
        return Outcome("validation-failed", 0, f"validation failed: {checked.get('rejected')} of {checked.get('total')} "
                       f"rows rejected ({checked.get('failures')}); training skipped")
    version = run.parameter("register-model", "version")
    if decided.get("promoted") is False:
        return Outcome("not-promoted", 0, f"challenger version {version} not promoted: {decided.get('reasons')}")
    if decided.get("promoted") is True and run.parameter("deploy-model", "detail"):
        return Outcome("promoted", 0, f"version {version} promoted to champion and deployed "
                       f"({run.parameter('deploy-model', 'detail')})")
    return Outcome("incomplete", 1, "the run stopped before reaching an outcome although no step failed "
                   f"(steps run: {', '.join(s.name for s in run.steps) or 'none'}); see the pipeline log")


def steps_table(run: LocalRun) -> Table:
    table = Table(title="pipeline steps")
    for col in ("step", "status", "wall time"):
        table.add_column(col, justify="right" if col == "wall time" else "left")
    for name in STEPS:
        runs = [s for s in run.steps if s.task == name]  # a ParallelFor's iterations: one row each
        if not runs:
            table.add_row(name, "skipped", "-")
        for step in runs:
            table.add_row(step.name, step.status, "-" if step.seconds is None else f"{step.seconds:.1f} s")
    total = sum(s.seconds or 0.0 for s in run.steps)
    table.caption = f"total {total:.1f} s"
    return table


def locations(run: LocalRun) -> list[tuple[str, str]]:
    """(what, where) for everything the run produced."""
    rows = [("pipeline root", str(run.root)), ("pipeline log", str(run.log))]
    tracking = run.arguments.get("mlflow_tracking_uri", "")
    if tracking:
        rows.append(("MLflow UI", f"mlflow ui --backend-store-uri {tracking}"))
    if run.parameter("version-data", "md5"):
        rows.append(("data version (DVC)", f"{run.parameter('version-data', 'md5')} "
                                           f"({run.parameter('version-data', 'dvc_file')})"))
    if run.parameter("fetch-checkpoint", "path"):
        rows.append(("base checkpoint", f"{run.parameter('fetch-checkpoint', 'path')} "
                                        f"(sha256 {run.parameter('fetch-checkpoint', 'sha256')})"))
    if run.parameter("publish-index", "Output"):
        rows.append(("gallery (Milvus)", run.parameter("publish-index", "Output")))
    if validation(run).get("details"):
        rows.append(("validation details", validation(run)["details"]))
    artifact_rows = [("validation report", "validate-data", "report", ""),
                     ("trained model (run dir)", "train-model", "model", ""),
                     ("results", "evaluate-model", "results", "results.json"),
                     ("results plot", "evaluate-model", "results", "results.png"),
                     ("gate decision", "gate-model", "decision", ""),
                     ("Triton model repository", "export-model", "repository", "")]
    for what, step, name, leaf in artifact_rows:
        art = run.artifact(step, name)
        if art is not None:
            rows.append((what, str(Path(art["uri"]) / leaf) if leaf else art["uri"]))
    if run.parameter("train-model", "run_id"):
        rows.append(("MLflow run", run.parameter("train-model", "run_id")))
    if run.parameter("register-model", "version"):
        rows.append(("model version", f"{run.arguments.get('model_name', 'omniretriever')} "
                                      f"v{run.parameter('register-model', 'version')}"))
    return rows


def print_report(run: LocalRun, console: Console | None = None) -> Outcome:
    """Print everything about a finished run; returns its outcome."""
    from model.evaluate import print_results

    console = console or Console()
    console.print(steps_table(run))
    if run.parameter("pull-data", "warning"):
        console.print(f"[yellow]data: {run.parameter('pull-data', 'warning')}[/]", highlight=False)
    results = run.artifact("evaluate-model", "results")
    if results is not None and (Path(results["uri"]) / "results.json").is_file():
        print_results(json.loads((Path(results["uri"]) / "results.json").read_text()), console)
    decided = gate(run)
    if decided.get("promoted") is not None:
        verdict = "promoted" if decided["promoted"] else "not promoted"
        console.print(f"gate: {verdict} (challenger {decided.get('challenger')}, champion before: "
                      f"{decided.get('champion_before') or 'none'}): {decided.get('reasons') or 'every rule passed'}",
                      highlight=False)
    where = Table(title="where everything is", show_header=False)
    where.add_column("what")
    where.add_column("where", overflow="fold")
    for what, path in locations(run):
        where.add_row(what, path)
    console.print(where)
    result = outcome(run)
    if result.code == 0:  # an error is the caller's to report (on stderr, with the exit status)
        style = {"validation-failed": "yellow", "not-promoted": "yellow"}.get(result.kind, "green")
        console.print(f"[{style}]{result.message}[/]", highlight=False)
    return result
