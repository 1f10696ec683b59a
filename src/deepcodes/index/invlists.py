"""Inverted lists in CSR form, and the residual-PQ inverted-file machinery IVFADCIndex and VLQIndex share.

The lists are three flat arrays, so they save as plain tensors and map read-only on load:
``offsets`` (nlist + 1,) int64, ``codes`` (n, code_size) uint8 and ``ids`` (n,) int64; list ``l``
spans rows ``offsets[l]:offsets[l + 1]``, within a list in insertion order. ``add`` keeps new
entries in pending chunks and merges them into the CSR arrays once, on first use.
"""
from __future__ import annotations

import logging

import numpy as np

from .. import persist
from ..coders.kmeans import assign, kmeans
from ..coders.pq import _pq_encode, _pq_train, check_quantizer_shape, subsample
from ..errors import FormatError, InputError, NotFittedError
from ..validation import as_array, as_format_errors, check_finite_float32, check_int, check_matrix, rng_from

log = logging.getLogger(__name__)


def _read_only(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


class InvertedLists:
    """``nlist`` inverted lists of fixed-size codes and int64 ids, stored as CSR arrays."""

    def __init__(self, nlist: int, code_size: int):
        self.nlist = int(nlist)
        self.code_size = int(code_size)
        self._offsets = np.zeros(self.nlist + 1, dtype=np.int64)
        self._codes = np.empty((0, self.code_size), dtype=np.uint8)
        self._ids = np.empty(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._n_pending = 0

    @classmethod
    def from_arrays(cls, offsets: np.ndarray, codes: np.ndarray, ids: np.ndarray) -> "InvertedLists":
        """Wrap stored CSR arrays (e.g. memory-mapped ones) after checking they are consistent."""
        if offsets.ndim != 1 or offsets.dtype != np.int64 or offsets.shape[0] < 2:
            raise FormatError(f"list offsets must be 1-D int64 with at least 2 entries, got {offsets.shape} {offsets.dtype}")
        if codes.ndim != 2 or codes.dtype != np.uint8 or ids.ndim != 1 or ids.dtype != np.int64:
            raise FormatError(f"list codes/ids have shapes {codes.shape}/{ids.shape} and dtypes "
                              f"{codes.dtype}/{ids.dtype}, expected (n, code_size) uint8 and (n,) int64")
        n = codes.shape[0]
        if ids.shape[0] != n or offsets[0] != 0 or offsets[-1] != n or (np.diff(offsets) < 0).any():
            raise FormatError(f"inverted lists are inconsistent: {n} codes, {ids.shape[0]} ids, "
                              f"offsets from {offsets[0]} to {offsets[-1]}")
        if n and ids.min() < 0:
            raise FormatError("inverted lists hold negative ids")
        obj = cls(offsets.shape[0] - 1, codes.shape[1])
        obj._offsets, obj._codes, obj._ids = np.asarray(offsets), np.asarray(codes), np.asarray(ids)
        return obj

    @property
    def ntotal(self) -> int:
        return int(self._codes.shape[0] + self._n_pending)

    def append(self, list_ids: np.ndarray, codes: np.ndarray, ids: np.ndarray) -> None:
        """Queue entries; they join the CSR arrays on the next access."""
        self._pending.append((list_ids.astype(np.int64, copy=False), codes, ids))
        self._n_pending += codes.shape[0]

    def _merge(self) -> None:
        if not self._pending:
            return
        old_lists = np.repeat(np.arange(self.nlist, dtype=np.int64), np.diff(self._offsets))
        list_ids = np.concatenate([old_lists] + [p[0] for p in self._pending])
        # a stable sort by list keeps every list in insertion order
        order = np.argsort(list_ids, kind="stable")
        self._codes = np.concatenate([self._codes] + [p[1] for p in self._pending])[order]
        self._ids = np.concatenate([self._ids] + [p[2] for p in self._pending])[order]
        self._offsets = np.zeros(self.nlist + 1, dtype=np.int64)
        np.cumsum(np.bincount(list_ids, minlength=self.nlist), out=self._offsets[1:])
        self._pending = []
        self._n_pending = 0

    # The arrays are handed out read-only whether they are mapped from a file or held in memory, so
    # the numba kernels see one array type and compile once, not once per storage kind.

    @property
    def offsets(self) -> np.ndarray:
        self._merge()
        return _read_only(self._offsets)

    @property
    def codes(self) -> np.ndarray:
        self._merge()
        return _read_only(self._codes)

    @property
    def ids(self) -> np.ndarray:
        self._merge()
        return _read_only(self._ids)

    def list_sizes(self) -> np.ndarray:
        """Entries per list (nlist,)."""
        return np.diff(self.offsets)

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(list id, row)`` of each of the given stored ids."""
        stored = self.ids
        row_of = np.full(int(stored.max(initial=-1)) + 1, -1, dtype=np.int64)
        row_of[stored] = np.arange(stored.shape[0])
        rows = row_of[ids]
        lists = np.searchsorted(self.offsets, rows, side="right") - 1
        return lists, rows


class ResidualIVF:
    """Base of the inverted-file indexes: a first level of ``n_centroids`` k-means centroids (faiss),
    a residual product quantizer, CSR inverted lists, batched ``add``, and persistence.

    Subclasses define the list structure: ``_nlist``, ``_train_structure``, ``_assign`` (vectors to
    list ids and residual reconstructions' bases), ``_code_size`` and the search kernel.

    Inputs whose dimension is not a multiple of ``M`` are zero-padded inside the residual quantizer,
    which changes no distance; this lets codes of any byte count be compared at equal size.
    """

    _extra_arrays: tuple[str, ...] = ()

    def __init__(self, d: int, n_centroids: int, M: int = 8, n_bits_per_code: int = 8, n_iter: int = 20,
                 max_train: int | None = None, random_state=None):
        self.d = check_int(d, "d (dimension)", low=1)
        self.n_centroids = check_int(n_centroids, "n_centroids", low=1)
        self.M, self.n_bits_per_code = check_quantizer_shape(M, n_bits_per_code)
        if self.M > self.d:
            raise InputError(f"M={self.M} sub-quantizers exceed the dimension {self.d}")
        self.n_iter = check_int(n_iter, "n_iter", low=1)
        self.max_train = None if max_train is None else check_int(max_train, "max_train", low=1)
        self.random_state = random_state
        rng_from(random_state)  # validates it
        self.centroids_: np.ndarray | None = None
        self.codebooks_: np.ndarray | None = None
        self._P: np.ndarray | None = None
        self.lists = InvertedLists(self._nlist(), self._code_size())

    # -- shape ---------------------------------------------------------------------------------

    @property
    def d_pad(self) -> int:
        return -(-self.d // self.M) * self.M

    @property
    def code_size(self) -> int:
        """Bytes of code per stored vector (ids not counted)."""
        return self._code_size()

    @property
    def is_trained(self) -> bool:
        return self.codebooks_ is not None

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return self.lists.ntotal

    def __len__(self) -> int:
        return self.ntotal

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held: per-vector storage (codes, ids), list offsets, the trained arrays a file
        stores, and the tables derived from them at train/load time (``precomputed``)."""
        lists = self.lists
        derived = [a for a in (self._P, getattr(self, "_codebooks_t", None), getattr(self, "_edge_sq", None))
                   if a is not None]
        return {"codes": int(lists.codes.nbytes), "ids": int(lists.ids.nbytes), "offsets": int(lists.offsets.nbytes),
                "trained": int(sum(a.nbytes for a in self._trained_arrays().values() if a is not None)),
                "precomputed": int(sum(a.nbytes for a in derived))}

    def _pad(self, X: np.ndarray) -> np.ndarray:
        if self.d_pad == self.d:
            return X
        return np.pad(X, ((0, 0), (0, self.d_pad - self.d)))

    def _require_trained(self, what: str) -> None:
        if not self.is_trained:
            raise NotFittedError(f"{type(self).__name__} is not trained yet: call train() before {what}()")

    # -- training --------------------------------------------------------------------------------

    def train(self, X, centroids=None) -> "ResidualIVF":
        """Learn the first level and the residual quantizer from ``X`` (n, d). Returns self.

        ``centroids`` (n_centroids, d), when given, replaces the first-level k-means: several indexes
        can then share one k-means run (and one training budget) exactly.
        """
        X = self._check_rows(X, "X")
        if centroids is not None:
            centroids = check_matrix(centroids, "centroids", dim=self.d)
            if centroids.shape[0] != self.n_centroids:
                raise InputError(f"centroids has {centroids.shape[0]} rows, expected n_centroids={self.n_centroids}")
        K = 2 ** self.n_bits_per_code
        need = max(self.n_centroids, K, self._min_train())
        rng = rng_from(self.random_state)
        # sample before converting, so a large uint8 or memory-mapped X is never copied whole
        Xt = check_matrix(subsample(X, self.max_train, rng), dim=self.d)
        if Xt.shape[0] < need:
            raise InputError(f"{type(self).__name__} with {self.n_centroids} centroids and {K} sub-centroids "
                             f"needs at least {need} training vectors, got {Xt.shape[0]}")
        seed = int(rng.integers(0, 2**31 - 1))
        log.info("%s: training on %d vectors", type(self).__name__, Xt.shape[0])
        if centroids is None:
            centroids = kmeans(Xt, self.n_centroids, n_iter=self.n_iter, seed=seed)
        self.centroids_ = centroids
        self._train_structure(Xt, seed + 1)
        residuals = self._residuals(Xt, *self._assign(Xt))
        self.codebooks_ = _pq_train(self._pad(residuals), self.M, K, self.n_iter, seed + 2)
        self._precompute()
        return self

    def _precompute(self) -> None:
        """P[c, m, j] = ||r_mj||² + 2<c_m, r_mj>: the query-independent part of every ADC table."""
        M, K, ds = self.codebooks_.shape
        C = self._pad(self.centroids_).reshape(-1, M, ds)
        cross = np.einsum("cmd,mkd->cmk", C, self.codebooks_, optimize=True)
        norms = np.einsum("mkd,mkd->mk", self.codebooks_, self.codebooks_)
        self._P = np.ascontiguousarray(norms[None] + 2 * cross, dtype=np.float32)
        self._codebooks_t = np.ascontiguousarray(self.codebooks_.transpose(0, 2, 1))

    # -- adding ----------------------------------------------------------------------------------

    def add(self, X, batch_size: int = 65536, progress: bool = False) -> None:
        """Encode ``X`` (n, d) in batches of ``batch_size`` and add it; ids continue from ``ntotal``.

        Only one batch is held in float32 at a time, so ``X`` may be a uint8 or memory-mapped array
        much larger than memory. Nothing is added if any batch is rejected.
        """
        self._require_trained("add")
        batch_size = check_int(batch_size, "batch_size", low=1)
        X = self._check_rows(X, "X")
        from tqdm.auto import tqdm

        n = X.shape[0]
        staged = []
        with tqdm(total=n, disable=not progress, desc=f"{type(self).__name__}.add", unit="vec") as bar:
            for start in range(0, n, batch_size):
                batch = check_matrix(X[start:start + batch_size], "X", dim=self.d)
                list_ids, codes = self._encode_batch(batch)
                ids = np.arange(self.ntotal + start, self.ntotal + start + batch.shape[0], dtype=np.int64)
                staged.append((list_ids, codes, ids))
                bar.update(batch.shape[0])
        for list_ids, codes, ids in staged:
            self.lists.append(list_ids, codes, ids)
        log.info("%s: added %d vectors (ntotal %d)", type(self).__name__, n, self.ntotal)

    def _check_rows(self, X, name: str) -> np.ndarray:
        X = as_array(X, name)
        if X.ndim == 1 and X.shape[0] == self.d:
            X = X[None]
        if X.ndim != 2:
            raise InputError(f"{name} must be 2-D (n, d), got shape {X.shape}")
        if X.shape[1] != self.d:
            raise InputError(f"{name} has dimension {X.shape[1]}, expected {self.d}")
        if X.shape[0] == 0:
            raise InputError(f"{name} is empty (0 rows)")
        return X

    def _encode_batch(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assignment = self._assign(X)
        residuals = self._residuals(X, *assignment)
        pq_codes = _pq_encode(self._pad(residuals), self.codebooks_)
        return self._list_ids(*assignment), self._pack_codes(pq_codes, *assignment)

    def _nearest_centroid(self, X: np.ndarray) -> np.ndarray:
        return assign(X, self.centroids_)[0]

    # -- searching -------------------------------------------------------------------------------

    def _check_search(self, Q, k, nprobe, batch_size) -> tuple[np.ndarray, int, int, int]:
        self._require_trained("search")
        if self.ntotal == 0:
            raise InputError("the index is empty: add vectors before searching")
        Q = check_matrix(Q, "queries", dim=self.d)
        k = check_int(k, "k", low=1)
        if k > self.ntotal:
            raise InputError(f"k={k} is larger than the database ({self.ntotal} items)")
        nprobe = check_int(nprobe, "nprobe", low=1, high=self.n_centroids)
        batch_size = check_int(batch_size, "batch_size", low=1)
        return Q, k, nprobe, batch_size

    def _query_terms(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances (nq, n_centroids) to the centroids (one GEMM), and the zero-padded
        queries (nq, d_pad) from which the kernels build their per-query tables."""
        C = self.centroids_
        dqc = (np.einsum("qd,qd->q", Q, Q)[:, None] - 2 * (Q @ C.T)) + np.einsum("cd,cd->c", C, C)[None]
        np.maximum(dqc, 0, out=dqc)
        return np.ascontiguousarray(dqc, dtype=np.float32), np.ascontiguousarray(self._pad(Q), dtype=np.float32)

    # -- reconstruction --------------------------------------------------------------------------

    def reconstruct(self, ids) -> np.ndarray:
        """The vectors (n, d) float32 that the index stores for the given ids (what ADC measures to)."""
        self._require_trained("reconstruct")
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.ntotal):
            raise InputError(f"ids must lie in [0, {self.ntotal}), got values in [{ids.min()}, {ids.max()}]")
        lists, rows = self.lists.locate(ids.astype(np.int64))
        codes = np.asarray(self.lists.codes[rows])
        M = self.M
        r = np.concatenate([self.codebooks_[m][codes[:, m]] for m in range(M)], axis=1)[:, :self.d]
        return (self._bases(lists, codes) + r).astype(np.float32)

    # -- persistence -----------------------------------------------------------------------------

    def save(self, path, meta: dict | None = None) -> None:
        """Save the index to ``path`` atomically; a failed save leaves any previous file intact."""
        self._require_trained("save")
        persist.save(self, path, meta=meta)

    def _params(self) -> dict:
        rs = self.random_state
        return {"d": self.d, "n_centroids": self.n_centroids, "M": self.M,
                "n_bits_per_code": self.n_bits_per_code, "n_iter": self.n_iter, "max_train": self.max_train,
                "random_state": int(rs) if isinstance(rs, (int, np.integer)) else None}

    def _trained_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"centroids": self.centroids_, "codebooks": self.codebooks_}
        arrays.update({name: getattr(self, name + "_") for name in self._extra_arrays})
        return arrays

    def _get_state(self):
        lists = self.lists
        arrays = dict(self._trained_arrays())
        arrays.update({"list_offsets": lists.offsets, "list_codes": lists.codes, "list_ids": lists.ids})
        return self._params(), arrays

    @classmethod
    def _from_state(cls, params, arrays):
        obj = cls(**params)
        expected = {"centroids": (obj.n_centroids, obj.d),
                    "codebooks": (obj.M, 2 ** obj.n_bits_per_code, obj.d_pad // obj.M)}
        expected.update(obj._extra_shapes())
        for name, shape in expected.items():
            if name not in arrays:
                raise FormatError(f"{cls.__name__} file lacks the array {name!r}")
            if tuple(arrays[name].shape) != shape:
                raise FormatError(f"{cls.__name__} array {name!r} has shape {tuple(arrays[name].shape)}, expected {shape}")
        # the small trained arrays are copied out of a mapped file, so they match freshly trained ones
        obj.centroids_ = np.array(arrays["centroids"], dtype=np.float32, order="C")
        obj.codebooks_ = np.array(arrays["codebooks"], dtype=np.float32, order="C")
        with as_format_errors(cls.__name__):     # distances from them must stay finite in float32
            check_finite_float32(obj.centroids_, "array 'centroids'")
            check_finite_float32(obj.codebooks_, "array 'codebooks'")
        for name in cls._extra_arrays:
            setattr(obj, name + "_", np.array(arrays[name], order="C"))
        obj._check_extra()
        lists = InvertedLists.from_arrays(arrays["list_offsets"], arrays["list_codes"], arrays["list_ids"])
        if lists.nlist != obj._nlist() or lists.code_size != obj._code_size():
            raise FormatError(f"{cls.__name__} lists: {lists.nlist} lists of {lists.code_size}-byte codes, "
                              f"expected {obj._nlist()} of {obj._code_size()}")
        obj.lists = lists
        obj._precompute()
        return obj

    # -- subclass hooks --------------------------------------------------------------------------

    def _nlist(self) -> int:
        raise NotImplementedError

    def _code_size(self) -> int:
        raise NotImplementedError

    def _min_train(self) -> int:
        return 1

    def _train_structure(self, X: np.ndarray, seed: int) -> None:
        """Hook: learn what the lists need beyond the centroids (VLQ: neighbours, lambda codebook)."""

    def _assign(self, X: np.ndarray) -> tuple:
        raise NotImplementedError

    def _residuals(self, X: np.ndarray, *assignment) -> np.ndarray:
        raise NotImplementedError

    def _list_ids(self, *assignment) -> np.ndarray:
        raise NotImplementedError

    def _pack_codes(self, pq_codes: np.ndarray, *assignment) -> np.ndarray:
        raise NotImplementedError

    def _bases(self, lists: np.ndarray, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _extra_shapes(self) -> dict[str, tuple]:
        return {}

    def _check_extra(self) -> None:
        """Hook: check loaded first-level arrays beyond their shapes."""
