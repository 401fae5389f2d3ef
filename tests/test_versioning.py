"""Dataset versions with DVC (dataset/versioning.py), in throwaway git + DVC projects under tmp_path.

The repository's own .dvc/, data/ and .dvc-storage/ are only read (the committed configuration and
data.dvc), never written.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataset import config, synth, versioning
from model.errors import VersioningError
from omniretriever.cli import app

REPO = Path(__file__).resolve().parent.parent
TINY = config.SynthConfig(train=3, val=1, test=2, seed=4)
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


def record_other_bytes(project: Path, *names: str) -> str:
    """Make data.dvc and data.md5sums record a version whose `names` have other bytes (as if another
    machine had made it); returns that version."""
    listing_file = project / "data.md5sums"
    listing = versioning.read_listing(listing_file, versioning.read_version(project / "data.dvc"))
    for name in names:
        listing[name] = "0" * 32
    listing_file.write_text("".join(f"{md5}  {rel}\n" for rel, md5 in listing.items()))
    other = versioning.listing_version(listing)
    dvc_file = project / "data.dvc"
    dvc_file.write_text(dvc_file.read_text().replace(versioning.read_version(dvc_file), other))
    return other


def test_the_listing_beside_data_dvc_names_every_file_and_gives_its_version(project):
    version = versioning.version_data(project / "data")
    listing = versioning.read_listing(project / "data.md5sums", version.md5)
    assert listing == versioning.file_listing(project / "data") and len(listing) == version.nfiles
    assert versioning.listing_version(listing) == version.md5 == versioning.dir_hash(project / "data")
    check = subprocess.run(["md5sum", "--quiet", "-c", "../data.md5sums"], cwd=project / "data", capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert versioning.read_listing(project / "data.md5sums", "0" * 32 + ".dir") is None  # another version's listing


def test_a_regeneration_that_does_not_match_writes_nothing_when_strict(project):
    versioning.version_data(project / "data")
    record_other_bytes(project, "videos/test-000001.mp4")
    wipe(project, remote=True)
    with pytest.raises(VersioningError, match=r"nothing was written") as caught:
        versioning.pull_data(project / "data", workers=1, strict=True)
    assert "in 1 of 13 files (videos/test-000001.mp4)" in str(caught.value)
    assert sorted(p.name for p in project.iterdir() if not p.name.startswith(".")) == ["data.dvc", "data.md5sums"]
    assert not [p for p in project.iterdir() if p.name.startswith(".data")]  # no staging left


def test_a_regeneration_that_does_not_match_goes_on_under_its_own_version(project):
    true_version = versioning.version_data(project / "data").md5
    before = tree_digest(project / "data")
    recorded = record_other_bytes(project, "videos/test-000001.mp4", "manifests/train.jsonl")
    dvc_before = (project / "data.dvc").read_text()
    wipe(project, remote=True)
    version = versioning.pull_data(project / "data", workers=1)
    assert version.action == "regenerated, differs" and version.md5 == true_version and version.recorded == recorded
    assert "in 2 of 13 files (manifests/train.jsonl, videos/test-000001.mp4)" in version.warning
    assert true_version in version.warning and recorded in version.warning
    assert tree_digest(project / "data") == before and version.nfiles == len(before)
    assert (project / "data.dvc").read_text() == dvc_before  # the record is not rewritten
    assert version.pushed == 0 and not (project / ".dvc-storage").exists()  # nothing unchecked is published


def test_a_recipe_of_another_generator_version_is_regenerated_unless_strict(project):
    versioning.version_data(project / "data")
    dvc_file = project / "data.dvc"
    dvc_file.write_text(dvc_file.read_text().replace(f"generator_version: {synth.GENERATOR_VERSION}",
                                                     "generator_version: 0.9.0"))
    record_other_bytes(project, "videos/test-000000.mp4")
    wipe(project, remote=True)
    with pytest.raises(VersioningError, match="made by generator 0.9.0"):
        versioning.pull_data(project / "data", workers=1, strict=True)
    assert not (project / "data").exists()
    version = versioning.pull_data(project / "data", workers=1)
    assert version.action == "regenerated, differs" and (project / "data" / "dataset.json").is_file()
    assert f"(recorded by generator 0.9.0, this is {synth.GENERATOR_VERSION})" in version.warning


def test_data_changed_after_versioning_is_used_as_it_is_and_named(project):
    version = versioning.version_data(project / "data")
    manifest = project / "data" / "manifests" / "test.jsonl"
    manifest.write_text(manifest.read_text().replace("test-000001.mp4", "test-000000.mp4"))
    edited = tree_digest(project / "data")
    result = versioning.pull_data(project / "data")
    assert result.action == "differs" and result.recorded == version.md5 and result.md5 != version.md5
    assert result.md5 == versioning.dir_hash(project / "data")
    assert "in 1 of 13 files (manifests/test.jsonl)" in result.warning and "not overwritten" in result.warning
    assert tree_digest(project / "data") == edited
    with pytest.raises(VersioningError, match=r"not overwriting it") as caught:
        versioning.pull_data(project / "data", strict=True)
    assert "in 1 of 13 files (manifests/test.jsonl)" in str(caught.value)


def test_an_interrupted_regeneration_leaves_no_partial_data(project, monkeypatch):
    versioning.version_data(project / "data")
    wipe(project, remote=True)

    def interrupted(out, *args, **kwargs):
        (Path(out) / "videos").mkdir(parents=True)
        (Path(out) / "videos" / "half.mp4").write_bytes(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "synthesize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        versioning.pull_data(project / "data", workers=1)
    assert not (project / "data").exists()
    assert not [p for p in project.iterdir() if p.name.startswith(".data")]


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


@pytest.mark.parametrize("strict", [True, False])
def test_pull_never_overwrites_different_data(project, strict):
    versioning.version_data(project / "data")
    (project / "data" / "extra.txt").write_text("local change\n")
    if strict:
        with pytest.raises(VersioningError, match=r"in 1 of 13 files \(extra.txt\); not overwriting"):
            versioning.pull_data(project / "data", strict=True)
    else:
        assert "(extra.txt)" in versioning.pull_data(project / "data").warning
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


def test_cli_pull_warns_once_and_goes_on_unless_strict(project):
    true_version = versioning.version_data(project / "data").md5
    recorded = record_other_bytes(project, "videos/val-000000.mp4")
    wipe(project, remote=True)
    res = runner.invoke(app, ["data", "pull", str(project / "data"), "--workers", "1", "--strict"])
    assert res.exit_code == 2 and "in 1 of 13 files (videos/val-000000.mp4)" in res.output, res.output
    assert not (project / "data").exists()
    res = runner.invoke(app, ["data", "pull", str(project / "data"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert res.output.count("warning:") == 1 and "in 1 of 13 files (videos/val-000000.mp4)" in res.output
    assert f"version: {true_version} (data.dvc records {recorded})" in res.output


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
                                                         "config": asdict(config.SynthConfig())}
    listing = versioning.read_listing(REPO / "data.md5sums", versioning.read_version(REPO / "data.dvc"))
    assert listing is not None and len(listing) == 4307  # data.md5sums lists exactly data.dvc's version


@pytest.mark.slow
def test_data_dvc_matches_a_fresh_default_dataset_at_the_lowest_dispatch_level(tmp_path):
    """`omniretriever data pull --strict` with an empty remote regenerates the default dataset and checks it
    against the committed data.dvc, in a process whose numpy, C library and OpenBLAS are forced down to
    SSE2 (the lowest level of tests/test_synth_portable.py): bytes recorded on one CPU, checked at
    another level (about 2 minutes)."""
    from tests.test_synth_portable import LEVELS

    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    versioning.init_project(root)
    for name in ("data.dvc", "data.md5sums"):
        shutil.copy(REPO / name, root / name)
    env = {**os.environ, **{k: v for k, v in LEVELS["sse2"].items() if not k.startswith("PROBE_")}}
    exe = Path(sys.executable).parent / "omniretriever"
    res = subprocess.run([str(exe), "data", "pull", "data", "--strict"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "regenerated" in res.stdout and versioning.read_version(REPO / "data.dvc") in res.stdout
