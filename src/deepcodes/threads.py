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
  two threads gains nothing and loses everything when the threads fight.
"""
from __future__ import annotations

import contextlib
import os
import sys

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


@contextlib.contextmanager
def single_blas():
    """Run the block with one BLAS thread (for small matrix products, where a second thread only
    waits and spins)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield
