"""Every numba kernel is cached on disk, so a new process loads it instead of compiling it again
(seconds per kernel): the module-level kernels, and those a factory compiles per code width."""
import importlib
import inspect
import pkgutil

import pytest
from numba.core.registry import CPUDispatcher

import deepcodes.eval
import deepcodes.index
import deepcodes.knn


def kernel_modules():
    for package in (deepcodes.knn, deepcodes.index, deepcodes.eval):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            yield importlib.import_module(info.name)


def made_kernels(module):
    """Kernels built by the module's factories (functions taking the code's word count W)."""
    for name, value in vars(module).items():
        if inspect.isfunction(value) and value.__module__ == module.__name__ and name.lstrip("_").startswith("make_"):
            for W in (1, 2):
                yield f"{name}({W})", value(W)


def compiled_kernels():
    for module in kernel_modules():
        for name, value in vars(module).items():
            if isinstance(value, CPUDispatcher) and value.py_func.__module__ == module.__name__:
                yield f"{module.__name__}.{name}", value
        for name, value in made_kernels(module):
            yield f"{module.__name__}.{name}", value


KERNELS = dict(compiled_kernels())


def test_kernels_were_found():
    # the kernels specialised per shape through a tuple argument (Hamming scan, MIH, ADC), and fast-scan's
    for name in ("knn.hamming._hamming_knn", "index.mih_kernels._mih_knn", "index.kernels._adc_knn",
                 "index.fastscan_kernels.shortlist"):
        assert f"deepcodes.{name}" in KERNELS


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_kernel_is_cached_on_disk(name):
    kernel = KERNELS[name]
    if kernel.targetoptions.get("inline") == "always":
        return   # compiled into its callers, which are cached
    assert type(kernel._cache).__name__ != "NullCache", f"{name} is not compiled with cache=True"
