"""The local endpoint: the real tritonserver (from the nvidia-pytriton wheel) plus the KServe transformer.

    with LocalEndpoint(repo, index=None) as ep:    # both started on 127.0.0.1, both ready (media_root=DIR: /ui too)
        ep.http_url, ep.grpc_url                   # the transformer: models omniretriever, omniretriever-search
        ep.triton_http_url, ep.triton_grpc_url     # Triton itself: model omniretriever-encoder
    # both stopped here, also after an exception or Ctrl-C

The wheel's tritonserver has the python backend only, so it serves REPO/local (ONNX Runtime inside the
python backend on the repository's model.onnx). Its backend directory is assembled in a private temp
directory (the backend library, its utilities and the stub for this Python), and it runs with this
Python's directory first on PATH so the stub imports this environment's numpy and onnxruntime.

Each server runs in a session of its own, and every process it starts (Triton's python-backend stubs) is
noted while it runs, by parent and by session, from /proc: stopping a server (SIGTERM, then SIGKILL after a
timeout), and a server that exits, kill that whole tree, also a stub left behind in another group by a
tritonserver that was killed. A server that exits is reaped only after its tree is killed, so its pid (and
with it its group's and session's ids) cannot be reused meanwhile. On Linux the servers also get SIGTERM if
this process dies.

The work directory is named after its owner, TMP/omniretriever-serve-PID-START-XXXXXXXX (START: the
process's start time, so a reused pid is told apart). A run killed before it could remove it (kill -9)
leaves it behind: the next start removes every such directory whose owner no longer runs, after killing
what still runs from it; a running owner's directory is left alone.

Ports left as None are picked free. A server that exits or is not ready in time raises ServingError
with the tail of its log.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from model.errors import OmniRetrieverError
from serving.limits import ServingLimits
from serving.repository import local_dir, production_dir, read_repository
from serving.tensors import ENCODER_MODEL, EMBEDDING_MODEL, SEARCH_MODEL

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKDIR_PREFIX = "omniretriever-serve-"
_PROC = Path("/proc/self/stat").exists()


class ServingError(OmniRetrieverError, RuntimeError):
    """A server that could not be started or stopped; the message carries its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ServingError(f"package {name} is not installed (it ships the tritonserver binary)")
    return Path(next(iter(spec.submodule_search_locations)))


def triton_paths() -> dict[str, Path]:
    """The tritonserver binary, its bundled libraries, the python backend and the stub for this Python."""
    root = _package_dir("pytriton") / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = {"binary": root / "bin" / "tritonserver", "libs": root.parent.parent / "nvidia_pytriton.libs",
             "backend": root / "backends" / "python", "stub": root / "python_backend_stubs" / version / "triton_python_backend_stub"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise ServingError(f"the nvidia-pytriton wheel lacks {', '.join(missing)}")
    return paths


def backend_dir(workdir: Path) -> Path:
    """workdir/backends/python holding the backend library, its utilities and the stub (what --backend-directory wants)."""
    paths = triton_paths()
    python = workdir / "backends" / "python"
    python.mkdir(parents=True, exist_ok=True)
    for source in (paths["backend"] / "libtriton_python.so", paths["backend"] / "triton_python_backend_utils.py", paths["stub"]):
        shutil.copy2(source, python / source.name)
    return workdir / "backends"


def _die_with(parent: int) -> Callable[[], None]:
    """For the child before exec: SIGTERM when the parent dies (Linux), so no server outlives its launcher."""
    def arm() -> None:
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
    return arm


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, session id, start time) of a running process, from /proc/PID/stat; None if there is none
    (a zombie counts as none). Without /proc: (0, 0, 0) for any pid that exists."""
    if not _PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0, 0, 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])  # fields 4, 6 and 22 of proc(5)


def _processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, session id, start time) of every running process (none without /proc)."""
    try:
        pids = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return {}
    table = {pid: _stat(pid) for pid in pids}
    return {pid: entry for pid, entry in table.items() if entry is not None}


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def make_workdir() -> Path:
    """A new private work directory in the temp root, named after this process (see the module's doc)."""
    pid = os.getpid()
    start = (_stat(pid) or (0, 0, 0))[2]
    return Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{pid}-{start}-"))


def _owner(name: str) -> tuple[int, int] | None:
    """(pid, start time) recorded in a work directory's name; None for a name of another form."""
    parts = name[len(WORKDIR_PREFIX):].split("-") if name.startswith(WORKDIR_PREFIX) else []
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def remove_abandoned_workdirs(root: str | Path | None = None) -> list[Path]:
    """Remove this user's work directories in `root` (the temp root) whose owner no longer runs, after killing
    the processes still running a program from them (a python-backend stub); return them."""
    root = Path(root if root is not None else tempfile.gettempdir())
    try:
        entries = [e for e in os.scandir(root) if _owner(e.name) is not None]
    except OSError:
        return []
    removed = []
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        pid, start = _owner(entry.name)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or (_stat(pid) or (0, 0, -1))[2] == start:
            continue
        _kill(_running_from(Path(entry.path)))
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _running_from(directory: Path) -> list[int]:
    """The processes whose executable lies in `directory`."""
    inside, directory = [], os.path.realpath(directory)
    for pid in _processes():
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.startswith(f"{directory}{os.sep}"):
            inside.append(pid)
    return inside


class _Server:
    """One child process in a session of its own, logging to a file, with every process it starts."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        self.name, self.log = name, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=cwd,
                                         preexec_fn=_die_with(os.getpid()) if sys.platform == "linux" else None)
        self.tree = {self.proc.pid: (_stat(self.proc.pid) or (0, 0, -1))[2]}  # pid -> start time

    def tail(self, lines: int = 20) -> str:
        """The log's error lines (Triton's start with E<date>) and its last lines, without table art or GPU noise."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        noise = ("CudaDriverHelper", "NVML", "GPU metrics", "cuda")
        errors = [l for l in text if l[:1] == "E" and l[1:5].isdigit() and not any(n in l for n in noise)]
        last = [l for l in text[-lines:] if l.strip() and not l.startswith(("+", "|"))]
        return "\n".join(l[:600] for l in dict.fromkeys(errors[-5:] + last))

    def status(self) -> int | None:
        """The leader's exit status (negative: killed by that signal), None while it runs. The leader is not
        reaped here: until stop() reaps it, its pid, its group's and its session's cannot be reused."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        if not hasattr(os, "waitid"):
            return self.proc.poll()
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.proc.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def track(self, table: dict[int, tuple[int, int, int]] | None = None, *, leader_unreaped: bool | None = None) -> None:
        """Note every process below the ones already noted, and every one in the leader's session while the
        leader is unreaped (a child that a dead parent left behind is found by its session)."""
        unreaped = self.proc.returncode is None if leader_unreaped is None else leader_unreaped
        table = _processes() if table is None else table
        known = {pid for pid, start in self.tree.items() if pid in table and table[pid][2] == start}
        while True:
            found = {pid for pid, (parent, session, _) in table.items() if pid not in self.tree
                     and (parent in known or (unreaped and session == self.proc.pid))}
            if not found:
                return
            self.tree.update((pid, table[pid][2]) for pid in found)
            known |= found

    def check_alive(self) -> None:
        status = self.status()
        if status is not None:
            raise ServingError(f"{self.name} exited with status {status}; last lines of {self.log}:\n{self.tail()}")

    def stop(self, timeout: float) -> None:
        """SIGTERM to the leader's group; `timeout` seconds later (or at once when cut short) SIGKILL to its group
        and to every process of its tree still there; then reap the leader."""
        try:
            if self.status() is None:
                self.track()
                self._signal_group(signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while self.status() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            self.kill(timeout)

    def kill(self, timeout: float) -> None:
        """SIGKILL to the leader's group and to every process of its tree, then reap the leader."""
        if self.proc.returncode is None:  # unreaped: its group id is still its own
            self.track()
            self._signal_group(signal.SIGKILL)
        table = _processes()
        _kill(pid for pid, start in self.tree.items() if pid in table and table[pid][2] == start)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _index_arg(index: str | Path | None) -> str | None:
    """--index for the transformer: a store URL as given, a local path (a .db store, a .safetensors file) absolute."""
    if index is None:
        return None
    index = str(index)
    return index if "://" in index else str(Path(index).expanduser().resolve())


class LocalEndpoint:
    """Context manager: tritonserver on REPO/local and the transformer in front of it, both on `host`."""

    def __init__(self, repo: str | Path, index: str | Path | None = None, host: str = "127.0.0.1",
                 http_port: int | None = None, grpc_port: int | None = None, *,
                 triton_http_port: int | None = None, triton_grpc_port: int | None = None,
                 limits: ServingLimits = ServingLimits(), startup_timeout: float = 180.0, stop_timeout: float = 10.0,
                 log_dir: str | Path | None = None, media_root: str | Path | None = None):
        self.repo = Path(repo)
        self.index = _index_arg(index)
        self.media_root = Path(media_root).expanduser().resolve() if media_root is not None else None
        self.host = host
        self.ports = {"http": http_port or free_port(host), "grpc": grpc_port or free_port(host),
                      "triton_http": triton_http_port or free_port(host), "triton_grpc": triton_grpc_port or free_port(host)}
        self.limits = limits
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._workdir: Path | None = None
        self._servers: list[_Server] = []

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.ports['grpc']}"

    @property
    def triton_http_url(self) -> str:
        return f"http://{self.host}:{self.ports['triton_http']}"

    @property
    def triton_grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.ports['triton_grpc']}"

    @property
    def models(self) -> list[str]:
        return [EMBEDDING_MODEL] + ([SEARCH_MODEL] if self.index is not None else [])

    @property
    def logs(self) -> dict[str, Path]:
        return {s.name: s.log for s in self._servers}

    def __enter__(self) -> "LocalEndpoint":
        try:
            self.start()
        except BaseException:  # Ctrl-C or a failed start: nothing is left running
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def page_url(self) -> str | None:
        """The search page (served with a media root only)."""
        return f"{self.http_url}/ui/" if self.media_root is not None else None

    def start(self) -> None:
        read_repository(self.repo)
        if self.media_root is not None and (self.index is None or not self.media_root.is_dir()):
            raise ValueError(f"media_root {self.media_root}: the search page needs an index and a media directory")
        if self.index is not None and self.index.endswith(".safetensors") and not Path(self.index).is_file():
            raise FileNotFoundError(f"index {self.index} does not exist (build one with `omniretriever index build`)")
        remove_abandoned_workdirs()
        self._workdir = make_workdir()
        logs = self.log_dir or self._workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # in its work directory, so that what the python-backend stubs import never depends on the caller's cwd
        triton = _Server("tritonserver", self._triton_argv(), self._triton_env(), logs / "tritonserver.log", self._workdir)
        self._servers.append(triton)
        self._wait(triton, [f"{self.triton_http_url}/v2/health/ready", f"{self.triton_http_url}/v2/models/{ENCODER_MODEL}/ready"])
        transformer = _Server("transformer", self._transformer_argv(), self._transformer_env(), logs / "transformer.log")
        self._servers.append(transformer)
        self._wait(transformer, [f"{self.http_url}/v2/health/ready"] + [f"{self.http_url}/v2/models/{m}/ready" for m in self.models])

    def stop(self) -> None:
        """Stop the transformer, then Triton, each with its whole tree (at once if a second Ctrl-C cuts the
        graceful stop short); remove the private work directory (logs survive only in log_dir)."""
        try:
            for server in reversed(self._servers):
                server.stop(self.stop_timeout)
        finally:  # also when cut short: every tree killed, every leader reaped
            for server in self._servers:
                if server.proc.returncode is None:
                    server.kill(self.stop_timeout)
            self._servers = [s for s in self._servers if s.proc.poll() is None]
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def check_alive(self) -> None:
        """Note the processes each server has started; raise ServingError, with the log's errors, if either
        server has exited."""
        unreaped = [s.proc.returncode is None for s in self._servers]  # before the scan: see _Server.track
        table = _processes()
        for server, leader_unreaped in zip(self._servers, unreaped):
            server.track(table, leader_unreaped=leader_unreaped)
        for server in self._servers:
            server.check_alive()

    def _wait(self, server: _Server, urls: list[str]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if all(_ready(u) for u in urls):
                return
            time.sleep(0.25)
        raise ServingError(f"{server.name} was not ready after {self.startup_timeout:.0f} s; last lines of {server.log}:\n{server.tail()}")

    def _triton_argv(self) -> list[str]:
        paths = triton_paths()
        return [str(paths["binary"]), "--model-repository", str(local_dir(self.repo).resolve()),
                "--backend-directory", str(backend_dir(self._workdir)),
                "--http-address", self.host, "--http-port", str(self.ports["triton_http"]),
                "--grpc-address", self.host, "--grpc-port", str(self.ports["triton_grpc"]),
                "--allow-metrics", "false", "--pinned-memory-pool-byte-size", "0", "--exit-timeout-secs", "5"]

    def _triton_env(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = str(triton_paths()["libs"])
        # the stub links libpython3.11.so: let it find this interpreter's, whose extension modules it imports
        # (a system libpython of another patch release lacks symbols they need, e.g. _ssl's _PyModule_Add)
        own = sysconfig.get_config_var("LIBDIR") if sysconfig.get_config_var("Py_ENABLE_SHARED") else None
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libs, own, env.get("LD_LIBRARY_PATH")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        # a pretrained backbone's python model (triton_torch_model.py) imports this project
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        return env

    def _transformer_argv(self) -> list[str]:
        argv = [sys.executable, "-m", "serving.transformer", "--model_dir", str(production_dir(self.repo).resolve()),
                "--predictor_host", f"{self.host}:{self.ports['triton_grpc']}", "--predictor_protocol", "grpc-v2",
                "--host", self.host, "--http_port", str(self.ports["http"]), "--grpc_port", str(self.ports["grpc"]),
                "--grace_seconds", "2", *self.limits.to_args()]
        argv += ["--index", self.index] if self.index is not None else []
        return argv + (["--media_root", str(self.media_root)] if self.media_root is not None else [])

    def _transformer_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        return env

    def describe(self) -> str:
        page = {"page": self.page_url} if self.page_url else {}
        return json.dumps({"transformer": {"http": self.http_url, "grpc": self.grpc_url, "models": self.models, **page},
                           "triton": {"http": self.triton_http_url, "grpc": self.triton_grpc_url, "model": ENCODER_MODEL}},
                          indent=2)
