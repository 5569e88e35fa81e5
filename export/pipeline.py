"""Bounded, ordered parallel map for inference: batches run side by side on a thread pool
while results are consumed in input order, with only a few items read ahead (a lazy input,
such as the strips of a scene larger than memory, stays lazy).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable


def pipelined(fn: Callable, items: Iterable, workers: int, on_done: Callable[[object, object], None]) -> None:
    """``on_done(item, fn(item))`` for every item, in the order of ``items``, with ``workers``
    calls of ``fn`` side by side and at most ``2 * workers`` items taken from ``items`` ahead of
    the oldest unfinished one (so a lazy ``items`` bounds memory)."""
    workers = max(1, workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="infer") as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= 2 * workers:
                done, fut = pending.popleft()
                on_done(done, fut.result())
        while pending:
            done, fut = pending.popleft()
            on_done(done, fut.result())
