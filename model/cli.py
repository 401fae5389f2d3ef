"""The model's commands: `train`, `evaluate`, `ablation`.

Each command is a thin shell over a library function; heavy imports happen inside the command
so `omniretriever --help` stays fast and importing this module pulls in no kfp, mlflow or kserve.
`build_app` takes the trackers `train` and `evaluate` report to (model.hooks); the console script
(omniretriever/cli.py) hands it registry/'s MLflow ones, and `app`, built without any, tracks nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from model import defaults
from model.cli_errors import exits_on, fail
from model.train_config import TrainConfig

if TYPE_CHECKING:
    from model.hooks import EvaluationLogger, TrainTrackerFactory

HELP = "Train, evaluate, register and serve OmniRetriever, an any-to-any audio-video-text retriever."


def train_config_defaults() -> dict[str, Any]:
    """TrainConfig's field defaults (model/train_config.py imports no torch, so `--help` stays fast);
    fields built by a factory are left out. tests/test_cli.py checks every `train` option against them."""
    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


TRAIN_DEFAULTS = train_config_defaults()

# Tracking options shared by `train` and `evaluate`; the trackers themselves are build_app's arguments.
TrackingUriOption = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the embedded store in .mlflow/).")]
ExperimentOption = Annotated[Optional[str], typer.Option("--experiment", help="MLflow experiment name (default: omniretriever).")]
PipelineRunIdOption = Annotated[Optional[str], typer.Option("--pipeline-run-id", envvar="OMNIRETRIEVER_PIPELINE_RUN_ID", help="Lineage tag: the pipeline run that launched this.")]
NoTrackOption = Annotated[bool, typer.Option("--no-track", help="Log nothing to MLflow.")]
ModelDirOption = Annotated[Path, typer.Option(help="Run directory or model directory.")]
SplitOption = Annotated[str, typer.Option(help="Split to score; its items form the gallery.")]
WorkersOption = Annotated[Optional[int], typer.Option(help="Decoding processes (default: all cores).")]


def build_app(train_trackers: Sequence[TrainTrackerFactory] = (),
              evaluation_loggers: Sequence[EvaluationLogger] = ()) -> typer.Typer:
    """`train`, `evaluate` and `ablation`. Unless given --no-track, `train` calls every factory of
    `train_trackers` for the callbacks of its run and `evaluate` hands its results to every logger of
    `evaluation_loggers`; with none, nothing is tracked."""
    app = typer.Typer(name="omniretriever", help=HELP, no_args_is_help=True, pretty_exceptions_show_locals=False)
    app.command("train")(_train_command(tuple(train_trackers)))
    app.command("evaluate")(_evaluate_command(tuple(evaluation_loggers)))
    app.command("ablation")(ablation_cmd)
    return app


def _tracking_options(tracking_uri: str | None, experiment: str | None, run_id: str | None,
                      pipeline_run_id: str | None):
    from model.hooks import TrackingOptions

    return TrackingOptions(tracking_uri, experiment, run_id, pipeline_run_id)


def _train_command(trackers: tuple[TrainTrackerFactory, ...]) -> Callable[..., None]:
    """The `train` command, reporting to `trackers`."""

    def train_cmd(
        data: Annotated[Path, typer.Option(help="Dataset root (manifests/train.jsonl is used).")] = Path("data"),
        out: Annotated[Path, typer.Option(help="Run directory: model/, checkpoints/, train_log.jsonl.")] = Path("runs/latest"),
        config: Annotated[str, typer.Option(help="Architecture: a packaged name (tiny, base, qwen2_5_omni) or a JSON file.")] = TRAIN_DEFAULTS["config"],
        checkpoint: Annotated[Optional[Path], typer.Option(help="Base checkpoint directory of a pretrained backbone "
                                                                 "(--config qwen2_5_omni); never copied into the run.")] = TRAIN_DEFAULTS["checkpoint"],
        objective: Annotated[str, typer.Option(help="pairwise (L_A) | distill (L_A+L_D) | full (L_A+L_D+L_T).")] = TRAIN_DEFAULTS["objective"],
        steps: Annotated[int, typer.Option(help="Optimizer steps.")] = TRAIN_DEFAULTS["steps"],
        batch_size: Annotated[int, typer.Option(help="Clips per step (per process).")] = TRAIN_DEFAULTS["batch_size"],
        lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = TRAIN_DEFAULTS["lr"],
        warmup_steps: Annotated[int, typer.Option(help="Linear warmup steps before cosine decay.")] = TRAIN_DEFAULTS["warmup_steps"],
        seed: Annotated[int, typer.Option(help="Seed for initialisation, batches and augmentations.")] = TRAIN_DEFAULTS["seed"],
        temperature: Annotated[float, typer.Option(help="Initial softmax temperature (the value itself if --fixed-temperature).")] = TRAIN_DEFAULTS["temperature"],
        fixed_temperature: Annotated[bool, typer.Option("--fixed-temperature", help="Do not learn the temperature (reference code: 0.01).")] = TRAIN_DEFAULTS["fixed_temperature"],
        rotate_pairs: Annotated[bool, typer.Option("--rotate-pairs", help="Reference-code variant: one L_A pair per step.")] = TRAIN_DEFAULTS["rotate_pairs"],
        token_keep: Annotated[float, typer.Option(help="Fraction of video and audio tokens each training view keeps, drawn per clip "
                                                       "(1 = all; 0.5 halves the trunk's video+audio work).")] = TRAIN_DEFAULTS["token_keep"],
        unmasked_steps: Annotated[float, typer.Option(help="Fraction of the last steps that keep every token.")] = TRAIN_DEFAULTS["unmasked_steps"],
        alt_texts: Annotated[bool, typer.Option("--alt-texts/--no-alt-texts", help="Draw each step's caption from a clip's "
                                                "text and alt_texts, or use its text alone.")] = TRAIN_DEFAULTS["alt_texts"],
        checkpoint_every: Annotated[int, typer.Option(help="Write a resumable checkpoint every N steps.")] = TRAIN_DEFAULTS["checkpoint_every"],
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
        from model.train import train

        options = _tracking_options(tracking_uri, experiment, None, pipeline_run_id)
        try:
            cfg = TrainConfig(data=data, out=out, config=config, checkpoint=checkpoint, objective=objective, steps=steps, batch_size=batch_size,
                              lr=lr, warmup_steps=warmup_steps, seed=seed, temperature=temperature,
                              fixed_temperature=fixed_temperature, rotate_pairs=rotate_pairs,
                              checkpoint_every=checkpoint_every, workers=workers, token_keep=token_keep,
                              unmasked_steps=unmasked_steps, alt_texts=alt_texts)
            callbacks = [] if no_track else [factory(cfg, options) for factory in trackers]
            summary = train(cfg, resume=resume, callbacks=callbacks)  # trackers hear of a failure via on_train_abort
        except TrainingDiverged as exc:
            fail(str(exc), code=1)
        except (OmniRetrieverError, ValueError, FileExistsError, FileNotFoundError) as exc:
            fail(str(exc))
        if summary["resumed_from"] >= summary["steps"]:
            typer.echo(f"{out}: already trained for {summary['steps']} steps; nothing to do")
        else:
            terms = "  ".join(f"{k} {v:.4f}" for k, v in summary["final"].items() if k.endswith("loss"))
            typer.echo(f"trained steps {summary['resumed_from'] + 1}-{summary['steps']} in {summary['seconds']:.1f} s "
                       f"({summary['samples_per_s']:.1f} samples/s): {terms}")
        typer.echo(f"model: {summary['model']}")
        for tracker in callbacks:
            if hasattr(tracker, "describe"):
                typer.echo(tracker.describe())

    return train_cmd


def _evaluate_command(loggers: tuple[EvaluationLogger, ...]) -> Callable[..., None]:
    """The `evaluate` command, handing its results to `loggers`."""

    def evaluate_cmd(
        model: ModelDirOption = Path("runs/latest"),
        data: Annotated[Path, typer.Option(help="Dataset root.")] = Path("data"),
        split: Annotated[Optional[str], typer.Option(help="Split to score [default: test, or the benchmark's].")] = None,
        benchmark: Annotated[Optional[str], typer.Option(
            help="Score as this public benchmark (msrvtt, msvd, didemo, vatex, clotho, sounddescs, audiocaps, "
                 "omniretriever-bench): its split, and the paper's R@1 printed beside ours.")] = None,
        out: Annotated[Optional[Path], typer.Option(help="results.json path (a PNG is written beside it).")] = None,
        workers: WorkersOption = None,
        tracking_uri: TrackingUriOption = None,
        experiment: ExperimentOption = None,
        run_id: Annotated[Optional[str], typer.Option("--run-id", help="Log the results into this run (default: the run that trained --model, if tracked).")] = None,
        pipeline_run_id: PipelineRunIdOption = None,
        no_track: NoTrackOption = False,
    ) -> None:
        """Score the 12 OmniRetriever-Bench directions: R@1/5/10, MdR, MnR, MRR, NDCG@10, AVG-single/dual/all.

        Items with several captions are scored with every one (text queries each, media->text hits any);
        directions an item lacks a modality for leave it out, and directions no item holds are not scored."""
        from model.errors import OmniRetrieverError
        from model.evaluate import evaluate, print_results

        from model.benchmarks import benchmark as find_benchmark

        with exits_on(ValueError):
            bench = find_benchmark(benchmark) if benchmark is not None else None
        split = split or (bench.split if bench else "test")
        out = out or (model / (f"results-{bench.name}.json" if bench else "results.json"))
        with exits_on(OmniRetrieverError, ValueError, FileNotFoundError):
            results = evaluate(model, data, split, out, workers=workers, benchmark=benchmark)
        print_results(results, title=bench.name if bench else "OmniRetriever-Bench")
        typer.echo(f"results: {out}  plot: {results['plot']}")
        options = _tracking_options(tracking_uri, experiment, run_id, pipeline_run_id)
        for log_results in [] if no_track else loggers:
            try:
                typer.echo(log_results(results, out, options))
            except OmniRetrieverError as exc:
                fail(f"{exc} (the results are in {out})")

    return evaluate_cmd


def ablation_cmd(
    data: Annotated[Path, typer.Option(help="Dataset root.")] = Path("data"),
    seeds: Annotated[list[int], typer.Option("--seed", help="Seeds (repeat the option).")] = [0, 1, 2],
    steps: Annotated[int, typer.Option(help="Training steps per run.")] = defaults.TRAIN_STEPS,
    config: Annotated[str, typer.Option(help="Architecture name or JSON file.")] = TRAIN_DEFAULTS["config"],
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
    with exits_on(OmniRetrieverError, ValueError, FileExistsError, FileNotFoundError):
        summary = run_ablation(data, out_dir, report, list(seeds), steps, config, workers=workers, command=command)
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
        fail(f"{failures} of {sum(a['runs'] for a in summary.values())} runs failed: listed in {report}, "
              f"each with its reason in RUN/failed.json under {out_dir}", code=1)


app = build_app()  # no tracking; the console script builds its own with MLflow's trackers


if __name__ == "__main__":  # python -m model.cli: these commands alone, untracked
    app(prog_name="omniretriever")
