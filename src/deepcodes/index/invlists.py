"""Inverted lists in CSR form, and the residual-PQ inverted-file machinery IVFADCIndex and VLQIndex share.

The lists are three flat arrays, so they save as plain tensors and map read-only on load:
``offsets`` (nlist + 1,) int64, ``codes`` (n, code_size) uint8 and ``ids`` (n,) int64; list ``l``
spans rows ``offsets[l]:offsets[l + 1]``, within a list in insertion order. ``add`` keeps new
entries in pending chunks and merges them into the CSR arrays once, on first use. The search
kernels compare (distance, id) pairs in their heaps, so the row order never decides a tie.
"""
from __future__ import annotations

import logging

import numpy as np

from .. import nested
from ..coders.kmeans import assign, kmeans
from ..coders.pq import pq_encode, pq_train, check_quantizer_shape
from ..errors import FormatError, InputError
from ..validation import (as_format_errors, check_codes, check_finite_float32, check_int, check_labels, check_matrix,
                          rng_from)
from ..coders.base import fit_with_progress, is_fitted
from .base import CodeIndex, PendingIds, find_sorted
from .ivf_kernels import squared_distances_from_dots
from ..knn.arrays import read_only
from ..threads import matmul_rows

log = logging.getLogger(__name__)


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
        self._pending_ids = PendingIds()
        # (merged ids ascending, their rows): built on demand, dropped when the merged arrays change
        self._by_id: tuple[np.ndarray, np.ndarray] | None = None
        self.max_id = -1
        self.version = 0

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
        sorted_ids = obj._sorted_ids()[0]
        if n and (sorted_ids[1:] == sorted_ids[:-1]).any():
            raise FormatError("inverted lists hold an id twice")
        obj.max_id = int(sorted_ids[-1]) if n else -1
        return obj

    @property
    def ntotal(self) -> int:
        return int(self._codes.shape[0] + self._n_pending)

    def append(self, list_ids: np.ndarray, codes: np.ndarray, ids: np.ndarray) -> None:
        """Queue entries (ids distinct and not stored: the caller checked); they join the CSR arrays
        on the next access."""
        self._pending.append((list_ids.astype(np.int64, copy=False), codes, ids))
        self._pending_ids.add(ids)
        self._n_pending += codes.shape[0]
        self.max_id = max(self.max_id, int(ids.max()))
        self.version += 1

    def _merge(self) -> None:
        if not self._pending:
            return
        list_ids = np.concatenate([self.row_lists()] + [p[0] for p in self._pending])
        # a stable sort by list keeps every list in insertion order
        order = np.argsort(list_ids, kind="stable")
        self._codes = np.concatenate([self._codes] + [p[1] for p in self._pending])[order]
        self._ids = np.concatenate([self._ids] + [p[2] for p in self._pending])[order]
        self._set_offsets(list_ids)
        self._pending = []
        self._n_pending = 0
        self._pending_ids.clear()
        self._by_id = None

    def _set_offsets(self, list_ids: np.ndarray) -> None:
        self._offsets = np.zeros(self.nlist + 1, dtype=np.int64)
        np.cumsum(np.bincount(list_ids, minlength=self.nlist), out=self._offsets[1:])

    def row_lists(self) -> np.ndarray:
        """The list of every merged row (n,) int64."""
        return np.repeat(np.arange(self.nlist, dtype=np.int64), np.diff(self._offsets))

    @property
    def offsets(self) -> np.ndarray:
        self._merge()
        return read_only(self._offsets)

    @property
    def codes(self) -> np.ndarray:
        self._merge()
        return read_only(self._codes)

    @property
    def ids(self) -> np.ndarray:
        self._merge()
        return read_only(self._ids)

    def _sorted_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """``(merged ids ascending, their rows)``, kept until the merged arrays change."""
        if self._by_id is None:
            rows = np.argsort(self._ids, kind="stable")
            self._by_id = (self._ids[rows], rows)
        return self._by_id

    def stored(self, ids: np.ndarray) -> np.ndarray:
        """Whether each of ``ids`` is stored or queued (bool (n,)), without merging the queue."""
        return find_sorted(self._sorted_ids()[0], ids)[1] | self._pending_ids.contains(ids)

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, found)`` of ``ids``: rows into ``codes``/``ids``."""
        self._merge()
        sorted_ids, rows = self._sorted_ids()
        pos, found = find_sorted(sorted_ids, ids)
        return (rows[pos] if rows.size else pos), found

    def lists_of(self, rows: np.ndarray) -> np.ndarray:
        """The list of each of the given merged rows."""
        return np.searchsorted(self.offsets, rows, side="right") - 1

    def remove(self, rows: np.ndarray) -> None:
        self._merge()
        keep = np.ones(self.ntotal, dtype=bool)
        keep[rows] = False
        list_ids = self.row_lists()[keep]
        self._codes, self._ids = self._codes[keep], self._ids[keep]
        self._by_id = None
        self._set_offsets(list_ids)
        self.max_id = int(self._ids.max()) if self._ids.size else -1
        self.version += 1


class ResidualIVF(CodeIndex):
    """Base of the inverted-file indexes (the contract is :class:`~deepcodes.index.base.CodeIndex`'s):
    an optional front, a first level of ``n_centroids`` k-means centroids (faiss), a residual
    product quantizer and CSR inverted lists.

    The front (PCA, an OPQ rotation, a learned network: anything persistable with
    ``transform(X) -> (n, p)``) maps the d-dimensional inputs to the space the lists live in
    (``list_dim`` = p); an unfitted front is fitted by ``train``.

    Subclasses define the list structure: ``_nlist``, ``_train_structure``, ``_assign`` (vectors to
    list ids and residual reconstructions' bases), ``_code_size`` and ``_scan`` (the kernel call).

    Inputs whose dimension is not a multiple of ``M`` are zero-padded inside the residual quantizer,
    which changes no distance; this lets codes of any byte count be compared at equal size.
    """

    search_params = {"nprobe": 8, "batch_size": 1024, "return_scanned": False}
    _extra_arrays: tuple[str, ...] = ()

    def __init__(self, d: int, n_centroids: int, M: int = 8, n_bits_per_code: int = 8, n_iter: int = 20,
                 max_train: int | None = None, random_state=None, *, front=None, spec: str | None = None):
        self.d = check_int(d, "d (dimension)", low=1)
        self.n_centroids = check_int(n_centroids, "n_centroids", low=1)
        self.M, self.n_bits_per_code = check_quantizer_shape(M, n_bits_per_code)
        self.front = front
        self.spec = spec
        self.list_dim = self._front_dim()
        if self.M > self.list_dim:
            raise InputError(f"M={self.M} sub-quantizers exceed the dimension {self.list_dim}"
                             + (" of the front's output" if front is not None else ""))
        self.n_iter = check_int(n_iter, "n_iter", low=1)
        self.max_train = None if max_train is None else check_int(max_train, "max_train", low=1)
        self.random_state = random_state
        rng_from(random_state)  # validates it
        self.centroids_: np.ndarray | None = None
        self.codebooks_: np.ndarray | None = None
        self._P: np.ndarray | None = None
        self._store = InvertedLists(self._nlist(), self._code_size())

    def _front_dim(self) -> int:
        """Dimension of the front's output (d without a front)."""
        front = self.front
        if front is None:
            return self.d
        if not callable(getattr(front, "transform", None)):
            raise InputError(f"a front must have transform(X), got {type(front).__name__}")
        if is_fitted(front):
            if int(front.n_features_in_) != self.d:
                raise InputError(f"the front takes {front.n_features_in_}-dimensional input, the index d={self.d}")
            return int(front.transform(np.zeros((1, self.d), np.float32)).shape[1])
        if callable(getattr(front, "output_dim", None)):
            return int(front.output_dim(self.d))
        raise InputError(f"the front {type(front).__name__} must be fitted (or give output_dim(d))")

    # -- shape ---------------------------------------------------------------------------------

    @property
    def lists(self) -> InvertedLists:
        """The inverted lists (CSR arrays)."""
        return self._store

    @property
    def d_pad(self) -> int:
        return -(-self.list_dim // self.M) * self.M

    @property
    def code_size(self) -> int:
        """Bytes of code per stored vector (ids not counted)."""
        return self._code_size()

    @property
    def is_trained(self) -> bool:
        return self.codebooks_ is not None

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
        if self.d_pad == self.list_dim:
            return X
        return np.pad(X, ((0, 0), (0, self.d_pad - self.list_dim)))

    def _to_list_space(self, X: np.ndarray) -> np.ndarray:
        """Checked float32 rows (n, d) through the front: (n, list_dim) float32."""
        if self.front is None:
            return X
        return check_matrix(self.front.transform(X), "the front's output", dim=self.list_dim)

    # -- training --------------------------------------------------------------------------------

    def train(self, X, y=None, *, centroids=None, progress: bool = False) -> "ResidualIVF":
        """Learn the front (when unfitted), the first level and the residual quantizer from ``X``
        (n, d), with labels ``y`` (n,) for a supervised front. A no-op when trained. Returns self.

        ``centroids`` (n_centroids, list_dim), when given, replaces the first-level k-means: several
        indexes can then share one k-means run (and one training budget) exactly.
        """
        from tqdm.auto import tqdm

        if self.is_trained:
            return self
        X = self._check_rows(X, "X")
        if centroids is not None:
            centroids = check_matrix(centroids, "centroids", dim=self.list_dim)
            if centroids.shape[0] != self.n_centroids:
                raise InputError(f"centroids has {centroids.shape[0]} rows, expected n_centroids={self.n_centroids}")
        labels = None if y is None else check_labels(y, X.shape[0])
        K = 2 ** self.n_bits_per_code
        need = max(self.n_centroids, K, self._min_train())
        rng = rng_from(self.random_state)
        rows = slice(None)
        if self.max_train is not None and X.shape[0] > self.max_train:
            rows = np.sort(rng.choice(X.shape[0], self.max_train, replace=False))
        # sample before converting, so a large uint8 or memory-mapped X is never copied whole
        Xt = check_matrix(X[rows], dim=self.d)
        if Xt.shape[0] < need:
            raise InputError(f"{type(self).__name__} with {self.n_centroids} centroids and {K} sub-centroids "
                             f"needs at least {need} training vectors, got {Xt.shape[0]}")
        seed = int(rng.integers(0, 2**31 - 1))
        log.info("%s: training on %d vectors", type(self).__name__, Xt.shape[0])
        with tqdm(total=4, disable=not progress, desc=f"{type(self).__name__}.train", unit="step") as bar:
            if self.front is not None and not is_fitted(self.front):
                fit_with_progress(self.front, Xt, None if labels is None else labels[rows], progress)
            Xt = self._to_list_space(Xt)
            bar.update()
            if centroids is None:
                centroids = kmeans(Xt, self.n_centroids, n_iter=self.n_iter, seed=seed)
            self.centroids_ = centroids
            bar.update()
            self._train_structure(Xt, seed + 1)
            bar.update()
            residuals = self._residuals(Xt, *self._assign(Xt))
            self.codebooks_ = pq_train(self._pad(residuals), self.M, K, self.n_iter, seed + 2)
            self._precompute()
            bar.update()
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

    def _encode_batch(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Z = self._to_list_space(check_matrix(X, "X", dim=self.d))
        assignment = self._assign(Z)
        residuals = self._residuals(Z, *assignment)
        pq_codes = pq_encode(self._pad(residuals), self.codebooks_)
        return self._list_ids(*assignment), self._pack_codes(pq_codes, *assignment)

    def _append(self, encoded, ids: np.ndarray) -> None:
        list_ids, codes = encoded
        self._store.append(list_ids, codes, ids)

    def add_codes(self, codes, ids=None, *, lists=None) -> None:
        """Store codes (n, code_size) uint8 as the lists hold them (see ``get_codes``) under ``ids``,
        code i in list ``lists[i]`` (see ``get_lists``)."""
        self._require_trained("add_codes")
        codes = check_codes(codes, code_size=self.code_size)
        if lists is None:
            raise InputError("an inverted index stores each code in a list: pass lists=, the list of "
                             "each code (get_lists gives those of stored items)")
        lists = np.asarray(lists)
        if lists.ndim != 1 or not np.issubdtype(lists.dtype, np.integer):
            raise InputError(f"lists must be a 1-D integer array, got shape {lists.shape} dtype {lists.dtype}")
        if lists.shape[0] != codes.shape[0]:
            raise InputError(f"got {lists.shape[0]} lists for {codes.shape[0]} codes")
        if lists.min() < 0 or lists.max() >= self._store.nlist:
            raise InputError(f"lists must lie in [0, {self._store.nlist}), got values in [{lists.min()}, {lists.max()}]")
        K = 2 ** self.n_bits_per_code
        if codes[:, :self.M].max() >= K:
            raise InputError(f"codes hold sub-codes >= K={K}")
        self._store.append(lists, codes, self._new_ids(ids, codes.shape[0]))

    def get_lists(self, ids) -> np.ndarray:
        """The inverted list (n,) int64 that holds each of ``ids``."""
        return self._store.lists_of(self._rows(ids))

    def _nearest_centroid(self, X: np.ndarray) -> np.ndarray:
        return assign(X, self.centroids_)[0]

    # -- searching -------------------------------------------------------------------------------

    def _queries(self, Q) -> np.ndarray:
        return self._to_list_space(check_matrix(Q, "queries", dim=self.d))

    def _stored_queries(self, rows: np.ndarray) -> np.ndarray:
        return self._reconstruct_rows(rows)

    def _query_terms(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances (nq, n_centroids) to the centroids (one GEMM), and the zero-padded
        queries (nq, d_pad) from which the kernels build their per-query tables."""
        C = self.centroids_
        dqc = squared_distances_from_dots(matmul_rows(Q, C.T),
                                          np.einsum("qd,qd->q", Q, Q), np.einsum("cd,cd->c", C, C))
        return dqc, np.ascontiguousarray(self._pad(Q), dtype=np.float32)

    def _search(self, Q: np.ndarray, k: int, nprobe: int, batch_size: int, return_scanned: bool, **extra):
        """Batches of list-space queries through ``_scan``: ``(distances, ids[, scanned])``."""
        nprobe = check_int(nprobe, "nprobe", low=1, high=self.n_centroids)
        batch_size = check_int(batch_size, "batch_size", low=1)
        if not isinstance(return_scanned, (bool, np.bool_)):
            raise InputError(f"return_scanned must be True or False, got {return_scanned!r}")
        extra = self._check_scan_params(nprobe, **extra)
        lists = self.lists
        offsets, codes, ids = lists.offsets, lists.codes, lists.ids
        out = [np.empty((Q.shape[0], k), np.float32), np.empty((Q.shape[0], k), np.int64),
               np.empty(Q.shape[0], np.int64)]
        for s in range(0, Q.shape[0], batch_size):
            dqc, Qp = self._query_terms(Q[s:s + batch_size])
            dqc, Qp = read_only(dqc), read_only(Qp)
            for o, r in zip(out, self._scan(dqc, Qp, k, nprobe, offsets, codes, ids, **extra)):
                o[s:s + batch_size] = r
        return tuple(out) if return_scanned else (out[0], out[1])

    def _check_scan_params(self, nprobe: int) -> dict:
        """Hook: check the subclass's own search parameters."""
        return {}

    # -- reconstruction --------------------------------------------------------------------------

    def _reconstruct_rows(self, rows: np.ndarray) -> np.ndarray:
        lists = self._store.lists_of(rows)
        codes = np.asarray(self._store.codes[rows])
        r = np.concatenate([self.codebooks_[m][codes[:, m]] for m in range(self.M)], axis=1)[:, :self.list_dim]
        return (self._bases(lists, codes) + r).astype(np.float32)

    # -- persistence -----------------------------------------------------------------------------

    def _params(self) -> dict:
        rs = self.random_state
        return {"d": self.d, "n_centroids": self.n_centroids, "M": self.M,
                "n_bits_per_code": self.n_bits_per_code, "n_iter": self.n_iter, "max_train": self.max_train,
                "random_state": int(rs) if isinstance(rs, (int, np.integer)) else None, "spec": self.spec}

    def _describe_params(self) -> dict:
        params = {**self._params(), "list_dim": self.list_dim}
        if self.front is not None:
            params["front"] = type(self.front).__name__
        return params

    def _trained_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"centroids": self.centroids_, "codebooks": self.codebooks_}
        arrays.update({name: getattr(self, name + "_") for name in self._extra_arrays})
        return arrays

    def _get_state(self):
        lists = self.lists
        params = self._params()
        arrays = dict(self._trained_arrays())
        arrays.update({"list_offsets": lists.offsets, "list_codes": lists.codes, "list_ids": lists.ids})
        if self.front is not None:
            params["front"], front_arrays = nested.part_state(self.front, "front")
            arrays.update(front_arrays)
        return params, arrays

    @classmethod
    def _from_state(cls, params, arrays):
        params = dict(params)
        front_doc = params.pop("front", None)
        front = None if front_doc is None else nested.part_from_state(front_doc, arrays, "front")
        obj = cls(**params, front=front)
        expected = {"centroids": (obj.n_centroids, obj.list_dim),
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
        obj._store = lists
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

    def _scan(self, dqc, Qp, k, nprobe, offsets, codes, ids, **extra):
        """Hook: the search kernel over one batch: ``(distances, ids, scanned)``."""
        raise NotImplementedError

    def _extra_shapes(self) -> dict[str, tuple]:
        return {}

    def _check_extra(self) -> None:
        """Hook: check loaded first-level arrays beyond their shapes."""
