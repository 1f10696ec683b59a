"""Exact Hamming k-NN over packed binary codes."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import InputError
from ..validation import check_codes, check_n_bits
from .base import CodeIndex
from .kernels import hamming_knn


def to_words(codes: np.ndarray) -> np.ndarray:
    """View packed codes (n, B) uint8 as (n, ceil(B/8)) uint64 words, zero-padded (no distance change)."""
    n, nbytes = codes.shape
    n_words = -(-nbytes // 8)
    if nbytes == 8 * n_words:
        return np.ascontiguousarray(codes).view(np.uint64)
    padded = np.zeros((n, 8 * n_words), dtype=np.uint8)
    padded[:, :nbytes] = codes
    return padded.view(np.uint64)


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
        n = self.ntotal
        capacity = min(n, max(2 * k, k + 1024))
        # Blocks of queries share each database pass; the block shrinks when candidate buffers are big.
        block = int(max(1, min(16, -(-query_codes.shape[0] // 2), (1 << 22) // capacity)))
        out_d = np.empty((query_codes.shape[0], k), dtype=np.int32)
        out_i = np.empty((query_codes.shape[0], k), dtype=np.int64)
        for s in range(0, query_codes.shape[0], batch_size):
            qw = to_words(query_codes[s:s + batch_size])
            out_d[s:s + batch_size], out_i[s:s + batch_size] = hamming_knn(qw, self._words, k, self.n_bits, block, capacity)
        return out_d, out_i

    def _params(self) -> dict:
        return {"n_bits": self.n_bits}

    @classmethod
    def _build(cls, params, coder):
        return cls(n_bits=params["n_bits"], coder=coder)
