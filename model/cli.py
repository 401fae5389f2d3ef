"""The `omniretriever` command line.

Each command is a thin shell over a library function; heavy imports happen inside the command
so `omniretriever --help` stays fast and importing this module pulls in no kfp, mlflow or kserve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from model import defaults

app = typer.Typer(
    name="omniretriever",
    help="Train, evaluate, register and serve OmniRetriever, an any-to-any audio-video-text retriever.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Generate, summarise, version and validate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


# Tracking options shared by `train` and `evaluate`; the trackers themselves come from model.hooks.
TrackingUriOption = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the embedded store in .mlflow/).")]
ExperimentOption = Annotated[Optional[str], typer.Option("--experiment", help="MLflow experiment name (default: omniretriever).")]
PipelineRunIdOption = Annotated[Optional[str], typer.Option("--pipeline-run-id", envvar="OMNIRETRIEVER_PIPELINE_RUN_ID", help="Lineage tag: the pipeline run that launched this.")]
NoTrackOption = Annotated[bool, typer.Option("--no-track", help="Log nothing to MLflow.")]
ModelDirOption = Annotated[Path, typer.Option(help="Run directory or model directory.")]
SplitOption = Annotated[str, typer.Option(help="Split to score; its items form the gallery.")]
WorkersOption = Annotated[Optional[int], typer.Option(help="Decoding processes (default: all cores).")]


def _tracking_options(tracking_uri: str | None, experiment: str | None, run_id: str | None,
                      pipeline_run_id: str | None):
    from model.hooks import TrackingOptions

    return TrackingOptions(tracking_uri, experiment, run_id, pipeline_run_id)


def _trackers(ctx: typer.Context):
    """The trackers the console script installed (none when this app runs on its own)."""
    from model.hooks import current_trackers

    return current_trackers(ctx)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Dataset root to create (manifests/, videos/, scenes/).")] = Path("data"),
    train: Annotated[int, typer.Option(help="Number of training clips.")] = 3000,
    val: Annotated[int, typer.Option(help="Number of validation clips.")] = 300,
    test: Annotated[int, typer.Option(help="Number of test clips (the retrieval gallery).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives byte-identical files.")] = 0,
    train_captions: Annotated[int, typer.Option(
        help="Captions per training clip: the manifest's text plus alt_texts (val and test clips have one).")] = 6,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: all cores).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing dataset at --out.")] = False,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="Do nothing when --out already holds this exact dataset.")] = False,
) -> None:
    """Generate the synthetic audio-video-text benchmark in the OmniRetriever-Bench layout."""
    from model import synth

    try:
        config = synth.SynthConfig(train=train, val=val, test=test, seed=seed, train_captions=train_captions)
    except ValueError as exc:
        _fail(str(exc))
    if if_missing and synth.is_up_to_date(out, config):
        typer.echo(f"{out}: up to date (seed {seed}, {train}/{val}/{test} clips); not regenerated")
        synth.print_summary(synth.summarize(out))
        return
    try:
        summary = synth.synthesize(out, config, workers=workers, overwrite=overwrite)
    except (FileExistsError, ValueError) as exc:
        _fail(str(exc))
    synth.print_summary(summary)


@data_app.command("summary")
def data_summary(
    data: Annotated[Path, typer.Argument(help="Dataset root.")] = Path("data"),
) -> None:
    """Print split sizes, durations, attribute balance and near-duplicate statistics of a dataset."""
    from model import synth
    from model.errors import OmniRetrieverError

    if not (data / "manifests").is_dir():
        _fail(f"{data} has no manifests/ directory: not a dataset root (generate one with `omniretriever data synth`)")
    try:
        synth.print_summary(synth.summarize(data))
    except OmniRetrieverError as exc:
        _fail(str(exc))


@data_app.command("version")
def data_version(
    data: Annotated[Path, typer.Argument(help="Dataset directory inside the DVC project (DIR.dvc is written beside it).")] = Path("data"),
    remote: Annotated[Optional[str], typer.Option(help="DVC remote name, or a URL/directory for this call (default: the project's default remote).")] = None,
) -> None:
    """Record DIR's version with DVC (dvc add + push); prints the version, the md5 of DVC's listing."""
    from model.errors import OmniRetrieverError
    from model.versioning import version_data

    try:
        version = version_data(data, remote)
    except OmniRetrieverError as exc:
        _fail(str(exc))
    _echo_version(data, version)


@data_app.command("pull")
def data_pull(
    data: Annotated[Path, typer.Argument(help="Dataset directory tracked by DIR.dvc.")] = Path("data"),
    remote: Annotated[Optional[str], typer.Option(help="DVC remote name, or a URL/directory for this call (default: the project's default remote).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Generator processes if it must be regenerated (default: all cores).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse (exit 2) when DIR cannot be made to match DIR.dvc, "
                                         "instead of going on with the data under its own version.")] = False,
) -> None:
    """Make DIR match DIR.dvc: nothing if it does, else pull it, else regenerate it from its recipe, check and push.

    When DIR cannot match (a regeneration with other bytes, data changed after versioning), one warning
    names the files that differ and DIR is used under its own version; --strict refuses instead."""
    from model.errors import OmniRetrieverError
    from model.versioning import pull_data

    try:
        version = pull_data(data, remote, workers=workers, strict=strict)
    except OmniRetrieverError as exc:
        _fail(str(exc))
    for note in version.notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
    if version.warning:
        typer.secho(f"warning: {version.warning}", fg=typer.colors.YELLOW, err=True)
    _echo_version(data, version)


def _echo_version(data: Path, version) -> None:
    pushed = f"; pushed {version.pushed} files" if version.pushed else ""
    typer.echo(f"{data}: {version.action}, {version.nfiles} files, {version.size / 1e6:.1f} MB "
               f"({version.dvc_file.name}){pushed}")
    recorded = f" ({version.dvc_file.name} records {version.recorded})" if version.recorded else ""
    typer.echo(f"version: {version.md5}{recorded}")


@data_app.command("validate")
def data_validate(
    data: Annotated[Path, typer.Argument(help="Dataset root (manifests/<split>.jsonl, media under it).")] = Path("data"),
    split: Annotated[Optional[str], typer.Option(help="Split to validate (default: every manifests/*.jsonl).")] = None,
    report: Annotated[Path, typer.Option(help="Report directory: summary.json, validated.jsonl, rejected.jsonl, data_docs/.")] = Path("runs/validation"),
    max_rejected: Annotated[float, typer.Option(help="Exit 1 when more than this fraction of records is rejected.")] = 0.0,
    min_seconds: Annotated[Optional[float], typer.Option(help="Shortest clip accepted, seconds [default: 1].")] = None,
    max_seconds: Annotated[Optional[float], typer.Option(help="Longest clip accepted, seconds [default: 30].")] = None,
    min_audio_rms: Annotated[Optional[float], typer.Option(help="Audio RMS (full scale 1.0) below this is silence [default: 0.001].")] = None,
    max_caption_chars: Annotated[Optional[int], typer.Option(help="Longest caption accepted, characters [default: 500].")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Probe processes (default: all cores).")] = None,
) -> None:
    """Probe every triple and run the Great Expectations suite; exit 0 pass, 1 too many rejected, 2 unreadable."""
    from model.errors import OmniRetrieverError
    from model.validation import Thresholds, validate

    try:
        given = {"min_seconds": min_seconds, "max_seconds": max_seconds, "min_audio_rms": min_audio_rms,
                 "max_caption_chars": max_caption_chars}
        thresholds = Thresholds(**{k: v for k, v in given.items() if v is not None})
        result = validate(data, report, split, max_rejected, thresholds=thresholds, workers=workers)
    except (OmniRetrieverError, ValueError) as exc:
        _fail(str(exc))
    _print_validation(result, max_rejected)
    if not result.passed:
        raise typer.Exit(1)


def _print_validation(result, max_rejected: float) -> None:
    from rich.console import Console
    from rich.table import Table

    if result.failed_expectations:
        table = Table(title="Failed expectations")
        for col in ("check", "records", "first ids", "reason"):
            table.add_column(col, justify="right" if col == "records" else "left")
        for name, entry in result.failed_expectations.items():
            ids = ", ".join((entry["ids"] or entry["rows"])[:3]) + (" ..." if entry["count"] > 3 else "")
            table.add_row(name, str(entry["count"]), ids, entry.get("error") or entry["reason"])
        Console().print(table)
    typer.echo(f"{result.total} records: {result.validated} validated, {result.rejected} rejected "
               f"({result.rejected_fraction:.1%}; allowed {max_rejected:.1%})")
    for name, error in result.errors.items():
        typer.secho(f"expectation {name} errored: {error}", fg=typer.colors.RED, err=True)
    typer.echo(f"report: {result.summary.parent}  data docs: {result.data_docs}")
    if not result.passed:
        typer.secho("validation FAILED", fg=typer.colors.RED, err=True)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="Dataset root (manifests/train.jsonl is used).")] = Path("data"),
    out: Annotated[Path, typer.Option(help="Run directory: model/, checkpoints/, train_log.jsonl.")] = Path("runs/latest"),
    config: Annotated[str, typer.Option(help="Architecture: a packaged name (tiny, base) or a JSON file.")] = "tiny",
    objective: Annotated[str, typer.Option(help="pairwise (L_A) | distill (L_A+L_D) | full (L_A+L_D+L_T).")] = "full",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = defaults.TRAIN_STEPS,
    batch_size: Annotated[int, typer.Option(help="Clips per step (per process).")] = defaults.BATCH_SIZE,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 2e-3,
    warmup_steps: Annotated[int, typer.Option(help="Linear warmup steps before cosine decay.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed for initialisation, batches and augmentations.")] = 0,
    temperature: Annotated[float, typer.Option(help="Initial softmax temperature (the value itself if --fixed-temperature).")] = 0.07,
    fixed_temperature: Annotated[bool, typer.Option("--fixed-temperature", help="Do not learn the temperature (reference code: 0.01).")] = False,
    rotate_pairs: Annotated[bool, typer.Option("--rotate-pairs", help="Reference-code variant: one L_A pair per step.")] = False,
    token_keep: Annotated[float, typer.Option(help="Fraction of video and audio tokens each training view keeps, drawn per clip "
                                                   "(1 = all; 0.5 halves the trunk's video+audio work).")] = defaults.TOKEN_KEEP,
    unmasked_steps: Annotated[float, typer.Option(help="Fraction of the last steps that keep every token.")] = defaults.UNMASKED_STEPS,
    alt_texts: Annotated[bool, typer.Option("--alt-texts/--no-alt-texts", help="Draw each step's caption from a clip's "
                                            "text and alt_texts, or use its text alone.")] = True,
    checkpoint_every: Annotated[int, typer.Option(help="Write a resumable checkpoint every N steps.")] = 100,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")] = False,
    workers: WorkersOption = None,
    tracking_uri: TrackingUriOption = None,
    experiment: ExperimentOption = None,
    pipeline_run_id: PipelineRunIdOption = None,
    no_track: NoTrackOption = False,
) -> None:
    """Train the unified AVT encoder; Ctrl-C or a crash loses at most --checkpoint-every steps (use --resume).

    Exit 2 on a bad option or input (checked before decoding), 1 when training diverges (a non-finite
    loss or gradient norm: no model is written, the checkpoints before it stay)."""
    from model.errors import OmniRetrieverError, TrainingDiverged
    from model.train import TrainConfig, train

    options = _tracking_options(tracking_uri, experiment, None, pipeline_run_id)
    try:
        cfg = TrainConfig(data=data, out=out, config=config, objective=objective, steps=steps, batch_size=batch_size,
                          lr=lr, warmup_steps=warmup_steps, seed=seed, temperature=temperature,
                          fixed_temperature=fixed_temperature, rotate_pairs=rotate_pairs,
                          checkpoint_every=checkpoint_every, workers=workers, token_keep=token_keep,
                          unmasked_steps=unmasked_steps, alt_texts=alt_texts)
        trackers = [] if no_track else [factory(cfg, options) for factory in _trackers(ctx).train]
        summary = train(cfg, resume=resume, callbacks=trackers)  # trackers hear of a failure via on_train_abort
    except TrainingDiverged as exc:
        _fail(str(exc), code=1)
    except (OmniRetrieverError, ValueError, FileExistsError, FileNotFoundError) as exc:
        _fail(str(exc))
    if summary["resumed_from"] >= summary["steps"]:
        typer.echo(f"{out}: already trained for {summary['steps']} steps; nothing to do")
    else:
        terms = "  ".join(f"{k} {v:.4f}" for k, v in summary["final"].items() if k.endswith("loss"))
        typer.echo(f"trained steps {summary['resumed_from'] + 1}-{summary['steps']} in {summary['seconds']:.1f} s "
                   f"({summary['samples_per_s']:.1f} samples/s): {terms}")
    typer.echo(f"model: {summary['model']}")
    for tracker in trackers:
        if hasattr(tracker, "describe"):
            typer.echo(tracker.describe())


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    model: ModelDirOption = Path("runs/latest"),
    data: Annotated[Path, typer.Option(help="Dataset root.")] = Path("data"),
    split: SplitOption = "test",
    out: Annotated[Optional[Path], typer.Option(help="results.json path (a PNG is written beside it).")] = None,
    workers: WorkersOption = None,
    tracking_uri: TrackingUriOption = None,
    experiment: ExperimentOption = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Log the results into this run (default: the run that trained --model, if tracked).")] = None,
    pipeline_run_id: PipelineRunIdOption = None,
    no_track: NoTrackOption = False,
) -> None:
    """Score the 12 OmniRetriever-Bench directions: R@1/5/10, MdR, MnR, MRR, NDCG@10, AVG-single/dual/all."""
    from model.errors import OmniRetrieverError
    from model.evaluate import evaluate, print_results

    out = out or (model / "results.json")
    try:
        results = evaluate(model, data, split, out, workers=workers)
    except (OmniRetrieverError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    print_results(results)
    typer.echo(f"results: {out}  plot: {results['plot']}")
    options = _tracking_options(tracking_uri, experiment, run_id, pipeline_run_id)
    for log_results in [] if no_track else _trackers(ctx).evaluation:
        try:
            typer.echo(log_results(results, out, options))
        except OmniRetrieverError as exc:
            _fail(f"{exc} (the results are in {out})")


@app.command("attributes")
def attributes_cmd(
    model: ModelDirOption = Path("runs/latest"),
    data: Annotated[Path, typer.Option(help="A dataset written by `omniretriever data synth` (its scenes/ are read).")] = Path("data"),
    split: SplitOption = "test",
    out: Annotated[Optional[Path], typer.Option(help="JSON path (default: MODEL/attributes.json).")] = None,
    workers: WorkersOption = None,
) -> None:
    """Per direction, how often the top-1 result shares each latent scene attribute with its query, beside chance."""
    from model.attributes import agreement, print_agreement
    from model.errors import OmniRetrieverError

    out = out or (model / "attributes.json")
    try:
        result = agreement(model, data, split, out, workers=workers)
    except (OmniRetrieverError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    print_agreement(result)
    typer.echo(f"attributes: {out}")


@app.command("ablation")
def ablation_cmd(
    data: Annotated[Path, typer.Option(help="Dataset root.")] = Path("data"),
    seeds: Annotated[list[int], typer.Option("--seed", help="Seeds (repeat the option).")] = [0, 1, 2],
    steps: Annotated[int, typer.Option(help="Training steps per run.")] = defaults.TRAIN_STEPS,
    config: Annotated[str, typer.Option(help="Architecture name or JSON file.")] = "tiny",
    out_dir: Annotated[Path, typer.Option(help="Where the runs go (finished runs are reused).")] = Path("runs/ablation"),
    report: Annotated[Path, typer.Option(help="Markdown report to write.")] = Path("docs/RESULTS.md"),
    workers: WorkersOption = None,
) -> None:
    """Train and score pairwise, distill and full objectives over several seeds; write the table.

    A run that diverges is reported as failed (RUN/failed.json, listed in the report), the others go on;
    the exit status is then 1, after the report is written."""
    from model.ablation import run_ablation
    from model.errors import OmniRetrieverError

    command = f"omniretriever ablation --data {data} {' '.join(f'--seed {s}' for s in seeds)} --steps {steps} --config {config}"
    try:
        summary = run_ablation(data, out_dir, report, list(seeds), steps, config, workers=workers, command=command)
    except (OmniRetrieverError, ValueError, FileExistsError, FileNotFoundError) as exc:
        _fail(str(exc))
    for objective, avgs in summary.items():
        runs = f"{avgs['finished']} of {avgs['runs']} runs"
        if avgs["AVG-all"] is None:
            typer.echo(f"{objective:9s} all {avgs['runs']} runs failed")
        else:
            m, h = avgs["AVG-all"]
            typer.echo(f"{objective:9s} AVG-all {m:.2f} ± {h:.2f} ({runs})")
    typer.echo(f"report: {report}")
    failures = sum(avgs["runs"] - avgs["finished"] for avgs in summary.values())
    if failures:
        _fail(f"{failures} of {sum(a['runs'] for a in summary.values())} runs failed: listed in {report}, "
              f"each with its reason in RUN/failed.json under {out_dir}", code=1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: `omniretriever ...` or main(["data", "summary", "data"])."""
    app(args=argv, prog_name="omniretriever")


if __name__ == "__main__":
    main()
