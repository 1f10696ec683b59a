"""The one contract every index follows (:class:`CodeIndex`), and the id checks they share."""
from __future__ import annotations

import numbers

import numpy as np

from .. import persist
from ..errors import FormatError, InputError, NotFittedError
from ..threads import single_blas
from ..validation import as_array, check_int

# Query rows times k held at once by range_search's growing searches (about 50 MB of results).
_RANGE_BLOCK = 1 << 22
# The first k range_search tries; it grows fourfold for the queries whose k-th result is still in range.
_RANGE_FIRST_K = 64


class CodeIndex:
    """An index over compact codes. Every index class derives from it and offers exactly this surface.

    Building and filling
    --------------------
    ``train(X, y=None, *, progress=False) -> self``
        Trains what is untrained (the coder, the coarse quantizer, the front) on ``X`` (n, d) and,
        for supervised parts (SH-BDNN, GSL), the labels ``y`` (n,): without them, ``InputError``.
        A no-op when the index is already trained (``is_trained``).
    ``add(X, ids=None, *, batch_size=65536, progress=False)``
        Encodes the vectors ``X`` (n, d) with the index's coder in batches of ``batch_size`` (a
        memory-mapped ``X`` larger than memory is fine) and stores them under ``ids``.
    ``add_codes(codes, ids=None)``
        Stores codes (n, code_size) uint8 as the index holds them (inverted indexes also need the
        list of each code: ``add_codes(codes, ids, lists=...)``).
    ``remove(ids) -> int``
        Removes the given ids; returns how many (all of them).

    Ids are the caller's: int64 values >= 0 (-1 marks a missing result). With ``ids=None`` they are
    consecutive from ``max(ntotal, largest stored id + 1)``. A duplicate id (in the batch or already
    stored), a negative or non-integer id, a wrong count, or removing an id that is not stored raise
    ``InputError`` naming the first offending id, and leave the index exactly as it was: ``add`` and
    ``remove`` are all-or-nothing.

    Searching
    ---------
    ``search(Q, k, **params) -> (distances (nq, k), ids (nq, k) int64)``
    ``range_search(Q, radius, **params) -> (lims (nq + 1,) int64, distances (total,), ids (total,))``
        The results of query i are ``distances[lims[i]:lims[i + 1]]``, every stored item within
        ``radius`` (inclusive) that the search reaches.
    ``search_by_id(ids, k, **params)``
        Searches with stored items as queries: their codes (binary indexes) or reconstructions. An
        exact index finds each item among its own results (first unless others tie with it at
        distance 0); an inverted one does when the item's list is among those probed.

    Results are in (distance, id) order: ties go to the lower id, exactly as a stable sort of all
    candidates by distance then id. Binary indexes return int32 Hamming distances and take a Hamming
    radius; quantizer indexes return float32 squared L2 (asymmetric) distances and take a squared L2
    radius. When an inverted index reaches fewer than k items, the missing slots hold distance
    +inf and id -1. ``k`` larger than ``ntotal`` raises ``InputError``. Search parameters
    (``nprobe``, ``w``, ``batch_size``, ...) are keyword arguments; ``search_params`` lists each
    index's with its default, and an unknown one raises ``InputError`` listing them.

    Reading back
    ------------
    ``reconstruct(ids) -> (n, dim) float32`` the vectors the codes stand for (quantizer indexes; in
    the front's space when there is a front); binary indexes raise ``InputError``.
    ``get_codes(ids) -> (n, code_size) uint8``; ``id in index``; ``contains(ids) -> bool (n,)``;
    ``ids``, every stored id.
    ``ntotal``, ``len(index)``, ``d`` (input dimension, None when unknown), ``code_size`` (bytes of
    code per item; each item also stores its 8-byte id), ``spec`` (factory string or None),
    ``is_trained``, ``describe() -> dict``, ``repr(index)``.

    Saving
    ------
    ``save(path, meta=None)``, ``deepcodes.load(path, mmap=False)``, ``to_bytes(meta=None)``,
    ``IndexClass.from_bytes(data)``: one safetensors file holding codes, ids, the trained arrays and
    the coder/front, written atomically. ``mmap=True`` maps codes and ids read-only from the file.

    An index object is not thread-safe: serialise writers (and readers against writers).
    """

    #: Search parameters and their defaults (keyword arguments of search, range_search, search_by_id).
    search_params: dict = {"batch_size": 1024}
    #: "binary" (Hamming distances) or "quantizer" (squared L2).
    distance_kind = "quantizer"

    spec: str | None = None
    d: int | None = None

    # -- shape and state -------------------------------------------------------------------------

    @property
    def code_size(self) -> int:
        """Bytes of code per stored item (its int64 id not counted)."""
        raise NotImplementedError

    @property
    def is_trained(self) -> bool:
        raise NotImplementedError

    @property
    def ntotal(self) -> int:
        """Number of items stored."""
        return self._store.ntotal

    def __len__(self) -> int:
        return self.ntotal

    @property
    def ids(self) -> np.ndarray:
        """Every stored id (ntotal,) int64, read-only: ascending in flat indexes, list by list in
        inverted ones."""
        return self._store.ids

    def _require_trained(self, what: str) -> None:
        if not self.is_trained:
            raise NotFittedError(f"{type(self).__name__} is not trained yet: call train() before {what}()")

    # -- ids -------------------------------------------------------------------------------------

    def _new_ids(self, ids, n: int) -> np.ndarray:
        """The ids of ``n`` items about to be added: ``ids`` checked, or the default run."""
        if ids is None:
            start = max(self.ntotal, self._store.max_id + 1)
            return np.arange(start, start + n, dtype=np.int64)
        ids = check_ids(ids)
        if ids.shape[0] != n:
            raise InputError(f"got {ids.shape[0]} ids for {n} items")
        order = np.argsort(ids, kind="stable")
        ascending = ids[order]
        repeated = order[1:][ascending[1:] == ascending[:-1]]
        if repeated.size:
            raise InputError(f"id {ids[repeated.min()]} appears twice in the ids being added")
        if n and ascending[0] <= self._store.max_id:
            # ascending needles: each binary search starts where the previous one ended (cache-friendly)
            stored = self._store.stored(ascending)
            if stored.any():
                raise InputError(f"id {ids[order[stored].min()]} is already in the index")
        return ids

    def _rows(self, ids, what: str = "") -> np.ndarray:
        """Rows of the stored ``ids`` in the store's arrays; InputError naming the first one absent."""
        ids = check_ids(ids)
        rows, found = self._store.find(ids)
        if not found.all():
            raise InputError(f"id {ids[np.argmin(found)]} is not in the index{what}")
        return rows

    def contains(self, ids) -> np.ndarray:
        """Whether each of ``ids`` is stored: bool (n,)."""
        return self._store.find(check_ids(ids))[1]

    def __contains__(self, id_) -> bool:
        if isinstance(id_, bool) or not isinstance(id_, numbers.Integral) or id_ < 0:
            return False
        return bool(self.contains([int(id_)])[0])

    def remove(self, ids) -> int:
        """Remove the items ``ids``; returns their number. InputError (and no change) if one is absent."""
        ids = check_ids(ids)
        order = np.sort(ids)
        if (order[1:] == order[:-1]).any():
            raise InputError(f"id {order[1:][order[1:] == order[:-1]][0]} appears twice in the ids to remove")
        rows = self._rows(ids, ", nothing was removed")
        self._store.remove(rows)
        return int(ids.shape[0])

    def get_codes(self, ids) -> np.ndarray:
        """The stored codes (n, code_size) uint8 of ``ids``."""
        return np.array(self._store.codes[self._rows(ids)])

    def reconstruct(self, ids) -> np.ndarray:
        """The vectors (n, dim) float32 the codes of ``ids`` stand for (what the distances measure to)."""
        if self.distance_kind == "binary":
            raise InputError(f"{type(self).__name__} holds binary codes, which have no vector reconstruction")
        self._require_trained("reconstruct")
        return self._reconstruct_rows(self._rows(ids))

    # -- adding ----------------------------------------------------------------------------------

    def add(self, X, ids=None, *, batch_size: int = 65536, progress: bool = False) -> None:
        """Encode ``X`` (n, d) in batches and store it under ``ids`` (see the class docstring).

        Only one batch is converted to float32 at a time; nothing is stored if any batch is rejected.
        """
        from tqdm.auto import tqdm

        self._require_trained("add")
        batch_size = check_int(batch_size, "batch_size", low=1)
        X = self._check_rows(X, "X")
        n = X.shape[0]
        ids = self._new_ids(ids, n)
        staged = []
        with tqdm(total=n, disable=not progress, desc=f"{type(self).__name__}.add", unit="vec") as bar:
            for start in range(0, n, batch_size):
                batch = X[start:start + batch_size]
                staged.append((self._encode_batch(batch), ids[start:start + batch.shape[0]]))
                bar.update(batch.shape[0])
        for encoded, batch_ids in staged:
            self._append(encoded, batch_ids)

    def _check_rows(self, X, name: str) -> np.ndarray:
        """``X`` as an (n, d) array without converting it whole (a memory map stays one)."""
        X = as_array(X, name)
        if X.ndim == 1 and self.d is not None and X.shape[0] == self.d:
            X = X[None]
        if X.ndim != 2:
            raise InputError(f"{name} must be 2-D (n, d), got shape {X.shape}")
        if self.d is not None and X.shape[1] != self.d:
            raise InputError(f"{name} has dimension {X.shape[1]}, expected {self.d}")
        if X.shape[0] == 0:
            raise InputError(f"{name} is empty (0 rows)")
        return X

    # -- searching -------------------------------------------------------------------------------

    def _resolve_params(self, params: dict) -> dict:
        unknown = sorted(set(params) - set(self.search_params))
        if unknown:
            raise InputError(f"unknown search parameter {unknown[0]!r} for {type(self).__name__}; "
                             f"valid: {', '.join(sorted(self.search_params))}")
        return {**self.search_params, **params}

    def _check_k(self, k) -> int:
        if self.ntotal == 0:
            raise InputError("the index is empty: add vectors before searching")
        k = check_int(k, "k", low=1)
        if k > self.ntotal:
            raise InputError(f"k={k} is larger than the database ({self.ntotal} items)")
        return k

    @single_blas()
    def search(self, Q, k: int, **params):
        """The ``k`` nearest stored items of each query: ``(distances (nq, k), ids (nq, k) int64)``."""
        params = self._resolve_params(params)
        self._require_trained("search")
        k = self._check_k(k)
        return self._search(self._queries(Q), k, **params)

    @single_blas()
    def search_by_id(self, ids, k: int, **params):
        """``search`` with the stored items ``ids`` as queries (their codes or reconstructions)."""
        params = self._resolve_params(params)
        self._require_trained("search_by_id")
        k = self._check_k(k)
        return self._search(self._stored_queries(self._rows(ids)), k, **params)[:2]

    @single_blas()
    def range_search(self, Q, radius, **params):
        """Every stored item within ``radius`` of each query (inclusive), in (distance, id) order:
        ``(lims (nq + 1,) int64, distances (total,), ids (total,) int64)``.

        Runs the index's own search with k growing fourfold per query until its k-th result lies
        beyond the radius or nothing more is reachable, so a result is exactly what ``search`` with a
        large enough k returns, cut at the radius.
        """
        params = self._resolve_params(params)
        self._require_trained("range_search")
        radius = self._check_radius(radius)
        if self.ntotal == 0:
            raise InputError("the index is empty: add vectors before searching")
        queries = self._queries(Q)
        nq = queries.shape[0]
        found: list = [None] * nq
        pending = np.arange(nq)
        k = min(self.ntotal, _RANGE_FIRST_K)
        while pending.size:
            still = []
            step = max(1, _RANGE_BLOCK // k)
            for s in range(0, pending.size, step):
                part = pending[s:s + step]
                D, I = self._search(queries[part], k, **params)[:2]
                complete = (D[:, -1] > radius) | (I[:, -1] < 0) | (k == self.ntotal)
                for row in np.flatnonzero(complete):
                    keep = (D[row] <= radius) & (I[row] >= 0)
                    found[part[row]] = (D[row][keep], I[row][keep])
                still.append(part[~complete])
            pending = np.concatenate(still)
            k = min(self.ntotal, 4 * k)
        lims = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum([len(f[1]) for f in found], out=lims[1:])
        dist_dtype = np.int32 if self.distance_kind == "binary" else np.float32
        return (lims, np.concatenate([f[0] for f in found]).astype(dist_dtype, copy=False),
                np.concatenate([f[1] for f in found]).astype(np.int64, copy=False))

    def _check_radius(self, radius):
        if self.distance_kind == "binary":
            return check_int(radius, "radius (a Hamming distance)", low=0)
        if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not np.isfinite(radius) or radius < 0:
            raise InputError(f"radius must be a finite squared distance >= 0, got {radius!r}")
        return float(radius)

    # -- description and persistence -----------------------------------------------------------

    @property
    def bytes_per_vector(self) -> int:
        """Bytes stored per item: its code and its int64 id."""
        return int(self.code_size) + 8

    def describe(self) -> dict:
        """What the index is: spec, class, sizes, trained state, parameters and what it was trained on."""
        meta = dict(getattr(self, "meta_", None) or {})
        return {"spec": self.spec, "class": type(self).__name__, "ntotal": self.ntotal, "d": self.d,
                "code_size": int(self.code_size), "bytes_per_vector": self.bytes_per_vector,
                "is_trained": bool(self.is_trained), "params": self._describe_params(),
                "search_params": dict(self.search_params), "trained_on": meta.get("trained_on"), "meta": meta}

    def _describe_params(self) -> dict:
        return self._params()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(spec={self.spec!r}, d={self.d}, ntotal={self.ntotal}, "
                f"code_size={self.code_size})")

    def save(self, path, meta: dict | None = None) -> None:
        """Save the trained index to ``path`` atomically; a failed save leaves any previous file intact."""
        self._require_trained("save")
        persist.save(self, path, meta=meta)

    def to_bytes(self, meta: dict | None = None) -> bytes:
        """The bytes ``save`` would write."""
        self._require_trained("to_bytes")
        return persist.dumps(self, meta=meta)

    @classmethod
    def from_bytes(cls, data) -> "CodeIndex":
        """The index ``to_bytes`` (or a saved file's content) holds; FormatError if it is not a ``cls``."""
        obj = persist.loads(data)
        if not isinstance(obj, cls):
            raise FormatError(f"the bytes hold a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    # -- hooks -------------------------------------------------------------------------------------

    def _params(self) -> dict:
        """The constructor's JSON parameters (spec included)."""
        raise NotImplementedError

    def _queries(self, Q) -> np.ndarray:
        """Queries as the search kernels take them (codes, or vectors in the space the codes live in)."""
        raise NotImplementedError

    def _stored_queries(self, rows: np.ndarray) -> np.ndarray:
        """The stored items at ``rows`` as queries (their codes or reconstructions)."""
        raise NotImplementedError

    def _search(self, queries: np.ndarray, k: int, **params):
        raise NotImplementedError

    def _encode_batch(self, X: np.ndarray):
        raise NotImplementedError

    def _append(self, encoded, ids: np.ndarray) -> None:
        raise NotImplementedError

    def _reconstruct_rows(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def check_ids(ids) -> np.ndarray:
    """``ids`` as a 1-D int64 array of values >= 0, or InputError naming the first bad one."""
    if isinstance(ids, (str, bytes)) or ids is None:
        raise InputError(f"ids must be integers, got {type(ids).__name__}")
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1:
        raise InputError(f"ids must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"ids must be integers, got dtype {arr.dtype} (first value {arr[0]!r})")
    if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise InputError(f"id {arr[np.argmax(arr > np.iinfo(np.int64).max)]} does not fit in int64")
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < 0:
        raise InputError(f"id {arr[np.argmax(arr < 0)]} is negative: ids must be >= 0 (-1 marks a missing result)")
    return arr


def find_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``ids`` in the ascending ``sorted_ids`` and whether each is there: ``(pos, found)``."""
    pos = np.searchsorted(sorted_ids, ids)
    pos_c = np.minimum(pos, max(len(sorted_ids) - 1, 0))
    found = (pos < len(sorted_ids)) & (sorted_ids[pos_c] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
    return pos_c, found


class PendingIds:
    """The ids of additions a store has queued but not merged, kept sorted as they arrive, so that
    checking a new batch against everything stored needs no merge (adding n items in b batches under
    unordered ids then costs b sorts of ids, not b merges and argsorts of the whole store)."""

    def __init__(self):
        self.sorted = np.empty(0, dtype=np.int64)

    def add(self, ids: np.ndarray) -> None:
        # two sorted runs after the batch's own sort: the stable sort (timsort) merges them in one pass
        self.sorted = np.sort(np.concatenate([self.sorted, np.sort(ids)]), kind="stable")

    def clear(self) -> None:
        self.sorted = np.empty(0, dtype=np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return find_sorted(self.sorted, ids)[1]
