"""One small fitted instance of every persistable class (``persist.CLASS_MODULES``), for the tests
that attack their files and their entry points. A new persistable class adds its factory here."""
import functools

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


def coder_factories() -> dict:
    """Class name -> a function returning a freshly fitted small coder of that class."""
    from deepcodes.coders import LSH, OPQ, RQ
    from deepcodes.coders.bdnn import SHBDNN, UHBDNN
    from deepcodes.coders.deephash import DeepHash
    from deepcodes.coders.gsl import GSLQuantizer

    X, y = data()
    deep = dict(n_outer=1, n_inner=3, validation_size=0, random_state=0)
    return {
        "LSH": lambda: LSH(n_bits=16, random_state=0).fit(X),
        "ITQ": _itq,
        "PQ": _pq,
        "OPQ": lambda: OPQ(M=4, n_bits_per_code=4, n_iter=3, n_outer=2, random_state=0).fit(X),
        "RQ": lambda: RQ(M=2, n_bits_per_code=4, n_iter=5, random_state=0).fit(X),
        "UHBDNN": lambda: UHBDNN(n_bits=16, hidden=(24, 16), n_sweeps=1, itq_iter=3, **deep).fit(X),
        "SHBDNN": lambda: SHBDNN(n_bits=8, hidden=(16, 8), **deep).fit(X, y),
        "DeepHash": lambda: DeepHash(n_bits=8, hidden=(16, 8), **deep).fit(X),
        "GSLQuantizer": lambda: GSLQuantizer(n_bits=8, quantizer="opq", dim=8, hidden=(16,), epochs=1,
                                             quantization="none", batch_size=64, max_train=None,
                                             random_state=0).fit(X, y),
    }


def index_factories() -> dict:
    """Class name -> a function returning a small trained and filled index of that class."""
    from deepcodes.index import ADCIndex, HammingIndex, IVFADCIndex, MultiIndexHashing, VLQIndex

    X, _ = data()

    def filled(index):
        index.add(X)
        return index

    ivf = dict(M=4, n_bits_per_code=4, n_iter=5, random_state=0)
    return {
        "HammingIndex": lambda: filled(HammingIndex(coder=_itq())),
        "MultiIndexHashing": lambda: filled(MultiIndexHashing(n_substrings=2, coder=_itq())),
        "ADCIndex": lambda: filled(ADCIndex(_pq())),
        "IVFADCIndex": lambda: filled(IVFADCIndex(64, 8, **ivf).train(X)),
        "VLQIndex": lambda: filled(VLQIndex(64, 8, n_neighbors=2, **ivf).train(X)),
    }


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
