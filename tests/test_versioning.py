"""Dataset versions with DVC (model/versioning.py), in throwaway git + DVC projects under tmp_path.

The repository's own .dvc/, data/ and .dvc-storage/ are only read (the committed configuration and
data.dvc), never written.
"""

from __future__ import annotations

import configparser
import hashlib
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from model import synth, versioning
from model.errors import VersioningError
from omniretriever.cli import app

REPO = Path(__file__).resolve().parent.parent
TINY = synth.SynthConfig(train=3, val=1, test=2, seed=4)
runner = CliRunner()


def tree_digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory) -> Path:
    """A tiny `data synth` dataset, generated once and copied into each project."""
    out = tmp_path_factory.mktemp("tiny-synth") / "data"
    synth.synthesize(out, TINY, workers=1, progress=False)
    return out


@pytest.fixture
def project(tmp_path, tiny_synth) -> Path:
    """A git repository that is a DVC project with a local remote, holding data/ (not yet versioned)."""
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("/data/\n/.dvc-storage/\n")
    versioning.init_project(root)
    shutil.copytree(tiny_synth, root / "data")
    return root


def wipe(root: Path, *, cache: bool = True, remote: bool = False) -> None:
    """Remove data/ and, optionally, the local cache and the remote: what a fresh clone lacks."""
    shutil.rmtree(root / "data", ignore_errors=True)
    if cache:
        shutil.rmtree(root / ".dvc" / "cache", ignore_errors=True)
    if remote:
        shutil.rmtree(root / ".dvc-storage", ignore_errors=True)


def test_init_project_writes_an_offline_config_with_a_local_default_remote(project):
    conf = configparser.ConfigParser()
    conf.read(project / ".dvc" / "config")
    assert conf["core"]["analytics"].lower() == "false" and conf["core"]["check_update"].lower() == "false"
    assert conf["core"]["remote"] == "local"
    assert (project / ".dvc" / conf['\'remote "local"\'']["url"]).resolve() == (project / ".dvc-storage").resolve()


def test_round_trip_add_push_remove_pull_is_identical(project):
    before = tree_digest(project / "data")
    version = versioning.version_data(project / "data")
    assert version.md5.endswith(".dir") and version.md5 == versioning.read_version(project / "data.dvc")
    assert version.md5 == versioning.dir_hash(project / "data")
    assert (version.nfiles, version.size) == (len(before), sum(p.stat().st_size for p in (project / "data").rglob("*")
                                                               if p.is_file()))
    assert version.pushed == len(before) + 1  # every file and the directory listing
    wipe(project)  # no data/, no cache: only the remote has it
    pulled = versioning.pull_data(project / "data")
    assert pulled.action == "pulled" and pulled.md5 == version.md5
    assert tree_digest(project / "data") == before


def test_pull_is_a_no_op_when_the_data_already_matches(project):
    versioning.version_data(project / "data")
    mtime = (project / "data" / "dataset.json").stat().st_mtime_ns
    assert versioning.pull_data(project / "data").action == "up to date"
    assert (project / "data" / "dataset.json").stat().st_mtime_ns == mtime


def test_the_recipe_of_a_generated_dataset_is_recorded(project):
    versioning.version_data(project / "data")
    recipe = versioning.read_recipe(project / "data.dvc")
    assert recipe == {"generator_version": synth.GENERATOR_VERSION, "config": asdict(TINY)}


def test_a_remote_without_the_data_regenerates_checks_and_pushes_it(project):
    version = versioning.version_data(project / "data")
    before = tree_digest(project / "data")
    wipe(project, remote=True)
    regenerated = versioning.pull_data(project / "data", workers=1)
    assert regenerated.action == "regenerated" and regenerated.pushed == len(before) + 1
    assert regenerated.notes and "regenerated data" in regenerated.notes[0]
    assert tree_digest(project / "data") == before
    assert versioning.read_version(project / "data.dvc") == version.md5
    wipe(project)  # the regenerated copy reached the remote
    assert versioning.pull_data(project / "data").action == "pulled"


def test_a_regeneration_that_does_not_match_writes_nothing(project):
    versioning.version_data(project / "data")
    dvc_file = project / "data.dvc"
    true_md5 = versioning.read_version(dvc_file)
    dvc_file.write_text(dvc_file.read_text().replace(true_md5, "0" * 32 + ".dir"))
    wipe(project, remote=True)
    with pytest.raises(VersioningError, match="nothing was written"):
        versioning.pull_data(project / "data", workers=1)
    assert sorted(p.name for p in project.iterdir() if not p.name.startswith(".")) == ["data.dvc"]
    assert not [p for p in project.iterdir() if p.name.startswith(".data")]  # no staging left


def test_data_without_a_recipe_is_not_regenerated_and_no_partial_data_is_left(project):
    shutil.rmtree(project / "data")
    (project / "data").mkdir()
    (project / "data" / "notes.txt").write_text("hand-made data\n")
    versioning.version_data(project / "data")
    assert versioning.read_recipe(project / "data.dvc") is None
    wipe(project, remote=True)
    with pytest.raises(VersioningError, match="dvc pull data.dvc failed"):
        versioning.pull_data(project / "data")
    assert not (project / "data").exists()


def test_pull_never_overwrites_different_data(project):
    versioning.version_data(project / "data")
    (project / "data" / "extra.txt").write_text("local change\n")
    with pytest.raises(VersioningError, match="not overwriting"):
        versioning.pull_data(project / "data")
    assert (project / "data" / "extra.txt").read_text() == "local change\n"


def test_a_remote_given_as_a_directory_is_used_for_that_call(project, tmp_path):
    store = tmp_path / "elsewhere"
    version = versioning.version_data(project / "data", remote=str(store))
    assert version.pushed and any(store.rglob("*.dir"))
    assert not (project / ".dvc-storage").exists()  # the default remote was not touched
    wipe(project)
    assert versioning.pull_data(project / "data", remote=str(store)).action == "pulled"


@pytest.mark.parametrize("call,message", [
    (lambda p: versioning.version_data(p / "data", remote="nope"), "no DVC remote named 'nope'"),
    (lambda p: versioning.version_data(p / "missing"), "not a directory"),
    (lambda p: versioning.pull_data(p / "data"), "data.dvc not found"),
])
def test_bad_requests_raise_versioning_errors(project, call, message):
    with pytest.raises(VersioningError, match=message):
        call(project)


def test_outside_a_dvc_project(tmp_path, tiny_synth):
    shutil.copytree(tiny_synth, tmp_path / "data")
    with pytest.raises(VersioningError, match="not inside a DVC project"):
        versioning.version_data(tmp_path / "data")


def test_read_version_of_a_missing_file_is_none(tmp_path):
    assert versioning.read_version(tmp_path / "data.dvc") is None


def test_cli_version_then_pull(project):
    res = runner.invoke(app, ["data", "version", str(project / "data")])
    assert res.exit_code == 0, res.output
    md5 = versioning.read_version(project / "data.dvc")
    assert f"version: {md5}" in res.output
    wipe(project)
    res = runner.invoke(app, ["data", "pull", str(project / "data")])
    assert res.exit_code == 0 and "pulled" in res.output and md5 in res.output, res.output
    res = runner.invoke(app, ["data", "pull", str(project / "data")])
    assert res.exit_code == 0 and "up to date" in res.output


def test_cli_errors_exit_2(project):
    res = runner.invoke(app, ["data", "pull", str(project / "data")])
    assert res.exit_code == 2 and "error:" in res.output and "data.dvc not found" in res.output


# ----------------------------------------------------------------------------------------------
# The repository's own DVC set-up (read only)
# ----------------------------------------------------------------------------------------------


def test_the_repository_is_an_offline_dvc_project_with_a_git_ignored_local_remote():
    conf = configparser.ConfigParser()
    conf.read(REPO / ".dvc" / "config")
    assert conf["core"]["analytics"].lower() == "false" and conf["core"]["check_update"].lower() == "false"
    assert conf["core"]["remote"] == "local"
    assert (REPO / ".dvc" / conf['\'remote "local"\'']["url"]).resolve() == (REPO / ".dvc-storage").resolve()
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "data", ".dvc-storage", ".dvc/cache", ".dvc/tmp"],
                             capture_output=True, text=True).stdout.split()
    assert ignored == ["data", ".dvc-storage", ".dvc/cache", ".dvc/tmp"]


def test_data_dvc_records_the_default_dataset_and_its_recipe():
    assert versioning.read_version(REPO / "data.dvc").endswith(".dir")
    assert versioning.read_recipe(REPO / "data.dvc") == {"generator_version": synth.GENERATOR_VERSION,
                                                         "config": asdict(synth.SynthConfig())}


@pytest.mark.slow
def test_data_dvc_matches_a_fresh_default_dataset(tmp_path):
    """The committed data.dvc is what `omniretriever data synth` with default arguments produces (about 2 min)."""
    out = tmp_path / "data"
    synth.synthesize(out, synth.SynthConfig(), progress=False)
    assert versioning.dir_hash(out) == versioning.read_version(REPO / "data.dvc")
