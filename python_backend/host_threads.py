"""Threads of the host libraries in a process that tracks video: numpy's BLAS gets one.

The tracker's heavy work is torch's (its own thread pool over the cores). numpy's BLAS
(OpenBLAS in the numpy wheels) only serves small host math, SAMURAI's Kalman filter (4x4
solves per object and frame), yet each call wakes its own pool of busy-waiting threads, which
then compete with torch's threads for the same cores. Measured with the orchestration benchmark
on the 2-core VM, SAMURAI, 16 objects, compact answers: `np.linalg.solve` 300 us a call inside
the tracker (8 us with one BLAS thread) and 90 against 66 ms a frame. `threadpoolctl` (the
library scikit-learn uses for this) sets the loaded BLAS's thread count at run time, which an
environment variable cannot do once numpy is loaded (Triton's Python stub loads it first).
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits

HOST_BLAS_THREADS = 1


def limit_host_blas_threads(threads: int = HOST_BLAS_THREADS) -> None:
    """Every BLAS library loaded in this process uses `threads` threads from now on (the whole
    process: call it where a process starts serving, not in library code)."""
    threadpool_limits(limits=threads, user_api="blas")
