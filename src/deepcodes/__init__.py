"""deepcodes: learned compact codes for large-scale similarity search, and the indexes that search them."""
from .errors import DatasetError, DeepcodesError, FormatError, InputError, NotFittedError
from .persist import load, save

__version__ = "0.1.0"
__all__ = ["load", "save", "index_factory", "DeepcodesError", "InputError", "NotFittedError", "FormatError",
           "DatasetError"]


def __getattr__(name):
    # index_factory imports the index and coder modules: only when asked for, so that
    # ``import deepcodes`` (and loading a file) stays light.
    if name == "index_factory":
        from .factory import index_factory

        return index_factory
    raise AttributeError(f"module 'deepcodes' has no attribute {name!r}")
