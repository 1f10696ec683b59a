"""Serve deepcodes product-quantizer codes with faiss, unchanged.

:func:`to_faiss` turns a fitted PQ, OPQ or GSLQuantizer (with a PQ/OPQ inside) into a faiss index
that holds the database's codes byte for byte and ranks by the same asymmetric distance as
:class:`~deepcodes.index.ADCIndex`:

* PQ: ``IndexPQ(d_pad, M, nbits)`` with our sub-codebooks. When d is not a multiple of M, our PQ
  zero-pads; faiss gets the same through an ``IndexPreTransform`` whose ``RemapDimensionsTransform``
  appends the zero columns.
* OPQ: our codes quantize ``pad(x) @ R``; faiss's ``OPQMatrix`` (a ``LinearTransform``) computes
  ``A x`` with ``A`` (d_out, d_in), so ``A = R[:d].T`` does the padding and the rotation at once:
  ``IndexPreTransform(OPQMatrix, IndexPQ)``.
* GSLQuantizer: the index above for its inner quantizer. faiss sees representations, so queries
  go through the network first: ``index.search(model.embed(Q), k)``.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..validation import check_codes, check_fitted


def to_faiss(model, database=None, *, codes=None):
    """A faiss index with ``model``'s codebook holding the database's codes.

    Pass the database rows as ``database`` (encoded with ``model.encode``) or their codes as
    ``codes`` (n, M) uint8 (neither: an empty index). Returns ``faiss.IndexPQ`` or
    ``faiss.IndexPreTransform``; its search takes vectors in ``model``'s quantizer input space
    (``model.embed(Q)`` for a GSLQuantizer).
    """
    import faiss

    from ..coders import PQ
    from ..coders.gsl import GSLQuantizer

    inner = model.quantizer_ if isinstance(model, GSLQuantizer) and getattr(model, "quantizer_", None) else model
    if not isinstance(inner, PQ):
        raise InputError(f"faiss export supports PQ and OPQ codebooks (also inside a GSLQuantizer), "
                         f"got {type(inner).__name__}")
    check_fitted(inner, "codebooks_")
    if database is not None and codes is not None:
        raise InputError("pass either database or codes, not both")
    if database is not None:
        codes = model.encode(database)
    M, K, ds = inner.codebooks_.shape
    nbits = int(inner.n_bits_per_code)
    d, d_pad = int(inner.dim_), M * ds
    pq_index = faiss.IndexPQ(d_pad, M, nbits)
    faiss.copy_array_to_vector(np.ascontiguousarray(inner.codebooks_, dtype=np.float32).ravel(),
                               pq_index.pq.centroids)
    pq_index.is_trained = True
    if codes is not None:
        codes = check_codes(codes, code_size=M)
        if codes.size and codes.max() >= K:
            raise InputError(f"codes hold values >= K={K}")
        if codes.shape[0]:
            pq_index.add_sa_codes(_faiss_codes(codes, nbits))
    rotation = getattr(inner, "rotation_", None)
    if rotation is None and d == d_pad:
        return pq_index
    if rotation is None:
        transform = faiss.RemapDimensionsTransform(d, d_pad, False)
    else:
        transform = faiss.OPQMatrix(d, M, d_pad)
        faiss.copy_array_to_vector(np.ascontiguousarray(np.asarray(rotation, dtype=np.float32)[:d].T).ravel(),
                                   transform.A)
        transform.have_bias = False
        transform.is_trained = True
    index = faiss.IndexPreTransform(transform, pq_index)
    # faiss's Python constructor keeps references to both parts, so they outlive this frame.
    index.is_trained = True
    return index


def _faiss_codes(codes: np.ndarray, nbits: int) -> np.ndarray:
    """Our (n, M) sub-codes in faiss's layout: M fields of ``nbits`` bits, packed little-endian."""
    if nbits == 8:
        return codes
    n, M = codes.shape
    bits = ((codes[:, :, None].astype(np.uint16) >> np.arange(nbits)) & 1).astype(np.uint8).reshape(n, M * nbits)
    pad = (-bits.shape[1]) % 8
    bits = np.pad(bits, ((0, 0), (0, pad)))
    return np.packbits(bits, axis=1, bitorder="little")
