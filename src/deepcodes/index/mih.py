"""Multi-index hashing: exact Hamming k-NN without scanning the whole database.

Norouzi, Punjani & Fleet, "Fast Exact Search in Hamming Space with Multi-Index Hashing" (CVPR 2012,
TPAMI 2014). Each code is cut into ``m`` disjoint substrings and every substring gets a hash table.
If a code is within Hamming distance ``r`` of the query, then by the pigeonhole principle one of
its substrings is within ``floor(r / m)`` of the query's, so growing the substring radius and
verifying what the tables return finds every code within a growing certified radius; the search
stops as soon as the k-th best distance lies inside it. The tables are dense: for ``s``-bit
substrings, ``2^s + 1`` bucket offsets and the codes sorted by substring value, each followed by its
id (a copy per table, so that verifying a bucket reads one contiguous run of memory).
"""
from __future__ import annotations

import logging
import math

import numba as nb
import numpy as np

from .. import persist
from ..errors import InputError
from ..validation import check_int
from ..knn.hamming import to_words
from .hamming import HammingIndex
from .mih_kernels import mih_knn, profile_sample, substring_values

__all__ = ["MultiIndexHashing", "default_n_substrings"]

log = logging.getLogger(__name__)

# Dense tables hold 2^s + 1 offsets each: 24 bits is 64 MiB of int32 per table, the most allowed.
MAX_SUBSTRING_BITS = 24
# Longest substring the default picks: enumerating the buckets around a query costs C(s, r) per
# radius, which overtakes the time saved by emptier buckets beyond 16 bits (ALGORITHMS.md, 9).
_DEFAULT_MAX_BITS = 16
# A query goes to the linear scan as soon as its multi-index search is expected to cost more than
# this fraction of a linear scan of the database (buckets and codes verified weighed against codes
# scanned, see mih_kernels): most far queries are sent there before any probe.
SCAN_BUDGET = 1.0


def default_n_substrings(n_bits: int, n_codes: int) -> int:
    """The number of substrings used when none is given: substrings of log2(n_codes) - 3 bits,
    rounded, at most 16 and at least 4 bits long.

    Norouzi et al. derive about log2(n_codes) bits; shorter substrings measured faster here because
    verifying a code from a bucket costs far more than enumerating a bucket (bench/bench_mih.py: at
    1M codes 16-bit substrings win, at 100K 13-bit ones)."""
    n_bits = check_int(n_bits, "n_bits", low=1)
    n_codes = check_int(n_codes, "n_codes", low=1)
    width = min(_DEFAULT_MAX_BITS, max(4, round(math.log2(n_codes)) - 3))
    return max(1, min(n_bits, -(-n_bits // width)))


def _layout(n_bits: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(word, bit offset, width) of each of the m substrings: contiguous bits, widths differing by at most 1."""
    widths = np.full(m, n_bits // m, dtype=np.int64)
    widths[: n_bits % m] += 1
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    return starts // 64, starts % 64, widths


@persist.register
class MultiIndexHashing(HammingIndex):
    """Exact Hamming k-NN by multi-index hashing, with the results of :class:`HammingIndex`.

    Results are sorted by (Hamming distance, id), ties going to the lower id, and equal
    :class:`HammingIndex`'s element for element (the contract is
    :class:`~deepcodes.index.base.CodeIndex`'s). Search parameter: ``batch_size``. The search is
    fast when the k-th neighbour is close compared with the code length; for far neighbours (e.g.
    random codes) it probes many buckets and can be slower than a linear scan.

    Parameters
    ----------
    n_bits : code length, a multiple of 8 (taken from ``coder`` when one is given).
    n_substrings : m, the number of substrings (tables), each at most 24 bits long. None picks
        :func:`default_n_substrings` from the code length and the database size at the first search.
    coder : optional BinaryCoder (fitted, or fitted by ``train``); then ``add``/``search`` take vectors.
    d, spec : as for :class:`HammingIndex`.

    The tables are built at the first search after codes were added or removed (and after loading
    a saved index: the file holds the codes only). A query whose search is expected to cost more
    than ``SCAN_BUDGET`` times a linear scan (estimated before every probe, first from its distance
    profile) is answered by HammingIndex's linear scan instead, so far neighbours cost about what
    the scan costs.

    Attributes
    ----------
    last_work_ : (nq,) int64, per query of the last search: buckets probed plus codes verified,
        or -1 where the linear scan answered.
    """

    def __init__(self, n_bits: int | None = None, n_substrings: int | None = None, coder=None, *,
                 d: int | None = None, spec: str | None = None):
        super().__init__(n_bits=n_bits, coder=coder, d=d, spec=spec)
        if n_substrings is not None:
            n_substrings = check_int(n_substrings, "n_substrings", low=1, high=self.n_bits)
            if -(-self.n_bits // n_substrings) > MAX_SUBSTRING_BITS:
                raise InputError(f"n_substrings={n_substrings} makes substrings of {-(-self.n_bits // n_substrings)} "
                                 f"bits; at most {MAX_SUBSTRING_BITS} are allowed, so use at least "
                                 f"{-(-self.n_bits // MAX_SUBSTRING_BITS)} substrings")
        self.n_substrings = n_substrings
        self._tables = (-1, None)

    @property
    def m_(self) -> int:
        """The number of substrings in use (the default depends on the database size)."""
        if self.n_substrings is not None:
            return self.n_substrings
        return max(default_n_substrings(self.n_bits, max(1, self.ntotal)), -(-self.n_bits // MAX_SUBSTRING_BITS))

    def _check_code_values(self, codes) -> None:
        # Bucket offsets are int32.
        if self.ntotal + codes.shape[0] >= 2**31:
            raise InputError(f"MultiIndexHashing holds fewer than 2^31 codes; adding {codes.shape[0]} to "
                             f"{self.ntotal} would exceed that")

    def _current_tables(self):
        """The hash tables of the stored codes, rebuilt after any addition or removal."""
        version, tables = self._tables
        if version == self._store.version:
            return tables
        words = to_words(self._store.codes)
        n = words.shape[0]
        m = self.m_
        sub_word, sub_off, sub_width = _layout(self.n_bits, m)
        values = substring_values(words, sub_word, sub_off, sub_width)
        n_buckets = 1 << int(sub_width.max())
        offsets = np.empty((m, n_buckets + 1), dtype=np.int32)
        W = words.shape[1]
        tables = np.empty((m, n, W + 1), dtype=np.uint64)
        for j in range(m):
            order = np.argsort(values[j], kind="stable")
            tables[j, :, :W] = words[order]
            tables[j, :, W] = order
            offsets[j, 0] = 0
            np.cumsum(np.bincount(values[j], minlength=n_buckets), out=offsets[j, 1:])
        log.debug("MultiIndexHashing: %d tables of %s-bit substrings over %d codes", m, sub_width.tolist(), n)
        tables = (tables, offsets, sub_word, sub_off, sub_width, profile_sample(words))
        self._tables = (self._store.version, tables)
        return tables

    def _search(self, query_codes: np.ndarray, k: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        batch_size = check_int(batch_size, "batch_size", low=1)
        tables = self._current_tables()
        out_d = np.empty((query_codes.shape[0], k), dtype=np.int32)
        out_i = np.empty((query_codes.shape[0], k), dtype=np.int64)
        budget = int(SCAN_BUDGET * self.ntotal)
        work = np.empty(query_codes.shape[0], dtype=np.int64)
        # A query's work grows steeply with its k-th distance, so threads take queries a few at a
        # time rather than in equal static shares.
        with nb.parallel_chunksize(8):
            for s in range(0, query_codes.shape[0], batch_size):
                qw = to_words(query_codes[s:s + batch_size])
                out_d[s:s + batch_size], out_i[s:s + batch_size], work[s:s + batch_size] = mih_knn(qw, *tables, k, budget)
        far = np.flatnonzero(work < 0)
        near = work >= 0
        out_i[near] = self._store.ids[out_i[near]]
        if far.size:
            out_d[far], out_i[far] = super()._search(query_codes[far], k, batch_size)
            log.debug("MultiIndexHashing: %d of %d queries went to the linear scan", far.size, work.size)
        self.last_work_ = work
        return out_d, out_i

    def _params(self) -> dict:
        return {**super()._params(), "n_substrings": self.n_substrings}

    @classmethod
    def _build(cls, params, coder):
        return cls(n_bits=params["n_bits"], n_substrings=params.get("n_substrings"), coder=coder,
                   d=params.get("d"), spec=params.get("spec"))
