"""One way to run a function over many jobs in worker processes, in order, with a progress bar.

Decoding a split into the feature cache, generating clips and probing triples all use it. A worker
that raises stops the map with that error (typed errors survive the trip: they define __reduce__); a
worker that dies outright stops it with BrokenProcessPool instead of hanging.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")


def chunk_size(jobs: int, workers: int) -> int:
    """Jobs handed to a worker at a time: enough to amortise the hand-off, few enough to balance (<= 16)."""
    return max(1, min(16, jobs // (workers * 8)))


def fork_safe_context() -> str:
    """"fork" while this process runs one thread (fast: workers inherit what is imported), else "forkserver":
    a fork copies locks other threads may hold (an allocator's background thread, a thread pool's), and the
    child can hang on one for ever."""
    try:
        threads = len(os.listdir("/proc/self/task"))  # native threads too, not only Python's
    except OSError:
        threads = threading.active_count()
    return "fork" if threads == 1 else "forkserver"


def map_with_progress(fn: Callable[[J], R], jobs: Sequence[J], *, workers: int, label: str, progress: bool = True,
                      transient: bool = False, context: str | None = "forkserver",
                      initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()) -> Iterator[R]:
    """fn(job) for every job, in the order of `jobs`, shown as a rich progress bar named `label`.

    `workers` processes from the multiprocessing start method `context` (None: the platform's default);
    with workers <= 1 and no `initializer` the jobs run in this process. `initializer(*initargs)` runs
    once in each worker, to set up what every job there shares."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=transient) as bar:
        task = bar.add_task(label, total=len(jobs))
        for result in _map(fn, jobs, workers, context, initializer, initargs):
            bar.advance(task)
            yield result


def _map(fn: Callable[[J], R], jobs: Sequence[J], workers: int, context: str | None,
         initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> Iterator[R]:
    if workers <= 1 and initializer is None:
        yield from map(fn, jobs)
        return
    ctx = multiprocessing.get_context(context)
    with ProcessPoolExecutor(max(1, workers), mp_context=ctx, initializer=initializer, initargs=initargs) as pool:
        yield from pool.map(fn, jobs, chunksize=chunk_size(len(jobs), max(1, workers)))
