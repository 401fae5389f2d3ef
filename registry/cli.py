"""`omniretriever registry ...`: register, promote (the gate), rollback, list, show. mlflow is imported
inside the commands, so `--help` stays fast. `list` and `show` name each version's backbone and the base
checkpoint it needs (a pretrained backbone's model never contains the base's weights).

Exit codes: 0 done; 1 the gate refused the challenger (`promote` only); 2 bad input (error: ... on stderr).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Optional

import typer

from model.cli_errors import exits_on, fail
from registry.registry import DEFAULT_FLOOR, DEFAULT_MAX_DROP, DEFAULT_MIN_GAIN, MODEL_NAME

app = typer.Typer(help="MLflow model registry: register evaluated runs, promote through the gate, roll back, list, show.",
                  no_args_is_help=True)

NameOption = Annotated[str, typer.Option("--name", help="Registered model name.")]
UriOption = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the embedded store in .mlflow/).")]


@contextmanager
def _notices() -> Iterator[None]:
    """Show the registry's warnings (an interrupted promotion completed, or read through) as `warning: ...`
    on stderr while a command runs."""
    import logging

    class Echo(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            typer.secho(f"warning: {record.getMessage()}", fg=typer.colors.YELLOW, err=True)

    logger, handler = logging.getLogger("registry"), Echo(logging.WARNING)  # registry.registry, registry.aliases
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _errors() -> tuple[type[Exception], ...]:
    """What a command reports as `error: ...` (exit 2): bad input, and a store that refuses a request."""
    from mlflow.exceptions import MlflowException

    from model.errors import OmniRetrieverError

    return (OmniRetrieverError, MlflowException)


@app.command("register")
def register_cmd(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of an evaluated training run, or its run directory.")],
    name: NameOption = MODEL_NAME,
    split: Annotated[str, typer.Option(help="Which evaluation of the run to register with.")] = "test",
    tracking_uri: UriOption = None,
) -> None:
    """Register a run's logged model as a new version with alias `challenger`, its metrics as tags."""
    from registry.registry import register

    with _notices(), exits_on(*_errors()):
        version = register(_run_id(run_id, tracking_uri), name, split=split, tracking_uri=tracking_uri)
    typer.echo(f"registered {version.name} version {version.version} (run {version.run_id}, AVG-all "
               f"{version.avg_all:.2f}) as {', '.join(version.aliases)}; next: `omniretriever registry promote`")


def _run_id(value: str, tracking_uri: str | None) -> str:
    """A run id as given, or the one recorded in a run directory (RUN/mlflow_run.json) for this store."""
    from pathlib import Path

    from registry.run_record import RUN_RECORD, read_record
    from registry.store import resolve_uri

    if not (Path(value) / RUN_RECORD).is_file():
        return value
    record, uri = read_record(Path(value)), resolve_uri(tracking_uri)
    if record is None or record["tracking_uri"] != uri:
        fail(f"{value} was not tracked in {uri} ({RUN_RECORD} names {record and record['tracking_uri']}); "
              "pass --tracking-uri or the run id")
    return record["run_id"]


@app.command("promote")
def promote_cmd(
    name: NameOption = MODEL_NAME,
    min_gain: Annotated[float, typer.Option(help="AVG-all R@1 points the challenger must gain over the champion.")] = DEFAULT_MIN_GAIN,
    max_drop: Annotated[float, typer.Option(help="R@1 points any one direction may lose.")] = DEFAULT_MAX_DROP,
    floor: Annotated[float, typer.Option(help="AVG-all a first champion must reach (no champion yet).")] = DEFAULT_FLOOR,
    allow_base_change: Annotated[bool, typer.Option("--allow-base-change", help="Promote a challenger whose backbone or base checkpoint differs from the champion's (serve its base first).")] = False,
    rule: Annotated[list[str], typer.Option("--rule", help="A benchmark direction the gate also judges (repeat): "
                                            "'clotho.t2a >= 15' or 'msrvtt.t2v drop <= 2'.")] = [],
    tracking_uri: UriOption = None,
) -> None:
    """The gate: promote the challenger to champion if it passes (exit 0), else say why and change nothing (exit 1)."""
    from registry.registry import promote

    with _notices(), exits_on(*_errors()):
        decision = promote(name, min_gain, max_drop, floor, tracking_uri=tracking_uri, allow_base_change=allow_base_change,
                           rules=list(rule))
    print_decision(decision)
    if not decision.promoted:
        raise typer.Exit(1)


@app.command("rollback")
def rollback_cmd(name: NameOption = MODEL_NAME, tracking_uri: UriOption = None) -> None:
    """Make the `previous` version champion again."""
    from registry.registry import rollback

    with _notices(), exits_on(*_errors()):
        version = rollback(name, tracking_uri=tracking_uri)
    typer.echo(f"rolled back: {name} version {version} is champion again")


@app.command("list")
def list_cmd(name: NameOption = MODEL_NAME, tracking_uri: UriOption = None) -> None:
    """Versions with their aliases, AVG-all and lineage."""
    from registry.registry import list_versions

    with _notices(), exits_on(*_errors()):
        versions = list_versions(name, tracking_uri=tracking_uri)
    print_versions(name, versions)


@app.command("show")
def show_cmd(
    version: Annotated[str, typer.Argument(help="A version number or an alias (champion, challenger, previous).")] = "champion",
    name: NameOption = MODEL_NAME,
    tracking_uri: UriOption = None,
) -> None:
    """One version: aliases, evaluation, lineage, and the backbone and base checkpoint it needs to load."""
    from registry.registry import show_version

    with _notices(), exits_on(*_errors()):
        found = show_version(name, version, tracking_uri=tracking_uri)
    print_version(found)


def print_versions(name: str, versions: list) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name}: {len(versions)} version(s)")
    for col in ("version", "aliases", "AVG-all", "AVG-single", "AVG-dual", "split/items", "backbone (base sha256)", "run",
                "data", "registered"):
        table.add_column(col, justify="right" if col.startswith(("version", "AVG")) else "left", no_wrap=True)
    for v in versions:
        table.add_row(v.version, ", ".join(v.aliases), _num(v.avg_all), _num(v.metrics.get("AVG-single")),
                      _num(v.metrics.get("AVG-dual")), f"{v.split}/{v.n_items}", _base_cell(v), v.run_id[:12],
                      v.tags.get("data_version", "")[:12], v.tags.get("registered_at", ""))
    Console(width=180).print(table)


def _base_cell(version) -> str:
    backbone, digest = version.base
    return (backbone or "-") + (f" ({digest[:8]})" if digest else "")


def print_version(v) -> None:
    """A version's fields, one a line; for a pretrained backbone, the base it needs and how to give another path."""
    from registry.logged_model import BACKBONE_TAG, BASE_TAGS

    lines = [("version", f"{v.name} {v.version}"), ("aliases", ", ".join(v.aliases) or "-"), ("model_uri", v.model_uri),
             ("run", v.run_id), ("AVG-all", _num(v.avg_all)), ("AVG-single", _num(v.metrics.get("AVG-single"))),
             ("AVG-dual", _num(v.metrics.get("AVG-dual"))), ("split/items", f"{v.split}/{v.n_items}"),
             (BACKBONE_TAG, v.tags.get(BACKBONE_TAG, "unrecorded"))]
    lines += [(tag, v.tags[tag]) for tag in BASE_TAGS if tag in v.tags]
    lines += [(tag, v.tags[tag]) for tag in ("data_version", "git_commit", "pipeline_run_id", "registered_at",
                                             "promoted_at", "previous_champion", "gate") if tag in v.tags]
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        typer.echo(f"{key:<{width}}  {value}")
    if v.base[1] is not None:
        typer.echo(f"\nloads over its base checkpoint (weights sha256 {v.base[1]}); where the base lies elsewhere: "
                   f"mlflow.pyfunc.load_model({v.uri!r}, model_config={{'base_checkpoint': DIR}}) "
                   "or $OMNIRETRIEVER_OMNI_CHECKPOINT=DIR")


def print_decision(decision) -> None:
    """The gate's comparison, metric by metric, then the verdict and its reasons."""
    from rich.console import Console
    from rich.table import Table

    before = f"v{decision.champion_before}" if decision.champion_before else "none"
    table = Table(title=f"gate: challenger v{decision.challenger} vs champion {before}")
    for col in ("metric", "challenger", "champion", "delta", "rule", "ok"):
        table.add_column(col, justify="left" if col in ("metric", "rule") else "right", no_wrap=True)
    for row in decision.rows:
        table.add_row(row.metric, _num(row.challenger), _num(row.champion), _num(row.delta, signed=True), row.rule,
                      "yes" if row.ok else "NO")
    console = Console(width=120)
    console.print(table)
    if decision.promoted:
        previous = f"; previous: v{decision.champion_before}" if decision.champion_before else ""
        console.print(f"promoted: v{decision.challenger} is champion{previous}")
        for note in decision.notes:
            console.print(f"  - allowed: {note}")
    else:
        console.print(f"refused: v{decision.challenger} stays challenger; champion unchanged ({before})")
        for reason in decision.reasons:
            console.print(f"  - {reason}")


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"
