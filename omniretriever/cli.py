"""The `omniretriever` console script, and the one place that assembles the program: which command groups
exist, which trackers `train` and `evaluate` report to, and how `index add` fetches a registered model.

model/ must not import mlflow, kserve or kfp, so its commands (`train`, `evaluate`, `ablation`) live in
model/cli.py, built here with registry/'s MLflow tracker and evaluation logger (the ones the pipeline's
train and evaluate steps use too); the data commands (`data ...`, `attributes`) live in dataset/cli.py,
and the groups that need those libraries beside the code they drive. Every group imports its heavy
libraries inside its commands, so `--help` is fast.
"""

from __future__ import annotations

import typer

from dataset import cli as dataset_cli
from model import cli as model_cli
from serving import cli as serving_cli
from registry import cli as registry_cli
from registry.evaluation_log import evaluation_logger
from registry.fetch import fetch_registered
from registry.tracking import train_tracker
from pipelines import cli as pipeline_cli


def build_app() -> typer.Typer:
    """The root command: model/'s commands (tracked in MLflow), then each layer's commands and groups."""
    root = typer.Typer(
        name="omniretriever",
        help=model_cli.HELP,
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )
    model_app = model_cli.build_app(train_trackers=[train_tracker], evaluation_loggers=[evaluation_logger])
    train, evaluate, ablation = model_app.registered_commands
    root.registered_commands.extend([train, evaluate, *dataset_cli.attributes_app.registered_commands, ablation])
    root.add_typer(dataset_cli.app, name="data")
    serving_cli.fetch_registered_model = lambda uri, into: fetch_registered(uri, into).model_dir
    root.registered_commands.extend(serving_cli.app.registered_commands)  # export, serve, query, manifest
    root.registered_groups.extend(serving_cli.app.registered_groups)  # index
    root.add_typer(registry_cli.app, name="registry")
    root.add_typer(pipeline_cli.app, name="pipeline")
    return root


app = build_app()


def main(argv: list[str] | None = None) -> None:
    """Entry point: `omniretriever ...` or main(["data", "summary", "data"])."""
    app(args=argv, prog_name="omniretriever")


if __name__ == "__main__":
    main()
