"""One small fitted instance of every persistable class (``persist.CLASS_MODULES``), for the tests
that attack their files and their entry points.

A class gets its instance from its own factory here when it has one; otherwise a coder-like class
(``fit``) is built from the small settings of :data:`SMALL` its constructor accepts and fitted on
the digits with their labels (:func:`generic_coder`), so a class added to ``CLASS_MODULES`` is
attacked without any change here. A class neither way can build (an index, a wrapper that needs
another object) makes ``test_every_persistable_class_has_a_factory`` fail, naming it.
"""
import functools
import inspect

import numpy as np

from deepcodes import persist

CODER_NAMES = [n for n, m in persist.CLASS_MODULES.items() if m.startswith("deepcodes.coders.")]
INDEX_NAMES = [n for n, m in persist.CLASS_MODULES.items() if m.startswith("deepcodes.index.")]


@functools.lru_cache(maxsize=None)
def data():
    """400 UCI digits in [0, 1] (400, 64) float32 and their labels (400,) int64."""
    from deepcodes.data.datasets import load_digits

    X, y = load_digits()
    return X[:400].astype(np.float32) / 16.0, y[:400].astype(np.int64)


def queries() -> np.ndarray:
    return data()[0][:12]


def _itq():
    from deepcodes.coders import ITQ

    return ITQ(n_bits=16, n_iter=5, random_state=0).fit(data()[0])


def _pq():
    from deepcodes.coders import PQ

    return PQ(M=4, n_bits_per_code=4, n_iter=5, random_state=0).fit(data()[0])


def _gsl():
    from deepcodes.coders.gsl import GSLQuantizer

    X, y = data()
    return GSLQuantizer(n_bits=8, quantizer="opq", dim=8, hidden=(16,), epochs=1, quantization="none",
                        batch_size=64, max_train=None, random_state=0).fit(X, y)


def _own_coder_factories() -> dict:
    """Factories of the coder classes whose small instance needs more than :data:`SMALL` (or would be
    too slow with it); each imports its class only when called."""
    from deepcodes.coders import LSH, OPQ, RQ

    X, y = data()
    deep = dict(n_outer=1, n_inner=3, validation_size=0, random_state=0)

    def deep_coder(module, name, **kwargs):
        import importlib

        return getattr(importlib.import_module(f"deepcodes.coders.{module}"), name)(**kwargs, **deep)

    def wrapped(front_name, model):
        from deepcodes.coders import fronts

        return getattr(fronts, front_name)(model()).fit(X, y)

    return {
        "LSH": lambda: LSH(n_bits=16, random_state=0).fit(X),
        "ITQ": _itq,
        "PQ": _pq,
        "OPQ": lambda: OPQ(M=4, n_bits_per_code=4, n_iter=3, n_outer=2, random_state=0).fit(X),
        "RQ": lambda: RQ(M=2, n_bits_per_code=4, n_iter=5, random_state=0).fit(X),
        "UHBDNN": lambda: deep_coder("bdnn", "UHBDNN", n_bits=16, hidden=(24, 16), n_sweeps=1, itq_iter=3).fit(X),
        "SHBDNN": lambda: deep_coder("bdnn", "SHBDNN", n_bits=8, hidden=(16, 8)).fit(X, y),
        "DeepHash": lambda: deep_coder("deephash", "DeepHash", n_bits=8, hidden=(16, 8)).fit(X),
        "GSLQuantizer": _gsl,
        # fronts that wrap another model (the inverted indexes' learned inputs)
        "GSLEmbedding": lambda: wrapped("GSLEmbedding", _gsl),
        "CodeLayer": lambda: wrapped("CodeLayer", _itq),
    }


# Small settings for any coder-like class without its own factory: each is passed when the class's
# constructor has a parameter of that name (8-bit codes, one epoch, tiny networks).
SMALL = dict(n_bits=8, n_components=8, M=4, n_bits_per_code=4, dim=8, hidden=(16,), epochs=1, n_iter=3,
             n_outer=1, n_inner=3, n_sweeps=1, itq_iter=3, batch_size=64, validation_size=0, max_train=None,
             random_state=0)


def generic_coder(cls):
    """A small ``cls`` fitted on the digits (with labels), from the :data:`SMALL` settings its
    constructor takes (see :func:`builds_generically`)."""
    X, y = data()
    parameters = inspect.signature(cls.__init__).parameters
    return cls(**{n: v for n, v in SMALL.items() if n in parameters}).fit(X, y)


def builds_generically(cls) -> bool:
    """Whether :func:`generic_coder` can build ``cls``: it has ``fit`` and every constructor
    parameter without a default is one of :data:`SMALL`."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return callable(getattr(cls, "fit", None)) and all(
        p.name in SMALL or p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)


def coder_factories() -> dict:
    """Class name -> a function returning a freshly fitted small coder of that class, for every
    coder class of ``persist.CLASS_MODULES`` that can be built (its own factory, else
    :func:`generic_coder`)."""
    own = _own_coder_factories()
    out = {}
    for name in CODER_NAMES:
        if name in own:
            out[name] = own[name]
        elif builds_generically(persist.class_named(name)):
            out[name] = functools.partial(generic_coder, persist.class_named(name))
    return out


def index_factories() -> dict:
    """Class name -> a function returning a small trained and filled index of that class."""
    from deepcodes.index import (ADCIndex, FastScanIndex, HammingIndex, IVFADCIndex, MultiIndexHashing, VLQFastScanIndex,
                                 VLQIndex)

    X, _ = data()

    def filled(index):
        index.add(X)
        return index

    ivf = dict(M=4, n_bits_per_code=4, n_iter=5, random_state=0)
    own = {
        "HammingIndex": lambda: filled(HammingIndex(coder=_itq())),
        "MultiIndexHashing": lambda: filled(MultiIndexHashing(n_substrings=2, coder=_itq())),
        "ADCIndex": lambda: filled(ADCIndex(_pq())),
        "FastScanIndex": lambda: filled(FastScanIndex(_pq())),
        "IVFADCIndex": lambda: filled(IVFADCIndex(64, 8, **ivf).train(X)),
        "VLQIndex": lambda: filled(VLQIndex(64, 8, n_neighbors=2, **ivf).train(X)),
        "VLQFastScanIndex": lambda: filled(VLQFastScanIndex(64, 8, n_neighbors=2, **ivf).train(X)),
    }
    return {name: factory for name, factory in own.items() if name in INDEX_NAMES}


@functools.lru_cache(maxsize=None)
def saved(name: str) -> bytes:
    """The file (bytes) of a small fitted instance of class ``name``, fitted once per process."""
    factories = index_factories() if name in INDEX_NAMES else coder_factories()
    return persist.dumps(factories[name](), meta={"protocol": "digits"})


def print_tally(title: str, tally) -> None:
    """Print probe outcome counts (seen with ``pytest -s``)."""
    print(f"\n{title}: count")
    for key in sorted(tally):
        print("  ", *key, tally[key])
    print("   total", sum(tally.values()))


def fitted(name: str):
    """A fresh copy of the small fitted instance of class ``name``."""
    return persist.loads(saved(name))
