"""The `omniretriever` console script: the model's commands plus the command groups of the layers above it.

model/ must not import mlflow, kserve or kfp, so its commands (`train`, `evaluate`, `ablation`) live in
model/cli.py, the data commands (`data ...`, `attributes`) in dataset/cli.py, and the groups that need
those libraries beside the code they drive. This module only mounts them on one root; every group
imports its heavy libraries inside its commands, so `--help` is fast.
"""

from __future__ import annotations

import typer

from dataset import cli as dataset_cli
from model import cli as model_cli
from serving import cli as serving_cli
from registry import cli as registry_cli
from pipelines import cli as pipeline_cli


def build_app() -> typer.Typer:
    """The root command: model/'s commands and groups, then each layer's group."""
    root = typer.Typer(
        name="omniretriever",
        help=model_cli.app.info.help,
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )
    train, evaluate, ablation = model_cli.app.registered_commands
    root.registered_commands.extend([train, evaluate, *dataset_cli.attributes_app.registered_commands, ablation])
    root.add_typer(dataset_cli.app, name="data")
    root.registered_commands.extend(serving_cli.app.registered_commands)  # export, serve, query, manifest
    root.registered_groups.extend(serving_cli.app.registered_groups)  # index
    root.callback()(_install_trackers)
    root.add_typer(registry_cli.app, name="registry")
    root.add_typer(pipeline_cli.app, name="pipeline")
    return root


def _install_trackers(ctx: typer.Context) -> None:
    """`train` and `evaluate` log to MLflow (model/ only knows model.hooks; see registry/cli.py)."""
    ctx.obj = registry_cli.trackers()


app = build_app()


def main(argv: list[str] | None = None) -> None:
    """Entry point: `omniretriever ...` or main(["data", "summary", "data"])."""
    app(args=argv, prog_name="omniretriever")


if __name__ == "__main__":
    main()
