"""Steps a ``MultiStreamEngine`` from an asyncio server: batches what is ready, with a bounded wait.

When a block is ready the scheduler waits for the other streams that are still filling one, so
that they share the session call, but no block waits more than ``max_wait`` seconds for them; then runs the graph on a worker thread
(the event loop keeps reading clients meanwhile) and hands the results to ``on_results``. Blocks
that become ready while the graph runs go into the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .engine import BlockResult, MultiStreamEngine

LOG = logging.getLogger("ssamba_stream.serving")


class BatchScheduler:
    """Runs ``engine`` whenever a stream has a block: one session call for all ready streams."""

    def __init__(
        self,
        engine: MultiStreamEngine,
        on_results: Callable[[list[BlockResult]], None],
        max_wait: float = 0.05,
        max_batch: int | None = None,
    ) -> None:
        self.engine = engine
        self.on_results = on_results
        self.max_wait = max_wait
        self.max_batch = max_batch
        self.steps = 0
        self._wake = asyncio.Event()
        self._stepped = asyncio.Condition()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ssamba-step")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="ssamba batch scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def notify(self) -> None:
        """A stream has a whole block (or ended): step when a block is ready."""
        self._wake.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checked after every step (for drains and backpressure)."""
        if predicate():  # the common case (a client within its backlog) without the lock
            return
        async with self._stepped:
            await self._stepped.wait_for(predicate)

    def _filling(self) -> bool:
        """Some stream is still receiving audio and has no whole block yet."""
        return any(not s.finished and not s.in_flight and not s.ready_blocks for s in self.engine.streams)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        since = loop.time()  # every ready block arrived after this
        while True:
            if not self.engine.ready:
                async with self._stepped:  # a stream may have ended: let drains re-check
                    self._stepped.notify_all()
                self._wake.clear()
                await self._wake.wait()
                since = loop.time()
                continue
            deadline = since + self.max_wait  # no block waits longer for company
            while self._filling() and (left := deadline - loop.time()) > 0:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
            since = loop.time()
            batch = self.engine.gather(self.max_batch)
            try:
                outputs = await loop.run_in_executor(self._executor, self.engine.run, batch)
                results = self.engine.scatter(batch, outputs)
            except Exception:  # a failing graph call must not stop the server; its blocks are lost
                LOG.exception("session call failed for %d streams", len(batch.streams))
                results = self.engine.release(batch)
            self.steps += 1
            self.on_results(results)
            async with self._stepped:
                self._stepped.notify_all()
