"""Which Milvus a store URI names, and a client for it: Milvus Lite (a local .db path) or a cluster (http(s)://).

The token of a cluster comes from $OMNIRETRIEVER_MILVUS_TOKEN or from the file $OMNIRETRIEVER_MILVUS_TOKEN_FILE
names (a mounted Kubernetes secret). Milvus Lite serves one process per store: a second one is refused with
a message saying so.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import OmniRetrieverError

TOKEN_ENV = "OMNIRETRIEVER_MILVUS_TOKEN"
TOKEN_FILE_ENV = "OMNIRETRIEVER_MILVUS_TOKEN_FILE"


class StoreError(OmniRetrieverError, ValueError):
    """A store that cannot be opened or used as asked: a bad URI, a missing view, a bad filter, ..."""


class ModelMismatchError(StoreError):
    """A collection built by another model than the one asking (its weights sha256 differs)."""


@dataclass(frozen=True)
class Connection:
    engine: str  # "lite" or "cluster"
    uri: str  # Lite: the absolute path; a cluster: its URL
    token: str = field(default="", repr=False)

    def describe(self) -> str:
        return f"Milvus Lite {self.uri}" if self.engine == "lite" else f"Milvus cluster {self.uri}"


def connection(uri: str | Path, env: Mapping[str, str] = os.environ) -> Connection:
    """Which engine a store URI names: a local path ending in .db (Milvus Lite) or http(s)://host:port (a
    cluster, token from TOKEN_ENV or the file TOKEN_FILE_ENV names); anything else is refused."""
    uri = str(uri)
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        return Connection("cluster", uri, _token(env))
    if scheme:
        raise StoreError(f"store URI {uri!r}: {scheme}:// is not supported; give a local path ending in .db "
                         "(Milvus Lite) or http(s)://host:port (a Milvus cluster)")
    if not uri.endswith(".db"):
        raise StoreError(f"store URI {uri!r}: a Milvus Lite store is a local path ending in .db "
                         "(a cluster is http(s)://host:port)")
    path = Path(uri).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} exists and is not a Milvus Lite store (Lite keeps a directory there)")
    return Connection("lite", str(path))


def _token(env: Mapping[str, str]) -> str:
    token, file = env.get(TOKEN_ENV, ""), env.get(TOKEN_FILE_ENV, "")
    if token and file:
        raise StoreError(f"both {TOKEN_ENV} and {TOKEN_FILE_ENV} are set: set one")
    if not file:
        return token
    try:
        return Path(file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StoreError(f"{TOKEN_FILE_ENV}={file}: cannot read the token ({exc.strerror or exc})") from None



class _Quiet(logging.Filter):
    """Drop what pymilvus and Milvus Lite log that the store reports itself or that changes nothing: each
    failed call's error with a traceback (the store raises it, as StoreError where it is the caller's), and,
    on Lite, which has neither MVCC timestamps nor AllocTimestamp, a warning and a NotImplementedError per
    query_iterator."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        locked = record.exc_info is not None and type(record.exc_info[1]).__name__ == "DataDirLockedError"
        return not (locked or message.startswith("RPC error") or "mvccTs" in message
                    or "Method not implemented" in message)


QUIETED = ("pymilvus.decorators", "pymilvus.client.iterator.query_iterator", "grpc._server",
           "milvus_lite.server_manager")


def _locked(store: Path) -> bool:
    """Whether another process holds Milvus Lite's lock on `store` (its LOCK file, flock'ed while open)."""
    import fcntl

    try:
        fd = os.open(store / "LOCK", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock


_LITE_CLIENTS: dict[str, int] = {}  # Lite store path -> clients this process has open on it
_LITE_LOCK = threading.Lock()


def release(conn: Connection, client) -> None:
    """Close `client`; for Milvus Lite, when it was this process's last client of the store, also stop the
    in-process server Lite runs for it, which closing a client does not: its data is sealed and its lock
    freed for another process at once, rather than when this process exits."""
    client.close()
    if conn.engine != "lite":
        return
    with _LITE_LOCK:
        left = _LITE_CLIENTS.get(conn.uri, 1) - 1
        if left > 0:
            _LITE_CLIENTS[conn.uri] = left
            return
        _LITE_CLIENTS.pop(conn.uri, None)
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(conn.uri)


def client_for(conn: Connection, wait: float = 0.0):
    """A MilvusClient of the store; a Lite store open in another process is waited for up to `wait` seconds
    (shards of a pipeline take turns on one Lite file), then refused."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    for name in QUIETED:
        if not any(isinstance(f, _Quiet) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(_Quiet())
    deadline = time.monotonic() + wait
    while True:
        try:
            if conn.engine == "lite":
                Path(conn.uri).parent.mkdir(parents=True, exist_ok=True)
                with _LITE_LOCK:
                    client = MilvusClient(conn.uri)
                    _LITE_CLIENTS[conn.uri] = _LITE_CLIENTS.get(conn.uri, 0) + 1
                return client
            return MilvusClient(uri=conn.uri, token=conn.token)
        except MilvusException as exc:
            if not (conn.engine == "lite" and _locked(Path(conn.uri))):
                raise StoreError(f"cannot open {conn.describe()}: {getattr(exc, 'message', exc)}") from None
            if time.monotonic() >= deadline:
                waited = f" (waited {wait:.0f} s)" if wait else ""
                raise StoreError(f"{conn.describe()} is open in another process{waited} (Milvus Lite allows one "
                                 "process per store): stop it, serve the store with `milvus-lite server`, or use a "
                                 "cluster") from None
            time.sleep(0.2)
