"""Flat storage: every code in one array, rows sorted by id, so that a kernel breaking ties by row
breaks them by id. The flat indexes (Hamming, multi-index hashing, ADC) scan or hash these rows."""
from __future__ import annotations

import numpy as np

from .. import nested
from ..errors import FormatError
from ..validation import check_codes
from ..coders.base import fit_with_progress, is_fitted
from ..knn.arrays import read_only
from .base import CodeIndex, PendingIds, find_sorted


class FlatCodes:
    """Codes (n, code_size) uint8, their ids (n,) int64 ascending, and optionally one float32 value
    per code (``aux``, e.g. the ADC distance's per-code term).

    ``append`` queues entries; they are merged (and sorted by id, when they arrive out of order) on
    the next access, so adding in many batches costs one merge. ``version`` changes with every
    change, for tables derived from the codes.
    """

    def __init__(self, code_size: int, with_aux: bool = False):
        self.code_size = int(code_size)
        self._codes = np.empty((0, self.code_size), dtype=np.uint8)
        self._ids = np.empty(0, dtype=np.int64)
        self._aux = np.empty(0, dtype=np.float32) if with_aux else None
        self._pending: list[tuple] = []
        self._pending_ids = PendingIds()
        self._n_pending = 0
        self._in_order = True
        self.max_id = -1
        self.version = 0

    @classmethod
    def from_arrays(cls, codes: np.ndarray, ids: np.ndarray, aux: np.ndarray | None = None) -> "FlatCodes":
        """Wrap stored arrays (e.g. memory-mapped ones) after checking them."""
        if codes.ndim != 2 or codes.dtype != np.uint8 or ids.ndim != 1 or ids.dtype != np.int64:
            raise FormatError(f"stored codes/ids have shapes {codes.shape}/{ids.shape} and dtypes "
                              f"{codes.dtype}/{ids.dtype}, expected (n, code_size) uint8 and (n,) int64")
        if ids.shape[0] != codes.shape[0]:
            raise FormatError(f"{codes.shape[0]} stored codes but {ids.shape[0]} ids")
        if ids.size and (ids[0] < 0 or (ids[1:] <= ids[:-1]).any()):
            raise FormatError("stored ids are not distinct, ascending and >= 0")
        obj = cls(codes.shape[1], with_aux=aux is not None)
        obj._codes, obj._ids = codes, ids
        if aux is not None:
            obj._aux = np.asarray(aux, dtype=np.float32)
        obj.max_id = int(ids[-1]) if ids.size else -1
        return obj

    @property
    def ntotal(self) -> int:
        return int(self._codes.shape[0] + self._n_pending)

    def append(self, codes: np.ndarray, ids: np.ndarray, aux: np.ndarray | None = None) -> None:
        """Queue codes under ``ids`` (distinct, and not stored: the caller checked)."""
        if ids.size == 0:
            return
        self._in_order &= bool(ids[0] > self.max_id and (ids[1:] > ids[:-1]).all())
        self._pending.append((codes, ids, aux))
        self._pending_ids.add(ids)
        self._n_pending += codes.shape[0]
        self.max_id = max(self.max_id, int(ids.max()))
        self.version += 1

    def _merge(self) -> None:
        if not self._pending:
            return
        codes = np.concatenate([self._codes] + [p[0] for p in self._pending])
        ids = np.concatenate([self._ids] + [p[1] for p in self._pending])
        aux = None if self._aux is None else np.concatenate([self._aux] + [p[2] for p in self._pending])
        if not self._in_order:
            order = np.argsort(ids, kind="stable")
            codes, ids = codes[order], ids[order]
            aux = None if aux is None else aux[order]
        self._codes, self._ids, self._aux = codes, ids, aux
        self._pending, self._n_pending, self._in_order = [], 0, True
        self._pending_ids.clear()

    @property
    def codes(self) -> np.ndarray:
        """All codes (ntotal, code_size) in id order, read-only."""
        self._merge()
        return read_only(self._codes)

    @property
    def ids(self) -> np.ndarray:
        """All ids (ntotal,) ascending, read-only."""
        self._merge()
        return read_only(self._ids)

    @property
    def aux(self) -> np.ndarray:
        self._merge()
        return read_only(self._aux)

    def ids_at(self, rows: np.ndarray) -> np.ndarray:
        """The ids stored at positions ``rows``: ``rows`` itself when the ids are 0..n-1 (sorted and
        unique, so a first id 0 and a last id n-1 mean exactly that), sparing a full ranking's gather."""
        ids = self.ids
        if len(ids) and ids[0] == 0 and ids[-1] == len(ids) - 1:
            return rows
        return ids[rows]

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, found)`` of ``ids``."""
        return find_sorted(self.ids, ids)

    def stored(self, ids: np.ndarray) -> np.ndarray:
        """Whether each of ``ids`` is stored or queued (bool (n,)), without merging the queue."""
        return find_sorted(self._ids, ids)[1] | self._pending_ids.contains(ids)

    def remove(self, rows: np.ndarray) -> None:
        keep = np.ones(self.ntotal, dtype=bool)
        keep[rows] = False
        self._merge()
        self._codes, self._ids = self._codes[keep], self._ids[keep]
        if self._aux is not None:
            self._aux = self._aux[keep]
        self.max_id = int(self._ids[-1]) if self._ids.size else -1
        self.version += 1


class FlatIndex(CodeIndex):
    """Base of the flat indexes: :class:`FlatCodes` and an optional coder that turns vectors into
    codes (fitted, or fitted by ``train``). Without a coder, ``add`` and ``search`` take codes."""

    _with_aux = False

    def __init__(self, coder=None, *, d: int | None = None, spec: str | None = None):
        self.coder = coder
        self.spec = spec
        self._d = d
        self._store = FlatCodes(self.code_size, with_aux=self._with_aux)

    @property
    def d(self) -> int | None:
        """Input dimension: the coder's (None for an index of bare codes)."""
        if self.coder is not None and is_fitted(self.coder):
            return int(self.coder.n_features_in_)
        return self._d

    @property
    def is_trained(self) -> bool:
        return self.coder is None or is_fitted(self.coder)

    @property
    def codes(self) -> np.ndarray:
        """All stored codes (ntotal, code_size), in id order (read-only)."""
        return self._store.codes

    def train(self, X, y=None, *, progress: bool = False) -> "FlatIndex":
        """Fit the coder on ``X`` (and labels ``y`` for a supervised coder) unless it is fitted."""
        if not self.is_trained:
            fit_with_progress(self.coder, self._check_rows(X, "X"), y, progress)
        return self

    def add(self, X, ids=None, *, batch_size: int = 65536, progress: bool = False) -> None:
        if self.coder is None:
            self.add_codes(X, ids)
            return
        super().add(X, ids, batch_size=batch_size, progress=progress)

    def add_codes(self, codes, ids=None) -> None:
        """Store codes (n, code_size) uint8 under ``ids``."""
        codes = check_codes(codes, code_size=self.code_size)
        self._check_code_values(codes)
        self._append(codes, self._new_ids(ids, codes.shape[0]))

    def _encode_batch(self, X: np.ndarray) -> np.ndarray:
        return self.coder.encode(X)

    def _append(self, codes: np.ndarray, ids: np.ndarray) -> None:
        self._store.append(codes, ids, self._aux_of(codes) if self._with_aux else None)

    def _aux_of(self, codes: np.ndarray) -> np.ndarray:
        """Hook: the per-code float32 term kept beside each code (with ``_with_aux``)."""
        raise NotImplementedError

    def _check_code_values(self, codes: np.ndarray) -> None:
        """Hook: reject codes the index cannot hold."""

    def _params(self) -> dict:
        return {"spec": self.spec, "d": self._d}

    def _describe_params(self) -> dict:
        params = self._params()
        if self.coder is not None:
            params["coder"] = type(self.coder).__name__
        return params

    def _get_state(self):
        params = self._params()
        arrays = {"codes": self._store.codes, "ids": self._store.ids}
        if self.coder is not None:
            params["coder"], coder_arrays = nested.part_state(self.coder, "coder")
            arrays.update(coder_arrays)
        return params, arrays

    @classmethod
    def _from_state(cls, params, arrays):
        params = dict(params)
        coder_doc = params.pop("coder", None)
        coder = None if coder_doc is None else nested.part_from_state(coder_doc, arrays, "coder")
        obj = cls._build(params, coder)
        codes = arrays["codes"]
        if codes.ndim != 2 or codes.shape[1] != obj.code_size or codes.dtype != np.uint8:
            raise FormatError(f"stored codes have shape {codes.shape} and dtype {codes.dtype}, "
                              f"expected (n, {obj.code_size}) uint8")
        ids = arrays.get("ids")
        if ids is None:  # files written before ids were the caller's: ids were positions
            ids = np.arange(codes.shape[0], dtype=np.int64)
        aux = obj._aux_of(codes) if cls._with_aux else None
        obj._store = FlatCodes.from_arrays(codes, ids, aux)
        return obj

    @classmethod
    def _build(cls, params: dict, coder):
        """The empty index a file describes."""
        raise NotImplementedError

