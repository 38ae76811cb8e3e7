"""An asyncio micro-batcher: concurrent HTTP requests become one batched LM call in a worker thread.

Requests arriving close together (each within ``window_s`` of the last, ``10 * window_s`` at most, or
until ``max_batch`` rows wait) are grouped by a key (work kind plus whatever one LM call must share, e.g.
``max_tokens``) and each group is handed to ``run_batch`` in a worker thread, one call at a time: the LM
is not thread-safe, and one batched forward pass is far cheaper than the same rows one by one. While a
call runs, new requests queue up and form the next batch, so under load the window costs nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MicroBatcher"]


@dataclass
class _Pending:
    key: Hashable
    item: Any
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collect items for up to ``window_s`` seconds or ``max_batch`` items, run each key's group as one call.

    Args:
        run_batch: ``run_batch(key, items) -> results`` (same length and order); runs in a worker thread.
        window_s: the gap between arrivals that closes a batch (a lone item waits this long).
        max_batch: most items per call.
    """

    def __init__(self, run_batch: Callable[[Hashable, list[Any]], Sequence[Any]], *, window_s: float = 0.005,
                 max_batch: int = 64) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"max_batch must be >= 1 and window_s >= 0; got {max_batch}, {window_s}")
        self.run_batch = run_batch
        self.window_s = window_s
        self.max_batch = max_batch
        self.calls = 0
        self.rows = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the collecting loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(self, key: Hashable, item: Any) -> Any:
        """Queue one item and wait for its result (or its exception)."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(key, item, future))
        return await future

    async def submit_many(self, key: Hashable, items: Sequence[Any]) -> list[Any]:
        """Queue several items (one request's rows) together and wait for all of them."""
        return list(await asyncio.gather(*(self.submit(key, item) for item in items)))

    async def _collect(self) -> list[_Pending]:
        """Wait for an item, then keep taking items while they arrive less than ``window_s`` apart.

        A burst (clients resubmitting together after a batch) is parsed by the event loop over tens of
        milliseconds; a fixed window would cut it into a small and a large batch. Bounded by ``max_batch``
        and by ``10 * window_s`` in all, so a lone request waits one window.
        """
        assert self._queue is not None
        batch = [await self._queue.get()]
        hard_stop = time.monotonic() + 10 * self.window_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = min(self.window_s, hard_stop - time.monotonic())
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            groups: dict[Hashable, list[_Pending]] = {}
            for pending in batch:
                if not pending.future.done():  # the client may have gone away
                    groups.setdefault(pending.key, []).append(pending)
            for key, members in groups.items():
                await self._run(key, members)

    async def _run(self, key: Hashable, members: list[_Pending]) -> None:
        """One LM call for the group; if it fails, rerun rows one by one so one bad row fails alone."""
        self.calls += 1
        self.rows += len(members)
        try:
            results = list(await asyncio.to_thread(self.run_batch, key, [m.item for m in members]))
            if len(results) != len(members):  # a backend bug; raised here so no request waits forever
                raise RuntimeError(f"the LM returned {len(results)} results for {len(members)} rows")
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            if len(members) == 1:
                _settle(members[0].future, exc=exc)
                return
            for member in members:
                await self._run(key, [member])
            return
        for member, result in zip(members, results, strict=True):
            _settle(member.future, result=result)


def _settle(future: asyncio.Future, *, result: Any = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
