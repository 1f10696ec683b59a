"""How arrays are handed to the numba kernels."""
from __future__ import annotations

import numpy as np


def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (no copy).

    numba compiles a kernel once per argument type, and a read-only array (a memory-mapped or
    loaded index's codes) is a different type from a writable one: each kernel input is passed
    read-only, so that one compiled (and disk-cached) specialization serves both, rather than a
    second compile of several seconds the first time the other kind turns up."""
    view = a.view()
    view.flags.writeable = False
    return view
