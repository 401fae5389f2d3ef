"""Dataset versions with DVC: `dvc add` + push, and pull (or regenerate) a recorded version.

A dataset directory DIR inside a DVC project is tracked by the pointer file DIR.dvc beside it;
its version is the md5 of DVC's directory listing ("<hash>.dir"), so two directories with the same
files (names and bytes) have the same version wherever they were made.

    version_data(DIR)  dvc add DIR, record how to regenerate it and every file's md5, push it;
                       returns the DataVersion
    pull_data(DIR)     make DIR match DIR.dvc: nothing to do if it already does, else pull it from
                       the remote, else (remote without it) regenerate it from the recipe recorded
                       in DIR.dvc, check the result against the recorded hash and push it
    read_version(F)    the md5 a .dvc file records, None if there is no such file

When the data cannot be made to match (a regeneration whose bytes differ, data already in place that
was changed after versioning), `pull_data` by default goes on with the data as it is, under its real
version, and says in one warning how many files differ and which (it knows them from DIR.md5sums,
the per-file listing `version_data` writes beside DIR.dvc, in `md5sum` format). It never overwrites
data, never publishes data it could not check, and leaves DIR.dvc as it is: the pipeline versions the
data after validation. With strict=True it refuses instead (VersioningError), as the tests of the
recorded default dataset do.

The recipe: when DIR is a dataset made by `omniretriever data synth` (its dataset.json says so),
version_data writes the generator version and SynthConfig under `meta: synth:` in DIR.dvc (DVC keeps
`meta` and never reads it). The generator is deterministic, so the recipe plus the hash are enough
to rebuild the exact bytes on a machine whose remote is empty.

`remote` is the name of a remote in the project's DVC config (None: its default remote), or a URL
or directory used for this call only (s3://bucket/path with the s3 extra installed, /mnt/store, ...).
DVC is imported inside the functions: it is slow to import.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.errors import VersioningError

if TYPE_CHECKING:
    from dvc.repo import Repo

DEFAULT_REMOTE = "local"  # name of the default remote that init_project configures
DEFAULT_REMOTE_DIR = ".dvc-storage"  # its directory, relative to the project root (git-ignored)
ADHOC_REMOTE = "cli"  # name given to a remote passed as a URL or directory for one call
LISTING_SUFFIX = ".md5sums"  # DIR.md5sums: "<md5>  <relative path>" per file, what DIR.dvc's version lists
NAMED_DIFFERENCES = 10  # how many differing files a warning names


@dataclass(frozen=True)
class DataVersion:
    """One recorded version of a dataset directory."""

    md5: str  # "<hash>.dir": md5 of DVC's listing of every file's relative path and md5
    nfiles: int
    size: int  # bytes, all files
    dvc_file: Path  # the pointer file, DIR.dvc
    action: str = "versioned"  # versioned | up to date | pulled | regenerated | differs | regenerated, differs
    pushed: int = 0  # files uploaded to the remote by this call
    notes: tuple[str, ...] = ()  # things the caller should show the user (a push that failed, ...)
    warning: str | None = None  # the data is not the version DIR.dvc records: which files differ, what happens
    recorded: str | None = None  # the version DIR.dvc records, when it is not `md5`


def dvc_file_for(data: str | Path) -> Path:
    """The pointer file DVC writes for a tracked directory: DIR.dvc, beside DIR."""
    data = Path(data).absolute()
    return data.parent / f"{data.name}.dvc"


def listing_file_for(data: str | Path) -> Path:
    """The per-file listing beside a tracked directory: DIR.md5sums."""
    data = Path(data).absolute()
    return data.parent / f"{data.name}{LISTING_SUFFIX}"


def read_version(dvc_file: str | Path) -> str | None:
    """The md5 ("<hash>.dir") recorded in a .dvc file; None when the file does not exist."""
    out = _read_out(Path(dvc_file))
    return None if out is None else out["md5"]


def version_data(data: str | Path, remote: str | None = None) -> DataVersion:
    """`dvc add DIR` (DIR.dvc written beside it, DIR git-ignored), record its recipe, push it to the remote."""
    data = Path(data).absolute()
    if not data.is_dir():
        raise VersioningError(f"{data}: not a directory; nothing to version")
    if not any(data.iterdir()):
        raise VersioningError(f"{data}: empty directory; nothing to version")
    root = project_root(data)
    with _repo(root, remote) as (repo, remote_name):
        _dvc(f"dvc add {data}", repo.add, [str(data)])
        dvc_file = dvc_file_for(data)
        _write_recipe(dvc_file, synth_recipe(data))
        _write_listing(listing_file_for(data), file_listing(data))
        pushed = _dvc(f"dvc push {dvc_file.name}", repo.push, targets=[str(dvc_file)], remote=remote_name)
    return _version(dvc_file, "versioned", pushed)


def pull_data(data: str | Path, remote: str | None = None, *, workers: int | None = None,
              strict: bool = False) -> DataVersion:
    """Make DIR hold exactly the version DIR.dvc records: no-op, pull, or regenerate + check + push.

    A DIR that exists with other contents is never overwritten: with `strict` that is a
    VersioningError, else it is used as it is (action "differs", a warning naming the files that
    differ). A pull that fails part-way leaves no DIR behind; a regeneration happens beside DIR and
    moves into place only once checked: when its hash matches, or (not `strict`) with a warning when it
    does not (action "regenerated, differs"; not pushed, DIR.dvc unchanged).
    """
    data = Path(data).absolute()
    dvc_file = dvc_file_for(data)
    expected = read_version(dvc_file)
    if expected is None:
        raise VersioningError(f"{dvc_file} not found: {data} has no recorded version "
                              f"(record one with `omniretriever data version {data}`)")
    if data.is_dir() and not any(data.iterdir()):
        data.rmdir()  # an empty directory holds nothing to lose; treat it as absent
    if data.exists():
        return _check_present(data, dvc_file, expected, strict)
    root = project_root(data.parent)
    with _repo(root, remote) as (repo, remote_name):
        try:
            _pull(repo, data, dvc_file, remote_name)
            return _version(dvc_file, "pulled", 0)
        except VersioningError as exc:
            recipe = read_recipe(dvc_file)
            if recipe is None:
                raise
            pull_failure = str(exc)
        got = regenerate(data, recipe, expected, workers=workers, strict=strict)
        if got != expected:
            return _differing(data, dvc_file, got, "regenerated, differs",
                              f"the data regenerated from the recipe in {dvc_file.name}{_generator_note(recipe)}",
                              notes=(pull_failure,))
        return _commit_and_push(repo, data, dvc_file, remote_name, pull_failure)


def project_root(path: str | Path) -> Path:
    """The DVC project (a directory holding .dvc/) that contains `path`."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(str(path)))
    except NotDvcRepoError as exc:
        raise VersioningError(f"{path} is not inside a DVC project ({exc}); "
                              "run `dvc init` at the repository root") from None


def init_project(root: str | Path, remote_dir: str | Path = DEFAULT_REMOTE_DIR) -> Path:
    """Make the git repository `root` a DVC project: analytics and update checks off, a local default remote.

    `remote_dir` is relative to `root` (or absolute). Returns the .dvc directory.
    """
    from dvc.config_schema import RelPath
    from dvc.repo import Repo

    root = Path(root).absolute()
    if not (root / ".git").exists():
        raise VersioningError(f"{root} is not a git repository; DVC needs one (git init first)")
    repo = Repo.init(str(root))
    try:
        with repo.config.edit() as conf:
            conf["core"]["analytics"] = False
            conf["core"]["check_update"] = False
            conf["core"]["remote"] = DEFAULT_REMOTE
            # RelPath: saved relative to the config file, so the project can move; an absolute path stays absolute
            url = str(root / remote_dir)
            conf["remote"][DEFAULT_REMOTE] = {"url": url if Path(remote_dir).is_absolute() else RelPath(url)}
    finally:
        repo.close()
    return root / ".dvc"


def file_listing(path: str | Path) -> dict[str, str]:
    """relative path (posix) -> md5 of every file under `path`, in the order DVC lists a directory."""
    path = Path(path)
    files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).parts)
    listing = {}
    for p in files:
        digest = hashlib.md5()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        listing[p.relative_to(path).as_posix()] = digest.hexdigest()
    return listing


def listing_version(listing: dict[str, str]) -> str:
    """The version ("<hash>.dir") DVC gives a directory with these files: the md5 of its JSON listing."""
    entries = [{"md5": listing[rel], "relpath": rel} for rel in sorted(listing, key=lambda r: tuple(r.split("/")))]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def read_listing(listing_file: Path, version: str) -> dict[str, str] | None:
    """The per-file md5s of `version` from DIR.md5sums; None when the file is absent, unreadable or
    lists another version (written for an older DIR.dvc)."""
    try:
        lines = listing_file.read_text(encoding="utf-8").splitlines()
        listing = dict(reversed(line.split("  ", 1)) for line in lines if line)
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return None
    return listing if listing_version(listing) == version else None


def differing_files(recorded: dict[str, str] | None, present: dict[str, str]) -> list[str] | None:
    """Sorted relative paths that are missing, extra or changed between two listings (None: unknown)."""
    if recorded is None:
        return None
    return sorted(rel for rel in recorded.keys() | present.keys() if recorded.get(rel) != present.get(rel))


def dir_hash(path: str | Path) -> str:
    """The version DVC would record for a directory ("<hash>.dir"), computed without a DVC project."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    path = Path(path)
    if not path.is_dir():
        raise VersioningError(f"{path}: not a directory")
    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory(prefix="dvc-hash-") as scratch:
        _, _, obj = build(HashFileDB(fs, scratch), str(path), fs, "md5", dry_run=True)
    return obj.hash_info.value


# ----------------------------------------------------------------------------------------------
# The regeneration recipe
# ----------------------------------------------------------------------------------------------


def synth_recipe(data: Path) -> dict[str, Any] | None:
    """{"generator_version", "config"} when `data` is a complete `data synth` dataset, else None."""
    from dataset import synth
    from dataset.config import SynthConfig

    try:
        meta = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
        config = SynthConfig(**meta["config"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if meta.get("name") != "omniretriever-synth" or not synth.is_up_to_date(data, config):
        return None
    return {"generator_version": synth.GENERATOR_VERSION, "config": asdict(config)}


def read_recipe(dvc_file: Path) -> dict[str, Any] | None:
    """The synth recipe recorded in a .dvc file, or None."""
    recipe = _load(dvc_file).get("meta", {}) or {}
    recipe = recipe.get("synth") if isinstance(recipe, dict) else None
    return recipe if isinstance(recipe, dict) and "config" in recipe else None


def regenerate(data: Path, recipe: dict[str, Any], expected: str, *, workers: int | None = None,
               strict: bool = True) -> str:
    """Rebuild a synth dataset beside `data`, check its hash against `expected`, then move it into place
    and return its version. A version other than `expected` is a VersioningError (nothing written) when
    `strict`, else it moves into place all the same: the caller says so. So is a recipe recorded by
    another generator version: `strict` refuses at once, else this generator makes what it makes."""
    from dataset import synth
    from dataset.config import SynthConfig

    if recipe.get("generator_version") != synth.GENERATOR_VERSION and strict:
        raise VersioningError(f"the recorded dataset was made by generator {recipe.get('generator_version')}, "
                              f"this is {synth.GENERATOR_VERSION}: regenerating cannot reproduce it")
    try:
        config = SynthConfig(**recipe["config"])
    except TypeError as exc:
        raise VersioningError(f"the recorded synth recipe is not a SynthConfig: {exc}") from None
    staging = data.parent / f".{data.name}.regen-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        synth.synthesize(staging, config, workers=workers)
        got = dir_hash(staging)
        if got != expected and strict:
            raise VersioningError(f"regenerated {data.name} has version {got}, but {data.name}.dvc records {expected}"
                                  f"{_which_differ(data, staging, expected)} (different codec libraries?); "
                                  "nothing was written")
        os.replace(staging, data)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return got


def _generator_note(recipe: dict[str, Any]) -> str:
    """" (recorded by generator X, this is Y)" when the recipe names another generator version, else ""."""
    from dataset import synth

    recorded = recipe.get("generator_version")
    if recorded == synth.GENERATOR_VERSION:
        return ""
    return f" (recorded by generator {recorded}, this is {synth.GENERATOR_VERSION})"


def _write_listing(path: Path, listing: dict[str, str]) -> None:
    """DIR.md5sums, written atomically ("<md5>  <relative path>" lines: `md5sum -c` reads it inside DIR)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{md5}  {rel}\n" for rel, md5 in listing.items()), encoding="utf-8")
    tmp.replace(path)


def _which_differ(data: Path, present: Path, expected: str) -> str:
    """", in N of M files (a, b, ...)" for a message, from DIR.md5sums; "" when that is unknown."""
    recorded = read_listing(listing_file_for(data), expected)
    differ = differing_files(recorded, file_listing(present))
    if differ is None:
        return ""
    names = ", ".join(differ[:NAMED_DIFFERENCES]) + (f" and {len(differ) - NAMED_DIFFERENCES} more"
                                                     if len(differ) > NAMED_DIFFERENCES else "")
    return f", in {len(differ)} of {len(recorded)} files ({names})"


def _differing(data: Path, dvc_file: Path, got: str, action: str, what: str,
               notes: tuple[str, ...] = ()) -> DataVersion:
    """The version of data that is not what DIR.dvc records, with the one warning that says so."""
    expected = read_version(dvc_file)
    warning = (f"{what} has version {got}, not the {expected} that {dvc_file.name} records"
               f"{_which_differ(data, data, expected)}. Going on with it under its own version, {got}; "
               f"{dvc_file.name} is left as it is (`omniretriever data version {data.name}` records this version, "
               "the pipeline's version-data step does so after validation; `data pull --strict` refuses instead)")
    files = [p for p in data.rglob("*") if p.is_file()]
    return DataVersion(md5=got, nfiles=len(files), size=sum(p.stat().st_size for p in files), dvc_file=dvc_file,
                       action=action, notes=notes, warning=warning, recorded=expected)


def _write_recipe(dvc_file: Path, recipe: dict[str, Any] | None) -> None:
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(str(dvc_file)) as doc:
        meta = doc.get("meta")
        if recipe is not None:
            if not isinstance(meta, dict):
                meta = doc["meta"] = {}
            meta["synth"] = recipe
        elif isinstance(meta, dict) and "synth" in meta:
            del meta["synth"]
            if not meta:
                del doc["meta"]


# ----------------------------------------------------------------------------------------------
# DVC plumbing
# ----------------------------------------------------------------------------------------------


def _is_location(remote: str) -> bool:
    """A URL or a directory path rather than the name of a configured remote."""
    return "://" in remote or "/" in remote or "\\" in remote or remote.startswith(".")


@contextmanager
def _repo(root: Path, remote: str | None) -> Iterator[tuple[Repo, str | None]]:
    """The DVC project at `root`, and the remote name to pass to push/pull (None: the default)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    kwargs: dict[str, Any] = {}
    name = remote
    if remote is not None and _is_location(remote):
        url = remote if "://" in remote else str(Path(remote).absolute())
        kwargs = {"remote": ADHOC_REMOTE, "remote_config": {"url": url}}
        name = ADHOC_REMOTE
    try:
        repo = Repo(str(root), **kwargs)
    except DvcException as exc:
        raise VersioningError(f"cannot open the DVC project at {root}: {exc}") from None
    try:
        if name is not None and name not in repo.config["remote"]:
            known = ", ".join(sorted(repo.config["remote"])) or "none"
            raise VersioningError(f"no DVC remote named {name!r} (configured: {known}); "
                                  "pass a URL or directory instead")
        yield repo, name
    finally:
        repo.close()


def _dvc(what: str, fn, *args, **kwargs):
    """Call a DVC API function; its errors become VersioningError naming the operation."""
    from dvc.exceptions import DvcException

    try:
        return fn(*args, **kwargs)
    except DvcException as exc:
        raise VersioningError(f"{what} failed: {_plain(str(exc))}") from None


def _plain(message: str) -> str:
    """One line without terminal colour codes: DVC formats its messages for a terminal."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", message).split())


def _pull(repo: Repo, data: Path, dvc_file: Path, remote: str | None) -> None:
    """dvc pull DIR.dvc; a failure leaves no partial DIR behind."""
    try:
        _dvc(f"dvc pull {dvc_file.name}", repo.pull, targets=[str(dvc_file)], remote=remote)
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)  # DIR did not exist before the pull: whatever is there is ours
        raise


def _commit_and_push(repo: Repo, data: Path, dvc_file: Path, remote: str | None, pull_failure: str) -> DataVersion:
    """Store a regenerated DIR in the cache (DIR.dvc unchanged: same hash) and push it; a failed push is a note."""
    notes = [f"{pull_failure}; regenerated {data.name} from the recipe in {dvc_file.name} and checked it"]
    _dvc(f"dvc commit {dvc_file.name}", repo.commit, str(dvc_file), force=True)
    try:
        pushed = _dvc(f"dvc push {dvc_file.name}", repo.push, targets=[str(dvc_file)], remote=remote)
    except VersioningError as exc:
        pushed = 0
        notes.append(f"{exc}; {data.name} is in place and matches {dvc_file.name}: push it later with `dvc push`")
    return _version(dvc_file, "regenerated", pushed, tuple(notes))


def _check_present(data: Path, dvc_file: Path, expected: str, strict: bool) -> DataVersion:
    got = dir_hash(data)
    if got == expected:
        return _version(dvc_file, "up to date", 0)
    if strict:
        raise VersioningError(f"{data} holds version {got}, not the {expected} that {dvc_file.name} records"
                              f"{_which_differ(data, data, expected)}; not overwriting it (move it away to pull, or "
                              "record it with `omniretriever data version`)")
    return _differing(data, dvc_file, got, "differs", f"{data} (already in place, not overwritten)")


def _load(dvc_file: Path) -> dict[str, Any]:
    from dvc.utils.serialize import ParseError, load_yaml

    try:
        doc = load_yaml(str(dvc_file))
    except ParseError as exc:
        raise VersioningError(f"{dvc_file}: not a valid .dvc file ({exc})") from None
    if not isinstance(doc, dict):
        raise VersioningError(f"{dvc_file}: not a valid .dvc file (expected a mapping)")
    return doc


def _read_out(dvc_file: Path) -> dict[str, Any] | None:
    if not dvc_file.is_file():
        return None
    outs = _load(dvc_file).get("outs")
    if not isinstance(outs, list) or len(outs) != 1 or not isinstance(outs[0], dict):
        raise VersioningError(f"{dvc_file}: expected exactly one entry under 'outs'")
    out = outs[0]
    md5 = out.get("md5")
    if not isinstance(md5, str) or not md5.endswith(".dir"):
        raise VersioningError(f"{dvc_file}: 'outs' does not record a directory version (md5 '<hash>.dir'), got {md5!r}")
    return out


def _version(dvc_file: Path, action: str, pushed: int, notes: tuple[str, ...] = ()) -> DataVersion:
    out = _read_out(dvc_file)
    if out is None:
        raise VersioningError(f"{dvc_file} was not written")
    return DataVersion(md5=out["md5"], nfiles=int(out.get("nfiles", 0)), size=int(out.get("size", 0)),
                       dvc_file=dvc_file, action=action, pushed=int(pushed or 0), notes=notes)
