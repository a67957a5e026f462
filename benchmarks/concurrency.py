"""Running a benchmark's calls at the same time (concurrent videos, clients).

Kept apart from the benchmarks themselves so that importing it pulls in nothing else (the GPU
suite installs on machines without the Triton client).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def concurrently(fns: Sequence[Callable[[], T]]) -> list[T]:
    """Run the calls in one thread each, all released together (one call runs here); their
    results in order; the first error re-raised."""
    if len(fns) == 1:
        return [fns[0]()]
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(fns))

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fns[i]()
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(fns))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
