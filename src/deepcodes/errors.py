"""The exceptions deepcodes raises. Every one is a ``DeepcodesError``, so callers can catch them all."""


class DeepcodesError(Exception):
    """Base class of every error deepcodes raises on purpose."""


class InputError(DeepcodesError, ValueError):
    """Bad input: wrong shape, dtype or dimension, NaN/inf, empty, out-of-range parameter."""


class NotFittedError(DeepcodesError, RuntimeError):
    """A coder or index was used before ``fit``/``train``."""


class FormatError(DeepcodesError, ValueError):
    """A file is missing, corrupt, truncated, foreign or of an unknown format version."""


class DatasetError(DeepcodesError, FileNotFoundError):
    """A bundled dataset file is missing or does not match its recorded checksum."""


class FormatWarning(UserWarning):
    """A file loads but cannot be fully checked (format version 1: no checksums)."""


class UnavailableError(DeepcodesError, RuntimeError):
    """A part of a service (a shard on a Ray actor) cannot answer now; the request may be retried."""
