"""Bounded, batching access to one model from many concurrent requests.

One worker thread runs every model call, so the model is never used by two threads at once. Requests
wait in a queue; the worker takes the oldest one plus every waiting request it can answer in the same
``model.generate_batch`` call (same forced prefix and generation options), up to ``max_concurrency``.
With ``batching=False`` each request is its own call (the baseline of ``anymodal bench serve``).
At most ``max_concurrency + queue`` requests are admitted at once; the next one gets ``Busy`` (HTTP 429).
Streaming requests and other model calls (embeddings) run alone, in arrival order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import AnyModalError
from ..media import Response, Turn

log = logging.getLogger(__name__)
END = object()  # closes a stream


class Busy(Exception):
    """Every generation slot and queue place is taken."""


@dataclass
class _Job:
    future: asyncio.Future
    conversation: list[Turn] | None = None
    prefill: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    call: Callable[[], Any] | None = None  # a plain model call (embeddings)
    stream: asyncio.Queue | None = None  # stream pieces go here, then END

    def batch_key(self) -> tuple | None:
        """Jobs with equal keys share one generate_batch call; None runs alone."""
        if self.call is not None or self.stream is not None:
            return None
        return (self.prefill, tuple(sorted(self.options.items())))


class Scheduler:
    def __init__(self, model, max_concurrency: int = 8, queue: int = 32, batching: bool = True,
                 batch_wait_s: float = 0.005):
        if max_concurrency < 1 or queue < 0:
            raise ValueError(f"max_concurrency must be >= 1 and queue >= 0, got {max_concurrency} and {queue}")
        self.model, self.max_concurrency, self.queue_size = model, max_concurrency, queue
        self.batching, self.batch_wait_s = batching, batch_wait_s
        self.admitted = 0  # requests waiting or running
        self.batches = 0  # model calls made (for /health and the benchmark)
        self._waiting: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="anymodal-model")

    # ------------------------------------------------------------------------------------ public
    async def generate(self, conversation: list[Turn], prefill: str = "", **options: Any) -> Response:
        job = _Job(self._loop().create_future(), conversation, prefill, options)
        self._admit(job)
        return await self._result(job)

    async def stream(self, conversation: list[Turn], prefill: str = "", **options: Any):
        """Yield the parts of ``model.stream`` (text pieces, then media) as they come."""
        pieces: asyncio.Queue = asyncio.Queue()
        job = _Job(self._loop().create_future(), conversation, prefill, options, stream=pieces)
        self._admit(job)
        done = asyncio.ensure_future(self._result(job))
        while (piece := await pieces.get()) is not END:
            yield piece
        await done  # raises the generation's error, if any

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the model thread (between generations)."""
        job = _Job(self._loop().create_future(), call=fn)
        self._admit(job)
        return await self._result(job)

    @property
    def full(self) -> bool:
        return self.admitted >= self.max_concurrency + self.queue_size

    def busy(self) -> Busy:
        return Busy(f"the server is busy: {self.admitted} requests are running or queued (limit "
                    f"{self.max_concurrency} running + {self.queue_size} queued); retry shortly")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------ internals
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._work())
        return loop

    def _admit(self, job: _Job) -> None:
        if self.full:
            raise self.busy()
        self.admitted += 1
        self._waiting.append(job)
        self._wake.set()

    async def _result(self, job: _Job) -> Any:
        try:
            return await job.future
        finally:
            self.admitted -= 1

    def _next_batch(self) -> list[_Job]:
        first = self._waiting.pop(0)
        key = first.batch_key()
        batch = [first]
        if key is not None and self.batching:
            for job in list(self._waiting):
                if len(batch) >= self.max_concurrency:
                    break
                if job.batch_key() == key:
                    batch.append(job)
                    self._waiting.remove(job)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if self.batching and self.batch_wait_s and self.admitted > 1:
                await asyncio.sleep(self.batch_wait_s)  # let requests sent together arrive together
            while self._waiting:
                batch = self._next_batch()
                self.batches += 1
                try:
                    results = await loop.run_in_executor(self._executor, self._run, batch, loop)
                except Exception as e:  # handed to the requests; the worker keeps serving
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(e)
                    continue
                for job, result in zip(batch, results):
                    if job.future.done():
                        continue
                    if isinstance(result, Exception):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)
            self._wake.clear()

    def _run(self, batch: list[_Job], loop: asyncio.AbstractEventLoop) -> list[Any]:
        """On the model thread: one call for the whole batch."""
        first = batch[0]
        if first.call is not None:
            return [first.call()]
        if first.stream is not None:
            try:
                for piece in self.model.stream(first.conversation, prefill=first.prefill, **first.options):
                    loop.call_soon_threadsafe(first.stream.put_nowait, piece)
            finally:
                loop.call_soon_threadsafe(first.stream.put_nowait, END)
            return [None]
        try:
            return self.model.generate_batch([j.conversation for j in batch], prefill=first.prefill, **first.options)
        except AnyModalError:
            if len(batch) == 1:
                raise
            log.warning("a batch of %d failed; answering its requests one by one", len(batch))
            return [self._one(j) for j in batch]

    def _one(self, job: _Job) -> Response | Exception:
        try:
            return self.model.generate_batch([job.conversation], prefill=job.prefill, **job.options)[0]
        except AnyModalError as e:
            return e

