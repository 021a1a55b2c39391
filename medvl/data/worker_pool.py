"""Chunks of paths read in worker processes, surviving a decoder that crashes its process.

:func:`run_chunked` hands each finished chunk's outcomes to a sink as they come, holding only
the few chunks in flight, so a batch job's memory does not grow with the number of files. A
file whose decoder segfaults takes its worker down; the chunks in flight then are retried one
file per task until the culprit is alone, and it is recorded as a failure, not retried forever.
Worker processes are started with ``spawn`` (safe when torch threads are running).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from medvl.data.file_walk import Outcome

__all__ = ["CRASH_REASON", "run_chunked"]

logger = logging.getLogger(__name__)

CRASH_REASON = "reading this file crashed the worker process (decoder fault); file skipped"
IN_FLIGHT = 4  # chunks per worker submitted ahead of the one being collected


def run_chunked(
    fn: Callable[..., list[Outcome]],
    chunks: Iterable[list[str]],
    args: tuple,
    sink: Callable[[list[str], list[Outcome]], None],
    *,
    workers: int,
) -> None:
    """Apply ``fn(chunk, *args)`` to each chunk in ``workers`` processes; hand results to ``sink``.

    ``sink(chunk, outcomes)`` is called once per path, chunks in any order. ``workers <= 1``
    runs in this process. When a worker dies (a decoder segfault), the chunks in flight are
    retried one path per task in a fresh pool, a path that still kills its worker when run
    alone is handed on as ``("failure", CRASH_REASON)``, and the other chunks go on.
    """
    if workers <= 1:
        for chunk in chunks:
            sink(chunk, fn(chunk, *args))
        return
    todo = iter(chunks)
    while suspects := _pool_pass(fn, todo, args, workers, sink):
        logger.warning("a worker process died; retrying %d files one at a time", len(suspects))
        while suspects:
            singles = iter([[p] for p in suspects])
            left = _pool_pass(fn, singles, args, workers, sink) + [p for (p,) in singles]
            if len(left) == len(suspects):  # no file finished before the crash: isolate the first
                if _pool_pass(fn, iter([left[:1]]), args, 1, sink):
                    sink(left[:1], [("failure", CRASH_REASON)])
                left = left[1:]
            suspects = left


def _pool_pass(
    fn: Callable[..., list[Outcome]],
    chunks: Iterator[list[str]],
    args: tuple,
    workers: int,
    sink: Callable[[list[str], list[Outcome]], None],
) -> list[str]:
    """Run ``chunks`` in one pool until they run out or a worker dies.

    Returns the paths of the chunks in flight when the pool broke (empty when it did not);
    chunks not yet taken stay in the iterator. At most ``IN_FLIGHT`` chunks per worker wait
    at a time, so finished outcomes never pile up here.
    """
    broken: list[str] = []
    in_flight: deque[tuple[list[str], Future]] = deque()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for chunk in chunks:
            try:
                in_flight.append((chunk, pool.submit(fn, chunk, *args)))
            except BrokenProcessPool:
                broken.extend(chunk)
                break
            full = len(in_flight) >= IN_FLIGHT * workers
            if full and not _finish(in_flight.popleft(), sink, broken):
                break
        while in_flight:
            _finish(in_flight.popleft(), sink, broken)
    return broken


def _finish(
    task: tuple[list[str], Future],
    sink: Callable[[list[str], list[Outcome]], None],
    broken: list[str],
) -> bool:
    """Hand a finished chunk to ``sink``; ``False`` (and its paths in ``broken``) if it broke."""
    chunk, future = task
    try:
        outcomes = future.result()
    except BrokenProcessPool:
        broken.extend(chunk)
        return False
    sink(chunk, outcomes)
    return True
