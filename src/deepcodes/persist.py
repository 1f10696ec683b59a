"""One safe, versioned file format for every coder and index.

A deepcodes file is a safetensors file: the arrays are its tensors and its string metadata holds one
JSON document under the key ``"deepcodes"``::

    {"format": "deepcodes", "format_version": 1, "class": "ITQ", "params": {...},
     "meta": {"protocol": "mnist-unsup", ...}, "arrays": ["mean_", ...]}

Loading parses the JSON and the tensor header only; nothing is ever unpickled. Writes go to a
temporary file in the target folder, are fsynced, then renamed over the target, so a failed write
leaves the previous file intact. ``load(path, mmap=True)`` maps the tensors read-only from the file
instead of reading them, which keeps large code arrays on disk.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError

FORMAT_NAME = "deepcodes"
FORMAT_VERSION = 1
_META_KEY = "deepcodes"
_MAX_HEADER = 100 * 1024 * 1024
_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}

_REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make ``cls`` loadable by :func:`load` under its class name.

    The class implements ``_get_state() -> (params: dict, arrays: dict[str, ndarray])`` and the
    classmethod ``_from_state(params, arrays) -> instance``.
    """
    _REGISTRY[cls.__name__] = cls
    return cls


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On any error the temporary file is removed and ``path`` keeps its previous content. Use it for
    writers that want a file name (h5py); :func:`atomic_write_bytes` covers byte streams.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # mkstemp creates 0600; give the file the usual 0644 (less the umask) like open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o644 & ~umask)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dirfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def atomic_write_bytes(path: str | os.PathLike, chunks) -> None:
    """Write ``chunks`` (an iterable of bytes-like objects) to ``path`` atomically (temp, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array as ``.npy`` atomically (no pickling)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, [buf.getbuffer()])


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], document: dict[str, Any]) -> None:
    """Write ``arrays`` and the JSON ``document`` as a safetensors file, atomically.

    Arrays are streamed from their own buffers (memory-mapped ones included) without a second copy.
    """
    header: dict[str, Any] = {"__metadata__": {_META_KEY: json.dumps(document, sort_keys=True)}}
    offset = 0
    ordered = []
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        if arr.dtype not in _CODES:
            raise FormatError(f"array {name!r} has dtype {arr.dtype}, which the file format cannot store")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        header[name] = {"dtype": _CODES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        ordered.append(arr)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)

    def chunks():
        yield struct.pack("<Q", len(head))
        yield head
        for arr in ordered:
            if arr.nbytes:
                yield memoryview(arr.reshape(-1)).cast("B")

    atomic_write_bytes(path, chunks())


def read_arrays(path: str | os.PathLike, *, mmap: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a deepcodes/safetensors file: ``(arrays, document)``. Raises FormatError on any defect."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"no such model/index file: {path}")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise FormatError(f"{path} is not a deepcodes file (too short: {size} bytes)")
            (n_head,) = struct.unpack("<Q", raw)
            if n_head > _MAX_HEADER or 8 + n_head > size:
                raise FormatError(f"{path} is not a deepcodes file (bad header length; truncated or foreign)")
            header = json.loads(f.read(n_head))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path} is not a deepcodes file (unreadable header: {exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path} is not a deepcodes file (header is not an object)")
    meta = header.pop("__metadata__", None) or {}
    if _META_KEY not in meta:
        raise FormatError(f"{path} is a safetensors file but not one written by deepcodes (no '{_META_KEY}' metadata)")
    try:
        document = json.loads(meta[_META_KEY])
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: corrupt deepcodes metadata ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise FormatError(f"{path}: metadata does not describe a deepcodes object")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatError(f"{path}: format version {version!r} is not supported (this deepcodes reads version {FORMAT_VERSION})")
    base = 8 + n_head
    arrays: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            try:
                dtype = np.dtype(_DTYPES[info["dtype"]])
                shape = tuple(int(s) for s in info["shape"])
                start, end = (int(v) for v in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise FormatError(f"{path}: corrupt entry for array {name!r}") from None
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if end - start != nbytes or start < 0 or base + end > size:
                raise FormatError(f"{path}: array {name!r} is truncated or inconsistent with its header")
            if mmap and nbytes:
                arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=base + start, shape=shape)
            else:
                f.seek(base + start)
                buf = f.read(nbytes)
                arrays[name] = np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
    missing = set(document.get("arrays", [])) - set(arrays)
    if missing:
        raise FormatError(f"{path}: arrays missing from the file: {sorted(missing)}")
    return arrays, document


def save(obj, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
    """Save a registered coder or index (see :func:`register`) to ``path`` atomically."""
    cls = type(obj)
    if _REGISTRY.get(cls.__name__) is not cls:
        raise FormatError(f"{cls.__name__} cannot be saved: it is not a registered deepcodes class")
    params, arrays = obj._get_state()
    document = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "class": cls.__name__,
        "params": params, "meta": dict(meta or getattr(obj, "meta_", None) or {}),
        "arrays": sorted(arrays),
    }
    write_arrays(path, arrays, document)


def load(path: str | os.PathLike, *, mmap: bool = False):
    """Load a coder or index saved with :func:`save`. ``mmap=True`` maps large arrays read-only."""
    arrays, document = read_arrays(path, mmap=mmap)
    name = document.get("class")
    _import_all()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise FormatError(f"{path}: unknown class {name!r} (not a deepcodes coder or index)")
    try:
        obj = cls._from_state(document.get("params", {}), arrays)
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{path}: corrupt {name} state ({type(exc).__name__}: {exc})") from None
    obj.meta_ = document.get("meta", {})
    return obj


def _import_all() -> None:
    # Registration happens at import; make sure every class a file may name has been imported.
    from . import coders, index  # noqa: F401
    # torch coders register on import; kept off `import deepcodes.coders` so shallow use needs no torch
    from .coders import bdnn, deephash, gsl  # noqa: F401
