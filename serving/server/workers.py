"""Bounded worker pools by kind of work, with a queueing deadline (503 past it).

kserve runs preprocessing in the loop's default executor, shared by every request: a burst of heavy clips
queues captions behind it. Here each kind of work has its own pool."""

from __future__ import annotations

import asyncio
from concurrent import futures
from typing import Any, Callable

from serving.limits import ServingLimits
from serving.server.status import Overloaded

DECODE_WORKERS = 2  # threads decoding request bodies (bounded work each: see serving.requests)


class Workers:
    """Bounded thread pools by kind of work: "decode" (request bodies), "text" (caption-only requests) and
    "media" (requests with video or audio), so a burst of heavy clips cannot hold up captions. A request
    waits at most `queue_timeout_seconds` for a free worker of its kind, then gets Overloaded (503)."""

    def __init__(self, limits: ServingLimits):
        self.sizes = {"decode": DECODE_WORKERS, "text": limits.text_workers, "media": limits.media_workers}
        self.timeout = limits.queue_timeout_seconds
        self._pools = {kind: futures.ThreadPoolExecutor(n, thread_name_prefix=f"omniretriever-{kind}")
                       for kind, n in self.sizes.items()}
        self._slots: dict[str, asyncio.Semaphore] = {}  # made on the serving loop, on first use

    async def run(self, kind: str, fn: Callable, *args: Any) -> Any:
        """fn(*args) on a worker of `kind`; its slot is freed when fn returns, even if the caller went away."""
        slots = self._slots.get(kind)
        if slots is None:
            slots = self._slots[kind] = asyncio.Semaphore(self.sizes[kind])
        try:
            await asyncio.wait_for(slots.acquire(), self.timeout)
        except TimeoutError:
            raise Overloaded(f"all {self.sizes[kind]} {kind} workers stayed busy for {self.timeout:g} s "
                             "(queue_timeout_seconds): retry later") from None
        loop = asyncio.get_running_loop()
        try:
            job = self._pools[kind].submit(fn, *args)
        except BaseException:
            slots.release()
            raise
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(slots.release))
        return await asyncio.wrap_future(job)
