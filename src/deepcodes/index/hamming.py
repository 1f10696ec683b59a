"""Exact Hamming k-NN over packed binary codes."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import InputError
from ..knn.hamming import hamming_search, to_words
from ..validation import check_codes, check_int, check_n_bits
from .flat import FlatIndex


@persist.register
class HammingIndex(FlatIndex):
    """Exact k-nearest-neighbour search in Hamming distance over packed ``uint8`` codes (the
    contract is :class:`~deepcodes.index.base.CodeIndex`'s).

    Results are sorted by (Hamming distance, id): ties go to the lower id, exactly as a stable sort
    of all distances would give. Search parameter: ``batch_size`` (queries per kernel call).

    Parameters
    ----------
    n_bits : code length, a multiple of 8 (taken from ``coder`` when one is given).
    coder : optional BinaryCoder (fitted, or fitted by ``train``); then ``add``/``search`` take
        vectors and encode them. Without one they take packed codes (n, n_bits/8) uint8.
    d : the input dimension, for an index whose coder is not fitted yet (the factory sets it).
    spec : the factory string the index was built from.
    """

    search_params = {"batch_size": 4096}
    distance_kind = "binary"

    def __init__(self, n_bits: int | None = None, coder=None, *, d: int | None = None, spec: str | None = None):
        if coder is not None:
            if getattr(coder, "code_kind", None) != "binary":
                raise InputError(f"{type(self).__name__} needs a binary coder, got {type(coder).__name__}")
            if n_bits is not None and n_bits != coder.n_bits:
                raise InputError(f"n_bits={n_bits} does not match the coder's {coder.n_bits} bits")
            n_bits = coder.n_bits
        if n_bits is None:
            raise InputError(f"{type(self).__name__} needs n_bits or a binary coder")
        self.n_bits = check_n_bits(n_bits)
        self._words = (-1, None)
        super().__init__(coder, d=d, spec=spec)

    @property
    def code_size(self) -> int:
        return self.n_bits // 8

    def search_codes(self, query_codes, k: int, **params) -> tuple[np.ndarray, np.ndarray]:
        """``search`` for packed query codes (nq, n_bits/8) uint8, whether or not there is a coder."""
        params = self._resolve_params(params)
        k = self._check_k(k)
        return self._search(check_codes(query_codes, "query codes", code_size=self.code_size), k, **params)

    def _queries(self, Q) -> np.ndarray:
        if self.coder is None:
            return check_codes(Q, "query codes", code_size=self.code_size)
        return self.coder.encode(Q)

    def _stored_queries(self, rows: np.ndarray) -> np.ndarray:
        return np.array(self._store.codes[rows])

    def _database_words(self) -> np.ndarray:
        """The stored codes as uint64 words, rebuilt after any change."""
        version, words = self._words
        if version != self._store.version:
            words = to_words(self._store.codes)
            self._words = (self._store.version, words)
        return words

    def _search(self, codes: np.ndarray, k: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        batch_size = check_int(batch_size, "batch_size", low=1)
        dist, rows = hamming_search(codes, self._database_words(), k, self.n_bits, batch_size)
        return dist, self._store.ids_at(rows)

    def _params(self) -> dict:
        return {**super()._params(), "n_bits": self.n_bits}

    @classmethod
    def _build(cls, params, coder):
        return cls(n_bits=params["n_bits"], coder=coder, d=params.get("d"), spec=params.get("spec"))
