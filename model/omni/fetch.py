"""Fetch a base checkpoint for training: a directory as it lies, or an s3:// or hf:// one downloaded once
into a cache directory and reused by every later fetch of the same URI.

    fetch_checkpoint(source, cache) -> Fetched(path, sha256, ...)

`source` is one of

    /a/directory               validated (find_checkpoint) and digested where it lies; nothing is copied
    s3://bucket/prefix         the objects directly under prefix/, through boto3; credentials, region and
                               endpoint come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
                               AWS_DEFAULT_REGION, AWS_ENDPOINT_URL) unless `endpoint_url` is given
    hf://org/name[@revision]   huggingface_hub.snapshot_download; works only where the hub is reachable

Only a checkpoint's files are fetched (PATTERNS: config.json, tokenizer*.json, *.safetensors,
model.safetensors.index.json); other objects under an S3 prefix are skipped and counted.

The cache:

    CACHE/index.json       {"format": 1, "entries": {uri: {"sha256": ..., "files": {name: size}}}}, replaced
                           atomically while CACHE/.index.lock is held
    CACHE/<sha256>/        a complete checkpoint: downloaded into a partial directory, validated, digested
                           (model.omni.checkpoint.weights_digest), then renamed here in one step
    CACHE/.partial-*/      a download in progress or one that was killed; never read, removed once stale

A digest's directory appears only by that rename, so a killed or concurrent fetch leaves nothing that looks
complete. Two fetches of one URI at once both download; the second finds the digest's directory in place
and removes its own copy. Two sources with the same weights share a directory when their other files
(config, tokenizer) are the same too, and are refused otherwise.

Reuse is checked cheaply, not by re-digesting: a URI in the index is reused without a request when every
file the index recorded is in its directory with the recorded size and find_checkpoint accepts the
directory (it reads headers only). The training run digests the weights in full for its base.json, and
the pipeline's train step compares that digest with the one fetched here. A cached copy that fails the
check is removed and fetched again. A URI is taken to name fixed content: hf://org/name without a
revision stays the snapshot first fetched; pin a revision, or name another, to take a newer one.

boto3 and huggingface_hub are imported only when a URI needs them.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.errors import CheckpointError
from model.omni.checkpoint import INDEX, find_checkpoint

PATTERNS = ("config.json", "tokenizer*.json", "*.safetensors", INDEX)
INDEX_FILE, LOCK_FILE, PARTIAL = "index.json", ".index.lock", ".partial-"
INDEX_FORMAT = 1
STALE_SECONDS = 24 * 3600  # a partial directory untouched this long belongs to a fetch that died
SCHEMES = "a directory path, s3://bucket/prefix or hf://org/name[@revision]"
_HF_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_HF_REVISION = re.compile(r"\w[\w./-]*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class CheckpointFetchError(CheckpointError):
    """A base checkpoint URI that cannot be fetched: a bad URI, a missing bucket or prefix, an
    unreachable store, files that are not a checkpoint. `path` is the URI."""

    def __init__(self, uri: str, reason: str):
        super().__init__(uri, None, reason)

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class Source:
    """A parsed `source`: kind "local" (location is the directory), "s3" (bucket, prefix) or "hf" (repo,
    revision; revision None: the hub's default branch)."""

    kind: str
    uri: str
    location: str
    detail: str | None = None

    @property
    def remote(self) -> bool:
        return self.kind != "local"

    @property
    def key(self) -> str:
        """The URI the cache's index files it under: s3://b/p/ and s3://b/p are one."""
        if self.kind == "s3":
            return f"s3://{self.location}/{self.detail}" if self.detail else f"s3://{self.location}"
        return self.uri


@dataclass(frozen=True)
class Fetched:
    """Where the checkpoint lies now and its weights digest; `downloaded` is False when nothing was
    requested (a local directory, or a URI the cache already held)."""

    path: Path
    sha256: str
    uri: str
    downloaded: bool
    files: int = 0  # files downloaded
    size: int = 0  # bytes downloaded
    notes: tuple[str, ...] = field(default=())  # what else happened: skipped objects, a cached copy refetched


def default_cache() -> Path:
    """$OMNIRETRIEVER_CACHE/checkpoints, or .cache/omniretriever/checkpoints under the working directory."""
    return Path(os.environ.get("OMNIRETRIEVER_CACHE", ".cache/omniretriever")) / "checkpoints"


def parse_source(source: str) -> Source:
    """Parse a checkpoint source; CheckpointFetchError names the URI and what is wrong with it."""
    if not isinstance(source, str) or not source.strip():
        raise CheckpointFetchError(repr(source), f"no checkpoint given: expected {SCHEMES}")
    scheme, sep, rest = source.partition("://")
    if not sep:
        return Source("local", source, source)
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise CheckpointFetchError(source, f"{bucket!r} is not an S3 bucket name (expected s3://bucket/prefix)")
        return Source("s3", source, bucket, prefix.strip("/"))
    if scheme == "hf":
        repo, at, revision = rest.partition("@")
        if not _HF_REPO.fullmatch(repo):
            raise CheckpointFetchError(source, f"{repo!r} is not a hub repository (expected hf://org/name[@revision])")
        if at and not _HF_REVISION.fullmatch(revision):
            raise CheckpointFetchError(source, f"{revision!r} is not a revision (a branch, tag or commit)")
        return Source("hf", source, repo, revision or None)
    raise CheckpointFetchError(source, f"unsupported scheme {scheme + '://'!r}: expected {SCHEMES}")


def fetch_checkpoint(source: str, cache: str | Path | None = None, *, endpoint_url: str | None = None) -> Fetched:
    """The checkpoint `source` names, as a local directory: see the module docstring."""
    src = parse_source(source)
    if not src.remote:
        checkpoint = find_checkpoint(src.location)
        return Fetched(Path(src.location), checkpoint.digest, src.uri, downloaded=False)
    root = Path(cache) if cache else default_cache()
    root.mkdir(parents=True, exist_ok=True)
    notes = list(_remove_stale_partials(root))
    cached, note = _cached(root, src.key)
    if note:
        notes.append(note)
    if cached is not None:
        return Fetched(cached[0], cached[1], src.uri, downloaded=False, notes=tuple(notes))
    partial = Path(tempfile.mkdtemp(prefix=PARTIAL, dir=root))
    partial.chmod(0o755)  # mkdtemp's 0700 would stay on the cached copy, hiding it from other users
    try:
        count, size, skipped = (_download_s3(src, partial, endpoint_url) if src.kind == "s3"
                                else _download_hf(src, partial))
        if skipped:
            notes.append(f"{skipped} object(s) under {src.uri} are not checkpoint files ({', '.join(PATTERNS)}) "
                         f"and were not fetched")
        path, sha256 = _complete(root, src.key, partial)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return Fetched(path, sha256, src.uri, downloaded=True, files=count, size=size, notes=tuple(notes))


# --- the cache -------------------------------------------------------------------------------------------

def _files(directory: Path) -> dict[str, int]:
    """name (relative, POSIX) -> size of every file under `directory`."""
    return {p.relative_to(directory).as_posix(): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()}


def read_index(cache: Path) -> dict[str, dict[str, Any]]:
    """The cache's entries (uri -> {"sha256", "files"}); an index that cannot be read is an error naming it."""
    path = cache / INDEX_FILE
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, None, f"cannot read the checkpoint cache's index: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != INDEX_FORMAT or not isinstance(raw.get("entries"), dict):
        raise CheckpointError(path, "format", f"expected a checkpoint cache index of format {INDEX_FORMAT}")
    return raw["entries"]


def _update_index(cache: Path, uri: str, entry: dict[str, Any] | None) -> None:
    """Set (or with None remove) the entry of `uri`, under the cache's lock, replacing the file atomically."""
    from filelock import FileLock

    with FileLock(str(cache / LOCK_FILE), timeout=600):
        entries = read_index(cache)
        if entry is None:
            entries.pop(uri, None)
        else:
            entries[uri] = entry
        fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".json", dir=cache)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"format": INDEX_FORMAT, "entries": entries}, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, cache / INDEX_FILE)


def _cached(cache: Path, uri: str) -> tuple[tuple[Path, str] | None, str | None]:
    """((directory, sha256) when the index's copy of `uri` passes the cheap check, else None; a note when a
    recorded copy was found wanting and removed)."""
    entry = read_index(cache).get(uri)
    if entry is None:
        return None, None
    sha256, recorded = str(entry.get("sha256", "")), entry.get("files") or {}
    directory = cache / sha256
    problem = _check_copy(directory, recorded) if re.fullmatch(r"[0-9a-f]{64}", sha256) else "a malformed digest"
    if problem is None:
        return (directory, sha256), None
    _update_index(cache, uri, None)
    if directory.is_dir() and re.fullmatch(r"[0-9a-f]{64}", sha256):
        _discard(cache, directory)
    return None, f"the cached copy of {uri} ({directory}) was removed and fetched again: {problem}"


def _check_copy(directory: Path, recorded: dict[str, int]) -> str | None:
    """Why the cached `directory` is not the copy the index recorded (None when it is)."""
    if not directory.is_dir():
        return "its directory is missing"
    for name, size in recorded.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were fetched"
    try:
        find_checkpoint(directory)
    except CheckpointError as exc:
        return str(exc)
    return None


def _discard(cache: Path, directory: Path) -> None:
    """Remove a cached directory: renamed to a partial name first, so nothing half-removed looks complete."""
    doomed = Path(tempfile.mkdtemp(prefix=PARTIAL, dir=cache))
    try:
        os.replace(directory, doomed / "removed")
    except OSError:
        pass  # gone already (a concurrent fetch discarded it)
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_stale_partials(cache: Path) -> list[str]:
    """Remove the partial directories that nothing has written to for STALE_SECONDS (killed fetches)."""
    notes = []
    now = time.time()
    for partial in cache.glob(PARTIAL + "*"):
        try:
            newest = max([partial.stat().st_mtime] + [p.stat().st_mtime for p in partial.rglob("*")])
        except OSError:
            continue  # removed meanwhile
        if now - newest > STALE_SECONDS:
            shutil.rmtree(partial, ignore_errors=True)
            notes.append(f"removed {partial}, left by a fetch that did not finish")
    return notes


def _complete(cache: Path, uri: str, partial: Path) -> tuple[Path, str]:
    """Validate and digest the download in `partial`, rename it to CACHE/<sha256>/, record it in the index."""
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # huggingface_hub's download metadata
    if not (partial / "config.json").is_file():
        raise CheckpointFetchError(uri, f"no config.json there (fetched: {', '.join(sorted(_files(partial))) or 'nothing'}):"
                                        f" not a checkpoint")
    try:
        sha256 = find_checkpoint(partial).digest
    except CheckpointError as exc:
        where = [] if Path(exc.path) == partial else [Path(exc.path).relative_to(partial).as_posix()]
        raise CheckpointFetchError(uri, ": ".join([*where, *([exc.field] if exc.field else []), exc.reason])) from None
    final = cache / sha256
    try:
        os.rename(partial, final)
    except OSError:
        if not final.is_dir():
            raise
        _same_files(cache, uri, partial, final)  # the same weights are cached already
    _update_index(cache, uri, {"sha256": sha256, "files": _files(final)})
    return final, sha256


def _same_files(cache: Path, uri: str, fetched: Path, cached: Path) -> None:
    """Refuse to share `cached` with a download whose weights match but whose other files differ."""
    def others(d: Path) -> dict[str, int]:
        return {k: v for k, v in _files(d).items() if not k.endswith(".safetensors") and k != INDEX}

    mine, theirs = others(fetched), others(cached)
    differ = sorted(set(mine) ^ set(theirs)) or sorted(
        k for k in mine if (fetched / k).read_bytes() != (cached / k).read_bytes())
    if differ:
        owners = sorted(u for u, e in read_index(cache).items() if e.get("sha256") == cached.name)
        raise CheckpointFetchError(uri, f"its weights are those already cached in {cached} (from "
                                        f"{', '.join(owners) or 'another source'}), but {differ[0]} differs: one "
                                        f"digest cannot name both; remove {cached} or fix the source")


# --- s3:// ------------------------------------------------------------------------------------------------

def _wanted(name: str) -> bool:
    return "/" not in name and any(fnmatch.fnmatchcase(name, p) for p in PATTERNS)


def _s3_client(uri: str, endpoint_url: str | None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise CheckpointFetchError(uri, "boto3 is not installed (pip install boto3)") from None
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=120)
    return boto3.client("s3", endpoint_url=endpoint_url or None, config=config)


def _s3_error(uri: str, exc: Exception, endpoint_url: str | None) -> CheckpointFetchError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return CheckpointFetchError(uri, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                         "(in the cluster they come from the pipeline's dvc_secret)")
    if isinstance(exc, EndpointConnectionError):
        where = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "the AWS S3 endpoint"
        return CheckpointFetchError(uri, f"cannot reach {where}: {exc}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code == "NoSuchBucket":
            return CheckpointFetchError(uri, f"bucket {error.get('BucketName') or uri.split('/')[2]!r} does not exist")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return CheckpointFetchError(uri, f"access denied ({code}): check the S3 credentials")
        return CheckpointFetchError(uri, f"S3 said {code}: {error.get('Message', exc)}")
    return CheckpointFetchError(uri, f"{type(exc).__name__}: {exc}")


def _download_s3(src: Source, partial: Path, endpoint_url: str | None) -> tuple[int, int, int]:
    """Download the checkpoint files directly under the prefix; (files, bytes, objects skipped)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = src.location, (src.detail + "/" if src.detail else "")
    client = _s3_client(src.uri, endpoint_url)
    try:
        objects = [(obj["Key"][len(prefix):], int(obj["Size"]))
                   for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                   for obj in page.get("Contents", [])]
        if not objects:
            raise CheckpointFetchError(src.uri, f"no objects under prefix {prefix!r} of bucket {bucket!r}")
        wanted = [(name, size) for name, size in objects if _wanted(name)]
        if not any(name == "config.json" for name, _ in wanted):
            listed = ", ".join(sorted(name for name, _ in objects)[:8])
            raise CheckpointFetchError(src.uri, f"no config.json under the prefix (it holds {len(objects)} object(s): "
                                                f"{listed}{', ...' if len(objects) > 8 else ''}): not a checkpoint")
        for name, size in wanted:
            client.download_file(bucket, prefix + name, str(partial / name))
            if (partial / name).stat().st_size != size:
                raise CheckpointFetchError(src.uri, f"{name}: {(partial / name).stat().st_size} bytes arrived, "
                                                    f"the listing said {size}")
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(src.uri, exc, endpoint_url) from None
    return len(wanted), sum(size for _, size in wanted), len(objects) - len(wanted)


# --- hf:// ------------------------------------------------------------------------------------------------

def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection and timeout errors (huggingface_hub talks to the hub through httpx)."""
    try:
        import httpx
    except ImportError:
        return ()
    return (httpx.TransportError,)


def _download_hf(src: Source, partial: Path) -> tuple[int, int, int]:
    """snapshot_download of the checkpoint files into `partial`; (files, bytes, 0)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub import errors as hub
    except ImportError:
        raise CheckpointFetchError(src.uri, "huggingface_hub is not installed (it comes with transformers)") from None
    try:
        snapshot_download(src.location, revision=src.detail, local_dir=partial, allow_patterns=list(PATTERNS))
    except (hub.RepositoryNotFoundError, hub.GatedRepoError) as exc:
        kind = "is gated: accept its licence and set HF_TOKEN" if isinstance(exc, hub.GatedRepoError) else \
            "does not exist on the hub (or is private: set HF_TOKEN)"
        raise CheckpointFetchError(src.uri, f"repository {src.location!r} {kind}") from None
    except hub.RevisionNotFoundError:
        raise CheckpointFetchError(src.uri, f"repository {src.location!r} has no revision {src.detail!r}") from None
    except (hub.LocalEntryNotFoundError, hub.OfflineModeIsEnabled, *_transport_errors()) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointFetchError(src.uri, f"the Hugging Face hub is unreachable from here ({first}): hf:// works only "
                                            f"where the cluster reaches the hub; otherwise put the checkpoint in S3 "
                                            f"(s3://bucket/prefix) or on the workspace volume (a directory path)") from None
    except hub.HfHubHTTPError as exc:
        raise CheckpointFetchError(src.uri, f"the hub refused the download: {exc}") from None
    files = _files(partial)
    files = {k: v for k, v in files.items() if not k.startswith(".cache/")}
    return len(files), sum(files.values()), 0
