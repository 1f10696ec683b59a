"""Exact Hamming k-NN over packed binary codes."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import InputError
from ..knn.hamming import hamming_search, to_words
from ..validation import check_codes, check_n_bits
from .base import CodeIndex


@persist.register
class HammingIndex(CodeIndex):
    """Exact k-nearest-neighbour search in Hamming distance over packed ``uint8`` codes.

    Results are sorted by (Hamming distance, database id): ties go to the lower id, exactly as a
    stable sort of all distances would give.

    Parameters
    ----------
    n_bits : code length, a multiple of 8 (taken from ``coder`` when one is given).
    coder : optional fitted BinaryCoder; then ``add``/``search`` take vectors and encode them.
    """

    def __init__(self, n_bits: int | None = None, coder=None):
        if coder is not None:
            if getattr(coder, "code_kind", None) != "binary":
                raise InputError(f"HammingIndex needs a binary coder, got {type(coder).__name__}")
            if n_bits is not None and n_bits != coder.n_bits:
                raise InputError(f"n_bits={n_bits} does not match the coder's {coder.n_bits} bits")
            n_bits = coder.n_bits
        if n_bits is None:
            raise InputError("HammingIndex needs n_bits or a fitted binary coder")
        self.n_bits = check_n_bits(n_bits)
        self._words = None
        super().__init__(coder)

    @property
    def code_size(self) -> int:
        return self.n_bits // 8

    def _on_add(self, codes) -> None:
        self._words = None

    def search(self, Q, k: int, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """k nearest codes of each query: ``(distances (nq, k) int32, ids (nq, k) int64)``.

        ``Q`` holds vectors when the index has a coder, else packed query codes (nq, n_bits/8).
        """
        codes = Q if self.coder is None else self._encode(Q, "search")
        return self.search_codes(codes, k, batch_size=batch_size)

    def search_codes(self, query_codes, k: int, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Like ``search`` for packed query codes (nq, n_bits/8) uint8."""
        k = self._check_search(k, batch_size)
        query_codes = check_codes(query_codes, "query codes", code_size=self.code_size)
        if self._words is None:
            self._words = to_words(self.codes)
        return hamming_search(query_codes, self._words, k, self.n_bits, batch_size)

    def _params(self) -> dict:
        return {"n_bits": self.n_bits}

    @classmethod
    def _build(cls, params, coder):
        return cls(n_bits=params["n_bits"], coder=coder)
