import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omniretriever.cli import app
from tests.conftest import loaded_by_import

runner = CliRunner()
COMMANDS = [[], ["data"], ["data", "synth"], ["data", "summary"], ["train"], ["evaluate"], ["attributes"], ["ablation"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(cmd):
    res = runner.invoke(app, cmd + ["--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def test_console_script_is_installed():
    exe = subprocess.run([sys.executable, "-c", "import shutil, sys; print(shutil.which('omniretriever', path=sys.argv[1]))",
                          str(__import__("pathlib").Path(sys.executable).parent)], capture_output=True, text=True).stdout.strip()
    assert exe != "None"
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "data" in res.stdout and "train" in res.stdout


def test_model_package_pulls_in_no_orchestration_or_serving_library():
    assert loaded_by_import(("omniretriever.cli", "model.cli", "model.train", "model.evaluate"),
                            ("kfp", "mlflow", "kserve", "tritonclient")) == []


def test_data_synth_and_summary(tmp_path):
    out = tmp_path / "d"
    args = ["data", "synth", "--out", str(out), "--train", "3", "--val", "1", "--test", "2", "--seed", "5", "--workers", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "manifests" / "test.jsonl").exists()
    again = runner.invoke(app, args + ["--if-missing"])
    assert again.exit_code == 0 and "up to date" in again.output
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "overwrite" in refused.output
    summary = runner.invoke(app, ["data", "summary", str(out)])
    assert summary.exit_code == 0 and "test" in summary.output


@pytest.mark.parametrize("args,message", [(["data", "synth", "--train", "-1"], "train"),
                                          (["data", "summary", "/nonexistent"], "no manifests/ directory")])
def test_bad_arguments_exit_2_with_a_message(tmp_path, args, message):
    if args[1] == "synth":
        args = args + ["--out", str(tmp_path / "x")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and message in res.output


def test_train_options_default_to_train_config():
    """`train` reads its defaults from TrainConfig (model/cli.py parses them out of model/train.py, which it
    may not import for --help): every option that sets a TrainConfig field shows that field's default."""
    import dataclasses

    import typer.main

    from model.cli import app as model_app
    from model.train import TrainConfig

    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    for cli in (model_app, app):
        params = {p.name: p.default for p in typer.main.get_command(cli).commands["train"].params}
        shared = sorted(set(params) & set(fields))
        assert shared == sorted(["config", "checkpoint", "objective", "steps", "batch_size", "lr", "warmup_steps", "seed", "temperature",
                                 "fixed_temperature", "rotate_pairs", "checkpoint_every", "workers", "token_keep",
                                 "unmasked_steps", "alt_texts"])
        assert {k: params[k] for k in shared} == {k: fields[k] for k in shared}


def test_every_command_reports_a_failure_the_same_way(capsys):
    """model.cli_errors: `error: <message>` on stderr and the exit status; other errors pass through."""
    import typer

    from model.cli_errors import exits_on, fail

    with pytest.raises(typer.Exit) as caught:
        with exits_on(ValueError, FileNotFoundError):
            raise FileNotFoundError("data/manifests/train.jsonl does not exist")
    assert caught.value.exit_code == 2
    assert capsys.readouterr().err.strip() == "error: data/manifests/train.jsonl does not exist"
    with pytest.raises(typer.Exit) as caught:
        fail("3 of 9 runs failed", code=1)
    assert caught.value.exit_code == 1 and "error: 3 of 9 runs failed" in capsys.readouterr().err
    with pytest.raises(KeyError):
        with exits_on(ValueError):
            raise KeyError("not a user error")
    for path in ("model/cli.py", "dataset/cli.py", "registry/cli.py", "serving/cli.py", "pipelines/cli.py"):
        assert "def _fail" not in (Path(__file__).resolve().parent.parent / path).read_text(), path
