"""Run the whole pipeline on this machine with kfp.local's SubprocessRunner (use_venv=False).

Every step runs as a subprocess in this Python environment, in DAG order (a ParallelFor's iterations at
once, each a record of its own: "index-shard", "index-shard #2", ...). Everything a
run writes goes under its pipeline root (runs/pipeline/omniretriever-<timestamp>/<step>/...), and
kfp.local's own log (every step's output) is kept beside it as pipeline.log. What the run did is read
back from there: the outputs each step wrote (executor_output.json), and from the log when each step
started and finished and, for a failed step, the error it ended with.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from model.defaults import BATCH_SIZE, TRAIN_STEPS

DEFAULT_ROOT = Path("runs/pipeline")
LOG_NAME = "pipeline.log"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_ERROR = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failure)\b.*)$")
_PROGRESS = re.compile(r"\d+%\|")


@dataclass
class StepRecord:
    name: str
    status: str = "running"  # running | succeeded | failed
    started: float = 0.0
    finished: float | None = None
    error: str | None = None  # the last exception line a failed step printed
    attempts: int = 1  # more than 1 when the step was retried

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    @property
    def task(self) -> str:
        """The pipeline task this record is a run of: "index-shard" for "index-shard #2" (a ParallelFor's)."""
        return self.name.split(" #", 1)[0]


class StepLog(io.TextIOBase):
    """A stdout stand-in that keeps kfp.local's log, learns when each step starts and ends and what a
    failed step's last error was, and shows either everything (verbose) or one line per step event."""

    def __init__(self, log: TextIO, echo: TextIO, verbose: bool = False,
                 on_event: Callable[[StepRecord], None] | None = None):
        self.log, self.echo, self.verbose, self.on_event = log, echo, verbose, on_event
        self.steps: dict[str, StepRecord] = {}
        self._current: StepRecord | None = None
        self._last_error: str | None = None
        self._last_line: str | None = None
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.verbose:
            self.echo.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.echo.flush()

    def _line(self, line: str) -> None:
        if (m := _START.search(line)) and not line.startswith(" "):
            name = m.group(1)
            runs = [s for s in self.steps.values() if s.task == name]
            failed = next((s for s in reversed(runs) if s.status == "failed"), None)
            if failed is not None:  # a retry of the failed run
                key, attempts = failed.name, failed.attempts + 1
            else:  # the first run, or another iteration of a ParallelFor (running beside the others)
                key, attempts = (name if not runs else f"{name} #{len(runs) + 1}"), 1
            self._current = self.steps[key] = StepRecord(key, started=time.time(), attempts=attempts)
            self._last_error = self._last_line = None
            self._event(self._current)
        elif (m := _END.search(line)) and not line.startswith(" "):
            running = [s for s in self.steps.values() if s.task == m.group(1) and s.status == "running"]
            step = running[0] if running else self.steps.setdefault(m.group(1), StepRecord(m.group(1),
                                                                                          started=time.time()))
            step.finished = time.time()
            step.status = "succeeded" if m.group(2) == "SUCCESS" else "failed"
            if step.status == "failed":
                step.error = self._last_error or self._last_line or "no error message in its log"
            self._current = None
            self._event(step)
        elif self._current is not None and line.strip():
            text = line.strip()
            for part in text.split("\r"):  # progress bars redraw with carriage returns
                if _ERROR.match(part):
                    self._last_error = part.strip()
            self._last_line = text.split("\r")[-1]
            if not self.verbose and _PROGRESS.search(text) and self.echo.isatty():
                self.echo.write("\r    " + self._last_line[:110].ljust(110))
                self.echo.flush()

    def _event(self, step: StepRecord) -> None:
        if self.on_event is not None:
            self.on_event(step)


@dataclass
class LocalRun:
    """What a local pipeline run did, read back from its pipeline root and its log."""

    root: Path  # this run's directory under the pipeline root
    log: Path
    arguments: dict[str, Any]
    steps: list[StepRecord]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> parameters and artifacts
    error: str | None = None  # kfp.local's message when the run failed

    @property
    def failed_step(self) -> StepRecord | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.failed_step is None

    def parameter(self, step: str, name: str, default: Any = None) -> Any:
        return self.outputs.get(step, {}).get("parameters", {}).get(name, default)

    def artifact(self, step: str, name: str) -> dict[str, Any] | None:
        return self.outputs.get(step, {}).get("artifacts", {}).get(name)


def local_arguments(data: str | Path, *, train_steps: int = TRAIN_STEPS, config: str = "tiny", batch_size: int = BATCH_SIZE,
                    seed: int = 0, tracking_uri: str | None = None, dvc_remote: str = "",
                    model_name: str = "omniretriever", checkpoint: str | Path = "",
                    checkpoint_cache: str | Path | None = None, **overrides: Any) -> dict[str, Any]:
    """The pipeline arguments of a run on this machine: the local dataset, no pull, MLflow in a local
    sqlite store (MLFLOW_TRACKING_URI when set), two index shards (taking turns on a Milvus Lite store),
    deploy to the local endpoint. A local `checkpoint`
    directory is made absolute (every step must find it); downloaded checkpoints go to this machine's
    cache ($OMNIRETRIEVER_CACHE/checkpoints or .cache/omniretriever/checkpoints) unless `checkpoint_cache`."""
    from model.omni.fetch import default_cache

    checkpoint = str(checkpoint)
    if checkpoint and "://" not in checkpoint:
        checkpoint = str(Path(checkpoint).resolve())
    return {"data": str(Path(data).resolve()), "dvc_remote": dvc_remote, "pull_data": False, "config": config,
            "checkpoint": checkpoint, "checkpoint_cache": str(Path(checkpoint_cache or default_cache()).resolve()),
            "train_steps": train_steps, "batch_size": batch_size, "seed": seed,
            "mlflow_tracking_uri": tracking_uri or default_tracking_uri(), "model_name": model_name,
            "deploy_target": "local", "index_shards": 2, **overrides}


def default_tracking_uri() -> str:
    """The store `omniretriever train` uses (registry.store.resolve_uri: $MLFLOW_TRACKING_URI, else the
    embedded sqlite store), as an absolute URI so that every step reaches the same one."""
    from registry.store import resolve_uri

    return resolve_uri(None)


@contextlib.contextmanager
def _stdout(stream: StepLog) -> Iterator[None]:
    with contextlib.redirect_stdout(stream):
        yield


def run_local(arguments: dict[str, Any], root: str | Path = DEFAULT_ROOT, *, pipeline: Any = None,
              verbose: bool = False, echo: TextIO | None = None,
              on_event: Callable[[StepRecord], None] | None = None) -> LocalRun:
    """Run the pipeline (its local flavour unless `pipeline` is given) with `arguments` under `root`.
    A failed step does not raise: the returned LocalRun names it and its error."""
    from kfp import local

    from pipelines.pipeline import build_pipeline, local_steps

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    pipeline = pipeline or build_pipeline(local_steps(), cluster=False)
    before = set(root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    log_path = root / f".{LOG_NAME}.{os.getpid()}"
    error = None
    with open(log_path, "w") as log:
        stream = StepLog(log, echo or sys.stdout, verbose, on_event)  # the real stdout, before the redirect
        with _stdout(stream):
            try:
                pipeline(**arguments)
            except RuntimeError as exc:  # kfp.local: "Pipeline ... finished with status FAILURE ..."
                error = _ANSI.sub("", str(exc))
    _drop_handlers_on(stream)
    if error is None:  # kfp.local does not always log the end of each of a ParallelFor's iterations
        for step in stream.steps.values():
            if step.status == "running":
                step.status, step.finished = "succeeded", time.time()
    run_dir = _new_run_dir(root, before)
    final_log = run_dir / LOG_NAME if run_dir else root / time.strftime("failed-%Y%m%d-%H%M%S.log")
    os.replace(log_path, final_log)
    run_dir = run_dir or root
    steps = sorted(stream.steps.values(), key=lambda s: s.started)
    return LocalRun(run_dir, final_log, arguments, steps, read_outputs(run_dir), error)


def _drop_handlers_on(stream: StepLog) -> None:
    """Remove logging handlers that were made during the run while stdout was `stream` (kfp.local's, for a
    ParallelFor's threads): once the log is closed, a record they got (Milvus Lite's at exit) would fail."""
    import logging

    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in list(lg.handlers):
            if getattr(handler, "stream", None) is stream:
                lg.removeHandler(handler)


def _new_run_dir(root: Path, before: set[Path]) -> Path | None:
    new = [p for p in root.iterdir() if p.is_dir() and p not in before]
    return max(new, key=lambda p: p.stat().st_mtime) if new else None


def read_outputs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """step -> {"parameters": {...}, "artifacts": {name: {"uri", "metadata"}}} from executor_output.json."""
    outputs = {}
    for path in sorted(run_dir.glob("*/executor_output.json")):
        raw = json.loads(path.read_text())
        artifacts = {name: {"uri": a["artifacts"][0]["uri"], "metadata": a["artifacts"][0].get("metadata", {})}
                     for name, a in raw.get("artifacts", {}).items() if a.get("artifacts")}
        outputs[path.parent.name] = {"parameters": raw.get("parameterValues", {}), "artifacts": artifacts}
    return outputs
