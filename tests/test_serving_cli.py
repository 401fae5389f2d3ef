"""The serving commands exist, have help, and importing the CLI or model.export pulls in no server library."""

from dataclasses import asdict

import pytest
import typer
from typer.testing import CliRunner

from omniretriever.cli import app
from serving.cli import app as serving_app
from serving.limits import ServingLimits
from tests.conftest import loaded_by_import

COMMANDS = [["export"], ["serve"], ["query"], ["index"], ["index", "build"], ["index", "add"], ["index", "remove"],
            ["index", "stats"], ["index", "import"], ["index", "export"], ["manifest"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_serving_command_has_help(cmd):
    res = CliRunner().invoke(app, cmd + ["--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def test_imports_stay_light_and_model_stays_free_of_serving_libraries():
    assert loaded_by_import(("omniretriever.cli", "serving.cli", "model.export"),
                            ("kfp", "mlflow", "kserve", "tritonclient", "onnxruntime", "pymilvus")) == []
    # serving.cli reads `serve`'s defaults from serving.limits when it is imported: neither loads torch or PyAV
    assert loaded_by_import(("serving.cli", "serving.limits"), ("torch", "av", "numpy")) == []


def test_serve_limit_options_default_to_the_serving_limits():
    """`serve`'s limit options default to ServingLimits' values (what the transformer and LocalEndpoint default to)."""
    serve = typer.main.get_command(serving_app).commands["serve"]
    limits = asdict(ServingLimits())
    defaults = {p.name: p.default for p in serve.params if p.name in limits}
    assert sorted(defaults) == sorted(set(limits) - {"max_top_k"})  # every limit but top-k is a `serve` option
    assert defaults == {name: limits[name] for name in defaults}


def test_manifest_command_prints_yaml():
    res = CliRunner().invoke(app, ["manifest", "--storage-uri", "s3://m/repo/production", "--image",
                                   "example.com/omniretriever-transformer:0.1.0", "--canary-percent", "20"])
    assert res.exit_code == 0, res.output
    assert "kind: InferenceService" in res.output and "canaryTrafficPercent: 20" in res.output
    bad = CliRunner().invoke(app, ["manifest", "--storage-uri", "s3://m/r", "--image", "x:latest"])
    assert bad.exit_code == 2 and "pinned" in bad.output


def test_query_without_a_modality_is_refused():
    res = CliRunner().invoke(app, ["query", "--url", "http://127.0.0.1:9"])
    assert res.exit_code == 2 and "at least one of --text, --video, --audio" in res.output


def test_query_reports_an_unreachable_server():
    res = CliRunner().invoke(app, ["query", "--text", "a dog", "--url", "http://127.0.0.1:9"])
    assert res.exit_code == 2 and "127.0.0.1:9" in res.output
