"""The local endpoint: the real tritonserver (from the nvidia-pytriton wheel) plus the KServe transformer.

    with LocalEndpoint(repo, index=None) as ep:    # both started on 127.0.0.1, both ready
        ep.http_url, ep.grpc_url                   # the transformer: models omniretriever, omniretriever-search
        ep.triton_http_url, ep.triton_grpc_url     # Triton itself: model omniretriever-encoder
    # both stopped here, also after an exception or Ctrl-C

The wheel's tritonserver has the python backend only, so it serves REPO/local (ONNX Runtime inside the
python backend on the repository's model.onnx). Its backend directory is assembled in a private temp
directory (the backend library, its utilities and the stub for this Python), and it runs with this
Python's directory first on PATH so the stub imports this environment's numpy and onnxruntime.

Each server runs in its own process group, so stopping it (SIGTERM, then SIGKILL after a timeout) also
stops the python-backend stubs it spawned; on Linux the servers also get SIGTERM if this process dies.
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
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from model.errors import OmniRetrieverError
from serving.limits import ServingLimits
from serving.repository import local_dir, production_dir, read_repository
from serving.tensors import ENCODER_MODEL, EMBEDDING_MODEL, SEARCH_MODEL

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux), so no server outlives its launcher."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Server:
    """One child process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path):
        self.name, self.log = name, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None)

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

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ServingError(f"{self.name} exited with status {self.proc.returncode}; last lines of {self.log}:\n{self.tail()}")

    def stop(self, timeout: float) -> None:
        """SIGTERM to the whole group, SIGKILL if it is still there after `timeout` seconds."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout)
        self._signal(signal.SIGKILL)  # anything the leader left behind in its group

    def _signal(self, sig: int) -> None:
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


class LocalEndpoint:
    """Context manager: tritonserver on REPO/local and the transformer in front of it, both on `host`."""

    def __init__(self, repo: str | Path, index: str | Path | None = None, host: str = "127.0.0.1",
                 http_port: int | None = None, grpc_port: int | None = None, *,
                 triton_http_port: int | None = None, triton_grpc_port: int | None = None,
                 limits: ServingLimits = ServingLimits(), startup_timeout: float = 180.0, stop_timeout: float = 10.0,
                 log_dir: str | Path | None = None):
        self.repo = Path(repo)
        self.index = Path(index) if index is not None else None
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

    def start(self) -> None:
        read_repository(self.repo)
        if self.index is not None and not self.index.is_file():
            raise FileNotFoundError(f"index {self.index} does not exist (build one with `omniretriever index build`)")
        self._workdir = Path(tempfile.mkdtemp(prefix="omniretriever-serve-"))
        logs = self.log_dir or self._workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        triton = _Server("tritonserver", self._triton_argv(), self._triton_env(), logs / "tritonserver.log")
        self._servers.append(triton)
        self._wait(triton, [f"{self.triton_http_url}/v2/health/ready", f"{self.triton_http_url}/v2/models/{ENCODER_MODEL}/ready"])
        transformer = _Server("transformer", self._transformer_argv(), self._transformer_env(), logs / "transformer.log")
        self._servers.append(transformer)
        self._wait(transformer, [f"{self.http_url}/v2/health/ready"] + [f"{self.http_url}/v2/models/{m}/ready" for m in self.models])

    def stop(self) -> None:
        """Stop the transformer, then Triton; remove the private work directory (logs survive only in log_dir)."""
        for server in reversed(self._servers):
            server.stop(self.stop_timeout)
        self._servers = [s for s in self._servers if s.proc.poll() is None]
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def check_alive(self) -> None:
        """Raise ServingError, with the log's errors, if either server has exited."""
        for server in self._servers:
            server.check_alive()

    def _wait(self, server: _Server, urls: list[str]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            server.check_alive()
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
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libs, env.get("LD_LIBRARY_PATH")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        return env

    def _transformer_argv(self) -> list[str]:
        argv = [sys.executable, "-m", "serving.transformer", "--model_dir", str(production_dir(self.repo).resolve()),
                "--predictor_host", f"{self.host}:{self.ports['triton_grpc']}", "--predictor_protocol", "grpc-v2",
                "--host", self.host, "--http_port", str(self.ports["http"]), "--grpc_port", str(self.ports["grpc"]),
                "--grace_seconds", "2", *self.limits.to_args()]
        return argv + (["--index", str(self.index.resolve())] if self.index is not None else [])

    def _transformer_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        return env

    def describe(self) -> str:
        return json.dumps({"transformer": {"http": self.http_url, "grpc": self.grpc_url, "models": self.models},
                           "triton": {"http": self.triton_http_url, "grpc": self.triton_grpc_url, "model": ENCODER_MODEL}},
                          indent=2)
