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
