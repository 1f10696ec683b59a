"""deepcodes: learned compact codes for large-scale similarity search, and the indexes that search them."""
from .errors import DatasetError, DeepcodesError, FormatError, InputError, NotFittedError
from .persist import load, save

__version__ = "0.1.0"
__all__ = ["load", "save", "DeepcodesError", "InputError", "NotFittedError", "FormatError", "DatasetError"]
