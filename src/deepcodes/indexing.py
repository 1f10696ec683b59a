"""Index files from vector files: what ``deepcodes build / add / remove / search / info`` do.

An index is trained on a seeded sample of at most ``max_train`` rows of its training file and
filled by streaming its base file in batches (peak memory: one batch and the index, never the
whole file). The index file's metadata (``index.meta_``, saved inside the file) records where it
came from, so later commands (``bench --against-faiss``) can replay it:

* ``trained_on``: ``{"file", "n_train", "n_available", "max_train", "seed", "labels"}``, the rows
  the index really trained on;
* ``sources``: one ``{"file", "n", "ids_file" | "first_id"}`` per build/add, in order;
* ``keys`` (text files with keys): ``{"ids": [...], "keys": [...]}``, the key of every stored id;
* ``removed``: how many ids ``remove`` took out.

``add`` and ``remove`` write the whole new file next to the old one and rename it over it
(:mod:`deepcodes.persist`), so on any error the file on disk is unchanged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import persist
from .data.vectors import HDF5_SUFFIXES, Vectors, open_vectors, read_ids, read_labels, split_dataset
from .errors import InputError
from .validation import check_int, check_k

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_TRAIN", "ADD_BATCH", "build_index", "load_index", "add_file", "remove_ids", "search_file",
           "describe_index", "training_sample", "stored_sources", "parse_params", "next_default_id", "KeyTable"]

# Rows an index trains on unless told otherwise: faiss wants 30-256 per k-means centroid, and
# 100,000 covers 1024 cells at ~100 each while a training pass stays minutes on 2 cores.
DEFAULT_MAX_TRAIN = 100_000
ADD_BATCH = 65_536


# ------------------------------------------------------------------------------------ the keys


@dataclass
class KeyTable:
    """The string key of each stored id (text files with keys): ids (n,) int64 and keys (n,) str."""

    ids: np.ndarray
    keys: np.ndarray

    @classmethod
    def from_meta(cls, meta: dict) -> "KeyTable | None":
        doc = meta.get("keys")
        if not doc:
            return None
        return cls(np.asarray(doc["ids"], dtype=np.int64), np.asarray(doc["keys"], dtype=str))

    def to_meta(self) -> dict:
        return {"ids": self.ids.tolist(), "keys": self.keys.tolist()}

    def extended(self, ids: np.ndarray, keys: np.ndarray) -> "KeyTable":
        return KeyTable(np.concatenate([self.ids, ids]), np.concatenate([self.keys, keys]))

    def without(self, ids: np.ndarray) -> "KeyTable":
        keep = ~np.isin(self.ids, ids)
        return KeyTable(self.ids[keep], self.keys[keep])

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Keys of ``ids`` (any shape); "" where an id is -1 or has no key."""
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        flat = np.asarray(ids).reshape(-1)
        pos = np.clip(np.searchsorted(sorted_ids, flat), 0, max(len(sorted_ids) - 1, 0))
        found = (len(sorted_ids) > 0) & (sorted_ids[pos] == flat) if len(sorted_ids) else np.zeros(flat.shape, bool)
        out = np.full(flat.shape, "", dtype=self.keys.dtype if self.keys.size else "<U1")
        out[found] = self.keys[order][pos[found]]
        return out.reshape(np.shape(ids))


# ------------------------------------------------------------------------------------- helpers


def _display(vectors: Vectors, spec) -> str:
    """The file as the metadata records it: an absolute path, with ``:dataset`` for HDF5."""
    path, _ = split_dataset(spec)
    where = str(Path(path).resolve())
    if path.name.lower().endswith(HDF5_SUFFIXES):
        where += ":" + vectors.name.rsplit(":", 1)[1]
    return where


def _check_dim(vectors: Vectors, d: int, what: str, against: str) -> None:
    if vectors.d != d:
        raise InputError(f"{what} {vectors.name} has dimension {vectors.d}, {against} has {d}")


def next_default_id(index) -> int:
    """The first id ``index.add(X)`` would give now: max(ntotal, largest stored id + 1)."""
    ids = index.ids
    return max(int(index.ntotal), int(ids.max()) + 1 if len(ids) else 0)


def _batch_ids(ids: np.ndarray | None, first_id: int, start: int, stop: int) -> np.ndarray:
    if ids is not None:
        return ids[start:stop]
    return np.arange(first_id + start, first_id + stop, dtype=np.int64)


def _add_stream(index, base: Vectors, spec, ids_file, meta: dict, *, batch_size: int, progress: bool) -> int:
    """Add every row of ``base`` (ids from ``ids_file``, else the default run) in batches, and record
    it in ``meta`` (``sources``, ``keys``) so it can be replayed. Returns the number added."""
    ids = read_ids(ids_file, base.n) if ids_file is not None else None
    first_id = next_default_id(index)
    if ids is not None:
        taken = index.contains(ids)
        if taken.any():
            raise InputError(f"id {int(ids[np.flatnonzero(taken)[0]])} is already in the index")
    for start, block in base.batches(batch_size, progress=progress, desc=f"add {base.name}"):
        index.add(block, ids=_batch_ids(ids, first_id, start, start + block.shape[0]))
    source = {"file": _display(base, spec), "n": base.n}
    if ids is None:
        source["first_id"] = first_id
    else:
        source["ids_file"] = str(Path(ids_file).resolve())
    meta.setdefault("sources", []).append(source)
    if base.keys is not None:
        added = ids if ids is not None else np.arange(first_id, first_id + base.n, dtype=np.int64)
        table = KeyTable.from_meta(meta)
        table = KeyTable(added, base.keys) if table is None else table.extended(added, base.keys)
        meta["keys"] = table.to_meta()
    return base.n


# ---------------------------------------------------------------------------------- commands


def build_index(spec: str, train, *, labels=None, base=None, ids=None, max_train: int | None = DEFAULT_MAX_TRAIN,
                seed: int = 0, batch_size: int = ADD_BATCH, progress: bool = False):
    """Build the index ``spec`` (a :func:`deepcodes.index_factory` string): train it on a seeded sample
    of at most ``max_train`` rows of ``train`` (all rows when None), then add ``base`` (default: the
    training file) with the ids in ``ids`` (default 0..n-1). Returns the index, ``meta_`` set.

    Every check on the inputs (readable files, equal dimensions, label and id counts, the spec)
    runs before any training.
    """
    from .factory import index_factory

    if max_train is not None:
        max_train = check_int(max_train, "--max-train", low=1)
    seed = check_int(seed, "seed", low=0)
    with open_vectors(train) as train_v:
        y = read_labels(labels, train_v.n)[0] if labels is not None else None
        base_v = train_v if base is None else open_vectors(base)
        try:
            _check_dim(base_v, train_v.d, "the base", f"the training file {train_v.name}")
            if ids is not None:
                read_ids(ids, base_v.n)  # refuse bad ids before the training, not after
            index = index_factory(train_v.d, spec, random_state=seed)
            X, rows = train_v.sample(max_train, random_state=seed)
            log.info("training %s on %d of %d rows of %s", spec, len(rows), train_v.n, train_v.name)
            index.train(X, None if y is None else y[rows], progress=progress)
            del X
            meta = {"trained_on": {"file": _display(train_v, train), "n_train": int(len(rows)),
                                   "n_available": train_v.n, "max_train": max_train, "seed": seed,
                                   "labels": None if labels is None else str(Path(labels).resolve())},
                    "sources": [], "removed": 0}
            _add_stream(index, base_v, base if base is not None else train, ids, meta,
                        batch_size=batch_size, progress=progress)
        finally:
            if base_v is not train_v:
                base_v.close()
    index.meta_ = meta
    return index


def load_index(path):
    """The index saved at ``path`` (its ``meta_`` holds the build record); a coder file is refused."""
    obj = persist.load(path)
    if not hasattr(obj, "ntotal") or not hasattr(obj, "search"):
        raise InputError(f"{path} holds a {type(obj).__name__}, not an index (build one with `deepcodes build`)")
    return obj


def add_file(path, base, ids=None, *, batch_size: int = ADD_BATCH, progress: bool = False) -> dict:
    """Add the vectors of ``base`` (with ``ids``, default: consecutive after the stored ones) to
    the index file ``path``, rewriting it atomically. Returns ``{"added", "ntotal"}``."""
    index = load_index(path)
    meta = dict(getattr(index, "meta_", None) or {})
    with open_vectors(base) as base_v:
        _check_dim(base_v, index.d, "the base", f"the index {Path(path).name}")
        added = _add_stream(index, base_v, base, ids, meta, batch_size=batch_size, progress=progress)
    index.save(path, meta=meta)
    return {"added": added, "ntotal": int(index.ntotal)}


def remove_ids(path, ids) -> dict:
    """Remove the ids listed in the file ``ids`` from the index file ``path`` (all or nothing),
    rewriting it atomically. Returns ``{"removed", "ntotal"}``."""
    index = load_index(path)
    meta = dict(getattr(index, "meta_", None) or {})
    id_array = read_ids(ids)
    missing = ~index.contains(id_array)
    if missing.any():
        raise InputError(f"id {int(id_array[np.flatnonzero(missing)[0]])} is not in the index; nothing was removed")
    removed = int(index.remove(id_array))
    meta["removed"] = int(meta.get("removed", 0)) + removed
    table = KeyTable.from_meta(meta)
    if table is not None:
        meta["keys"] = table.without(id_array).to_meta()
    index.save(path, meta=meta)
    return {"removed": removed, "ntotal": int(index.ntotal)}


def parse_params(items) -> dict:
    """``["nprobe=16", "w=64"]`` -> ``{"nprobe": 16, "w": 64}``: integers, then floats, else strings."""
    params = {}
    for item in items or ():
        if "=" not in item:
            raise InputError(f"--param takes name=value, got {item!r}")
        name, value = (s.strip() for s in item.split("=", 1))
        if not name or not value:
            raise InputError(f"--param takes name=value, got {item!r}")
        params[name] = _number(value)
    return params


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def search_file(index, queries, k: int, params: dict | None = None, *, batch_size: int = 10_000,
                progress: bool = False) -> dict:
    """Search ``index`` for every row of the vector file ``queries`` (an HDF5 file's ``test`` set by
    default), a batch at a time. Returns ``{"ids" (nq, k) int64, "distances" (nq, k) float32,
    "keys" (nq, k) str or None}`` in (distance, id) order per row."""
    k = check_k(k, int(index.ntotal))
    params = dict(params or {})
    with open_vectors(queries, default_dataset="test") as q:
        _check_dim(q, index.d, "the queries", "the index")
        ids = np.empty((q.n, k), dtype=np.int64)
        distances = np.empty((q.n, k), dtype=np.float32)
        for start, block in q.batches(batch_size, progress=progress, desc="search"):
            d, i = index.search(block, k, **params)
            distances[start:start + len(block)] = d
            ids[start:start + len(block)] = i
    table = KeyTable.from_meta(getattr(index, "meta_", None) or {})
    return {"ids": ids, "distances": distances, "keys": None if table is None else table.lookup(ids)}


def describe_index(index, path=None) -> dict:
    """``index.describe()`` (spec, ntotal, d, bytes_per_vector, trained_on, meta: the build record)
    with the key table summarised as ``n_keys``, and the file and its size when ``path`` is given."""
    info = dict(index.describe())
    meta = dict(info.get("meta") or getattr(index, "meta_", None) or {})
    table = KeyTable.from_meta(meta)
    meta.pop("keys", None)
    meta.pop("trained_on", None)  # already at the top level
    info["meta"] = meta
    info["n_keys"] = 0 if table is None else int(table.ids.shape[0])
    if path is not None:
        info["file"] = str(path)
        info["file_bytes"] = Path(path).stat().st_size
    return info


# ----------------------------------------------------------------------------- replaying a build


def training_sample(meta: dict) -> np.ndarray:
    """The exact training rows an index file records (same file, seed and ``max_train``)."""
    trained = (meta or {}).get("trained_on") or {}
    if not trained.get("file"):
        raise InputError("the index file does not record its training file (it was not built by `deepcodes build`)")
    with open_vectors(trained["file"]) as v:
        if v.n != trained.get("n_available"):
            raise InputError(f"{trained['file']} now holds {v.n} rows, the index was trained on a file of "
                             f"{trained.get('n_available')}")
        X, _ = v.sample(trained.get("max_train"), random_state=trained.get("seed", 0))
    return X


def stored_sources(index, *, batch_size: int = ADD_BATCH, progress: bool = False):
    """Yield ``(vectors (b, d) float32, ids (b,) int64)`` of every vector still in ``index``, replayed
    from the files its metadata records (removed ids are skipped)."""
    meta = getattr(index, "meta_", None) or {}
    sources = meta.get("sources") or []
    if not sources:
        raise InputError("the index file does not record the files it was filled from")
    for source in sources:
        with open_vectors(source["file"]) as v:
            if v.n != source["n"]:
                raise InputError(f"{source['file']} now holds {v.n} rows, {source['n']} were added from it")
            ids = read_ids(source["ids_file"], v.n) if "ids_file" in source else None
            for start, block in v.batches(batch_size, progress=progress, desc=f"replay {v.name}"):
                batch_ids = _batch_ids(ids, source.get("first_id", 0), start, start + len(block))
                keep = index.contains(batch_ids)
                if keep.all():
                    yield block, batch_ids
                elif keep.any():
                    yield block[keep], batch_ids[keep]
