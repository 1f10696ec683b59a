"""One thread setting for every pool deepcodes drives: numba's kernels, faiss's OpenMP and the BLAS
libraries (through threadpoolctl), and torch's intra-op pool when torch is loaded.

These pools do not know about each other. On a machine with few cores, a pool whose threads
spin after their work is done (OpenBLAS spins for about 0.1 s, GNU OpenMP for a few milliseconds)
takes the cores the next pool needs: an ITQ fit on 10,000 50-d vectors took 0.5 s with one BLAS
thread and 1.5-16 s with the default two while other processes shared the 2 cores. So:

* ``set_num_threads(n)`` / the environment variable ``DEEPCODES_NUM_THREADS`` caps every pool at
  ``n`` threads (default: all cores);
* the fits whose matrix products are small (ITQ's rotation, OPQ's Procrustes steps) run their BLAS
  calls on one thread whatever the setting (:func:`single_blas`): splitting a 50 x 50 product over
  two threads gains nothing and loses everything when the threads fight;
* so do the searches of every index, whose parallel work is numba's: their BLAS products (the
  queries' tables, centroid distances, a front's projection) are small, and OpenBLAS threads left
  spinning after one took the cores from the numba kernel that follows it (VLQ fast scan, 1,000
  queries at nprobe 4: 32,000 q/s with two BLAS threads, 51,000 with one).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import InputError
from .validation import check_int

ENV = "DEEPCODES_NUM_THREADS"
# What each library reads at start-up; set for libraries not loaded yet when the setting is made.
_LIBRARY_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")

_setting: int | None = None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _from_env(value: str) -> int:
    try:
        return check_int(int(value), ENV, low=1)
    except ValueError:
        raise InputError(f"{ENV} must be a positive integer, got {value!r}") from None


def set_num_threads(n: int | None) -> int:
    """Use at most ``n`` threads in numba, faiss (OpenMP), BLAS and torch; ``None`` restores the
    default (every core this process may run on). Returns the number now in force.

    Libraries not loaded yet are capped through their environment variables, so the setting also
    holds for them. numba cannot start more threads than it was loaded with (``NUMBA_NUM_THREADS``),
    and its setting applies to the calling thread.
    """
    global _setting
    n = _cores() if n is None else check_int(n, "n_threads", low=1)
    _setting = n
    for var in _LIBRARY_ENV:
        os.environ[var] = str(n)
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    return n


def get_num_threads() -> int:
    """The number of threads deepcodes uses (``set_num_threads``, else ``DEEPCODES_NUM_THREADS``,
    else every core)."""
    if _setting is not None:
        return _setting
    value = os.environ.get(ENV)
    return _from_env(value) if value else _cores()


def configure_from_env() -> None:
    """Apply ``DEEPCODES_NUM_THREADS`` if it is set (called when deepcodes is imported)."""
    value = os.environ.get(ENV)
    if value:
        set_num_threads(_from_env(value))


# threadpoolctl's controller of the BLAS libraries loaded, made again whenever modules have been
# imported since (scipy, faiss and torch each bring their own BLAS): finding the libraries costs
# about 0.1 ms, limiting them through a made controller about 15 us, which a one-query search can
# afford.
_controller: tuple[int, object] | None = None


def _blas_controller():
    global _controller
    loaded = len(sys.modules)
    if _controller is None or _controller[0] != loaded:
        from threadpoolctl import ThreadpoolController

        _controller = (loaded, ThreadpoolController())
    return _controller[1]


# BLAS's thread count is one setting for the whole process: blocks that overlap in several threads
# (a service's concurrent searches) share one limit, set by the first to enter and lifted by the
# last to leave, so that none restores a count another is still running under.
_single_lock = threading.Lock()
_single_users = 0
_single_limit = None


@contextlib.contextmanager
def single_blas():
    """Run the block with one BLAS thread (for small matrix products, where a second thread only
    waits and spins). Also a decorator; safe to overlap across threads. The OpenBLAS of numpy's
    wheels (pthreads build) applies a count set from a thread other than the main one to neither
    that thread's products nor the others': there the block runs with the process's count."""
    global _single_users, _single_limit
    with _single_lock:
        if _single_users == 0:
            _single_limit = _blas_controller().limit(limits=1, user_api="blas")
        _single_users += 1
    try:
        yield
    finally:
        with _single_lock:
            _single_users -= 1
            if _single_users == 0:
                _single_limit.restore_original_limits()
                _single_limit = None


# Rows of each part of a split product: fixed, so that the product's rounding (which depends on
# how many rows BLAS is given at once) does not change with the number of threads; large enough
# that a part (about 0.6 ms at 128 x 1024) pays for its hand-over to a thread (20-50 us).
ROWS_PER_PART = 128
_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _row_pool(n: int):
    """A thread pool of at least ``n`` workers, kept for the next product."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] < n:
            _pool = (n, ThreadPoolExecutor(max_workers=n, thread_name_prefix="deepcodes-matmul"))
        return _pool[1]


def matmul_rows(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A @ B`` for 2-d float32 ``A`` (n, k) and ``B`` (k, m): (n, m) float32, computed in parts of
    :data:`ROWS_PER_PART` rows of A, the parts spread over up to :func:`get_num_threads` Python
    threads that each run one-thread BLAS. The result is the same whatever the number of threads
    (within float32 rounding of the one-call product, as with any other split into batches).

    For the searches (which run under :func:`single_blas`): a query batch's product with the
    centroids is the one part of an IVF or VLQ search outside the parallel numba kernel, about a
    sixth of a fast-scan VLQ search's time on one thread, and BLAS's own threads cannot take it
    (they spin after it and slow the kernel that follows). The parts go to other threads only from
    the main thread, the only one whose BLAS limit numpy's OpenBLAS applies to the others'
    products; elsewhere they run one after the other."""
    out = np.empty((A.shape[0], B.shape[1]), dtype=np.float32)
    starts = range(0, A.shape[0], ROWS_PER_PART)

    def part(start):
        np.matmul(A[start:start + ROWS_PER_PART], B, out=out[start:start + ROWS_PER_PART])

    n = min(get_num_threads(), len(starts))
    if n <= 1 or threading.current_thread() is not threading.main_thread():
        for start in starts:
            part(start)
    else:
        for f in [_row_pool(n).submit(part, start) for start in starts]:
            f.result()
    return out
