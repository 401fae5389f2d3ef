"""`omniretriever pipeline run|compile|schedule`: the Kubeflow pipeline from the command line.

Heavy imports (kfp, rich tables, the components) happen inside the commands, so mounting this group
keeps `omniretriever --help` fast.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from model.cli_errors import exits_on, fail
from model.defaults import BATCH_SIZE, TRAIN_STEPS

app = typer.Typer(help="Run the pipeline locally, compile it for Kubeflow, schedule retraining.",
                  no_args_is_help=True)


# the pipeline parameters `run` sets from options of its own, which --param must not set a second time
GALLERY_STORE = "gallery.db"  # the Milvus Lite store of a local run, under its pipeline root
RUN_OPTIONS = {"data": "--data", "train_steps": "--train-steps", "config": "--config", "batch_size": "--batch-size",
               "seed": "--seed", "mlflow_tracking_uri": "--tracking-uri", "dvc_remote": "--dvc-remote"}


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE is read as JSON when it parses (numbers, booleans, dicts), else a string."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@app.command("run")
def run_cmd(
    data: Annotated[Path, typer.Option(help="Dataset root (manifests/ and videos/).")] = Path("data"),
    train_steps: Annotated[int, typer.Option(help="Training steps.")] = TRAIN_STEPS,
    config: Annotated[str, typer.Option(help="Architecture: a packaged name (tiny, base) or a JSON file.")] = "tiny",
    batch_size: Annotated[int, typer.Option(help="Clips per training step.")] = BATCH_SIZE,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    root: Annotated[Path, typer.Option(help="Pipeline root: every run writes a directory here.")] = Path("runs/pipeline"),
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite ./mlflow.db).")] = None,
    dvc_remote: Annotated[str, typer.Option(help="DVC remote to push the data version to (default: the configured one).")] = "",
    param: Annotated[list[str], typer.Option("--param", help="Any other pipeline parameter, KEY=VALUE (repeatable).")] = [],
    verbose: Annotated[bool, typer.Option("--verbose", help="Stream every step's full output (always kept in pipeline.log).")] = False,
) -> None:
    """Run the whole pipeline here with kfp.local: version -> validate -> train -> evaluate -> register -> gate
    -> export + index the test split into the Milvus Lite store ROOT/gallery.db (--param gallery_store=...
    to change it, gallery_store= for none) + deploy (local endpoint, searching it). Exit 0 when it ran to an outcome (promoted, not promoted, or
    validation failed), 1 when a step failed."""
    from rich.console import Console

    from model.train_config import TrainConfig
    from pipelines.local import local_arguments, run_local
    from pipelines.pipeline import build_pipeline, local_steps
    from pipelines.report import print_report

    if not (data / "manifests").is_dir():
        fail(f"{data} has no manifests/ directory: not a dataset root (generate one with `omniretriever data synth`)")
    with exits_on(ValueError):  # the train step's own checks, before any step runs
        TrainConfig(data=data, out=root, config=config, steps=train_steps, batch_size=batch_size, seed=seed)
    pipeline = build_pipeline(local_steps(), cluster=False)
    overrides = _overrides(param, {k: v.type for k, v in pipeline.component_spec.inputs.items()})
    _check_checkpoint(config, overrides.get("checkpoint", ""))
    if int(overrides.get("train_nodes", 1)) != 1:
        fail("--param train_nodes: a local run trains in this process (kfp.local runs no Kubeflow Trainer TrainJob); "
             "train across nodes in a cluster (`pipeline compile`, then submit the pipeline)")
    console = Console(file=sys.stdout)
    overrides.setdefault("gallery_store", str((root / GALLERY_STORE).resolve()))
    arguments = local_arguments(data, train_steps=train_steps, config=config, batch_size=batch_size, seed=seed,
                                tracking_uri=tracking_uri, dvc_remote=dvc_remote, **overrides)

    def on_event(step) -> None:
        if step.status == "running":
            console.print(f"[bold]>[/] {step.name} ... [dim]{time.strftime('%H:%M:%S')}[/]", highlight=False)
        else:
            mark = "[green]done[/]" if step.status == "succeeded" else f"[red]FAILED[/]: {step.error}"
            console.print(f"  {step.name} {mark} in {step.seconds:.1f} s", highlight=False)

    run = run_local(arguments, root, pipeline=pipeline, verbose=verbose, echo=sys.stdout, on_event=on_event)
    result = print_report(run, console)
    if result.code:
        typer.secho(f"error: {result.message} (full log: {run.log})", fg=typer.colors.RED, err=True)
        raise typer.Exit(result.code)


def _check_checkpoint(config: str, checkpoint: str) -> None:
    """--param checkpoint=... fits the config (a pretrained backbone needs a base checkpoint, the tiny encoder
    takes none), and a local directory is a valid checkpoint: checked before any step runs."""
    from model.config import load_config
    from model.errors import CheckpointError
    from model.omni.checkpoint import find_checkpoint
    from model.omni.fetch import parse_source

    if "'" in checkpoint or "\\" in checkpoint:  # kfp.local evaluates its conditions as Python expressions
        fail(f"--param checkpoint={checkpoint}: a local run cannot pass quotes or backslashes in this parameter")
    with exits_on(ValueError):
        backbone = load_config(config).backbone
    if backbone == "tiny" and checkpoint:
        fail(f"--param checkpoint={checkpoint}: --config {config} is the tiny encoder, trained from scratch; a base "
             f"checkpoint is for a pretrained backbone (e.g. --config qwen2_5_omni)")
    if backbone != "tiny" and not checkpoint:
        fail(f"--config {config} is the {backbone} backbone: give its base checkpoint with --param checkpoint=DIR "
             f"(or an s3:// or hf:// URI)")
    with exits_on(CheckpointError):
        if checkpoint and not parse_source(checkpoint).remote:
            find_checkpoint(checkpoint)


def _overrides(pairs: list[str], parameters: dict[str, str]) -> dict[str, Any]:
    """`run`'s --param KEY=VALUE pairs, refusing a KEY that one of its options sets or that the pipeline lacks.
    `parameters` maps each pipeline parameter to its type: a String one takes VALUE as it is (a name made of
    digits stays a string), a Float one takes an integer too."""
    params = _parse_params(pairs)
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if key in RUN_OPTIONS:
            fail(f"--param {pair}: use {RUN_OPTIONS[key]}")
        if key not in parameters:
            fail(f"--param {pair}: the pipeline has no parameter {key!r}; --param sets any of "
                  f"{', '.join(p for p in parameters if p not in RUN_OPTIONS)}")
        if parameters[key] == "String":
            params[key] = raw
        elif parameters[key] == "Float" and isinstance(params[key], int) and not isinstance(params[key], bool):
            params[key] = float(params[key])
    return params


@app.command("compile")
def compile_cmd(
    out: Annotated[Optional[Path], typer.Option(
        help="IR YAML to write (default pipelines/compiled/omniretriever.yaml, or omniretriever-index.yaml).")] = None,
    pipeline: Annotated[str, typer.Option(
        help="train (the training pipeline) or index (omniretriever-index: embed a library with the champion).")] = "train",
) -> None:
    """Compile a cluster pipeline (containerized components, GPU pool, volume, secrets) to IR YAML."""
    from pipelines.compile import COMPILED, COMPILED_INDEX, compile_pipeline

    with exits_on(ValueError):
        path = compile_pipeline(out or (COMPILED_INDEX if pipeline == "index" else COMPILED), pipeline)
    typer.echo(f"compiled: {path}")


@app.command("schedule")
def schedule_cmd(
    host: Annotated[str, typer.Option(help="Kubeflow Pipelines API URL, e.g. http://ml-pipeline.kubeflow:8888.")],
    cron: Annotated[str, typer.Option(help="6-field cron, seconds first (e.g. '0 0 3 * * *': daily at 03:00).")] = "0 0 3 * * *",
    experiment: Annotated[str, typer.Option(help="Experiment name (created when missing).")] = "omniretriever",
    job_name: Annotated[str, typer.Option(help="Recurring run name: an existing one is replaced.")] = "omniretriever-retrain",
    package: Annotated[Optional[Path], typer.Option(help="Compiled pipeline (default pipelines/compiled/omniretriever.yaml).")] = None,
    param: Annotated[list[str], typer.Option("--param", help="Pipeline parameter KEY=VALUE (repeatable).")] = [],
    namespace: Annotated[Optional[str], typer.Option(help="Kubernetes namespace (multi-user deployments).")] = None,
    token: Annotated[Optional[str], typer.Option(help="Bearer token for the KFP API.", envvar="KFP_TOKEN")] = None,
) -> None:
    """Create or update the recurring run that retrains the model on a schedule."""
    from pipelines.schedule import schedule

    try:
        result = schedule(host, cron, package=package, experiment=experiment, job_name=job_name,
                          params=_parse_params(param), namespace=namespace, token=token)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    except Exception as exc:  # the KFP client's API and connection errors
        fail(f"{host}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", code=1)
    made = "created" if result.experiment_created else "found"
    typer.echo(f"experiment {experiment!r} {made} (id {result.experiment_id})")
    replaced = f", replacing {', '.join(result.replaced)}" if result.replaced else ""
    typer.echo(f"recurring run {job_name!r} {result.action}: id {result.recurring_run_id}, cron {result.cron!r}{replaced}")
