"""Serve deepcodes codes with faiss, unchanged.

:func:`export_faiss` turns a deepcodes index into the faiss index of the same structure, holding the
same codes under the same ids, wherever faiss has that structure (:func:`write_faiss` saves it):

* HammingIndex, MultiIndexHashing: ``IndexBinaryIDMap(IndexBinaryFlat)``; faiss takes packed query
  codes (``index.coder.encode(Q)``): it has no learned binary coder.
* ADCIndex over PQ/OPQ: ``IndexIDMap`` around :func:`to_faiss`'s index.
* IVFADCIndex: ``IndexIVFPQ`` (by residual, precomputed tables) with our centroids, codebooks,
  lists' codes and ids; ``nprobe`` is set to our default. A PCA or OPQ front becomes a
  ``PCAMatrix`` / ``OPQMatrix`` in an ``IndexPreTransform``; a residual PQ whose sub-quantizers do
  not divide the dimension gets the zero padding as a ``RemapDimensionsTransform``.

faiss has no VLQ inverted file, no residual quantizer with our greedy encoding, and cannot run a
learned network front (GSL, BDNN): those raise ``InputError``.

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

from .. import persist
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


def export_faiss(index):
    """The faiss index with ``index``'s structure, codes and ids (see the module docstring).
    Its search returns the same neighbours and distances (to float rounding), ties aside."""
    import faiss

    from ..index import ADCIndex, HammingIndex, IVFADCIndex

    if isinstance(index, HammingIndex):
        out = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(index.n_bits))
        if index.ntotal:
            out.add_with_ids(np.ascontiguousarray(index.codes), np.ascontiguousarray(index.ids))
        return out
    if not index.is_trained:
        raise InputError(f"{type(index).__name__} is not trained yet: nothing to export")
    if isinstance(index, ADCIndex):
        if hasattr(index.quantizer, "embed"):
            raise InputError("faiss cannot run a GSLQuantizer's network: its ADC index has no faiss equivalent")
        return _pq_with_ids(index.quantizer, index.codes, index.ids)
    if isinstance(index, IVFADCIndex):
        return _ivfpq(index)
    raise InputError(f"faiss has no equivalent of {type(index).__name__}: export supports HammingIndex, "
                     "MultiIndexHashing, ADCIndex over PQ/OPQ and IVFADCIndex (with no front, PCA or OPQ)")


def write_faiss(index, path) -> None:
    """Write :func:`export_faiss`'s index to ``path`` with faiss's writer, atomically."""
    import faiss

    out = export_faiss(index)
    writer = faiss.write_index_binary if isinstance(out, faiss.IndexBinary) else faiss.write_index
    with persist.atomic_path(path) as tmp:
        writer(out, str(tmp))


def _pq_with_ids(quantizer, codes: np.ndarray, ids: np.ndarray):
    """``IndexIDMap`` over :func:`to_faiss`'s index, holding ``codes`` under ``ids``."""
    import faiss

    inner = to_faiss(quantizer)
    out = faiss.IndexIDMap(inner)  # faiss wraps empty indexes only: the codes go in below
    if ids.size:
        pq = inner if isinstance(inner, faiss.IndexPQ) else faiss.downcast_index(inner.index)
        to_faiss_codes = check_codes(codes, code_size=pq.pq.M)
        pq.add_sa_codes(_faiss_codes(to_faiss_codes, int(pq.pq.nbits)))
        inner.ntotal = pq.ntotal
        faiss.copy_array_to_vector(np.ascontiguousarray(ids, dtype=np.int64), out.id_map)
        out.ntotal = inner.ntotal
    return out


def _front_transform(front, d: int):
    """The faiss VectorTransform of a PCA or OPQ front."""
    import faiss

    from ..coders.fronts import PCA, OPQRotation

    if isinstance(front, PCA):
        p = front.components_.shape[1]
        out = faiss.PCAMatrix(d, p)
        faiss.copy_array_to_vector(np.ascontiguousarray(front.components_.T, dtype=np.float32).ravel(), out.A)
        faiss.copy_array_to_vector((-front.mean_ @ front.components_).astype(np.float32), out.b)
        faiss.copy_array_to_vector(front.mean_.astype(np.float32), out.mean)
        out.have_bias = True
    elif isinstance(front, OPQRotation):
        R = np.asarray(front.rotation_, dtype=np.float32)
        out = faiss.OPQMatrix(d, int(front.M), R.shape[1])
        faiss.copy_array_to_vector(np.ascontiguousarray(R[:d].T).ravel(), out.A)
        out.have_bias = False
    else:
        raise InputError(f"faiss cannot run the front {type(front).__name__} (a learned network): "
                         "export supports inverted indexes with no front, a PCA or an OPQ front")
    out.is_trained = True
    return out


def _ivfpq(index):
    """IndexIVFPQ holding ``index``'s first level, residual codebooks and lists."""
    import faiss

    p, dp = index.list_dim, index.d_pad
    M, nbits = index.M, index.n_bits_per_code
    centroids = np.zeros((index.n_centroids, dp), dtype=np.float32)
    centroids[:, :p] = index.centroids_
    coarse = faiss.IndexFlatL2(dp)
    coarse.add(centroids)
    ivf = faiss.IndexIVFPQ(coarse, dp, index.n_centroids, M, nbits)
    faiss.copy_array_to_vector(np.ascontiguousarray(index.codebooks_, dtype=np.float32).ravel(), ivf.pq.centroids)
    ivf.is_trained = True
    lists = index.lists
    offsets, codes, ids = lists.offsets, _faiss_codes(np.asarray(lists.codes), nbits), np.asarray(lists.ids)
    for lst in np.flatnonzero(np.diff(offsets)):
        a, b = offsets[lst], offsets[lst + 1]
        ivf.invlists.add_entries(int(lst), int(b - a), faiss.swig_ptr(np.ascontiguousarray(ids[a:b])),
                                 faiss.swig_ptr(np.ascontiguousarray(codes[a:b])))
    ivf.ntotal = index.ntotal
    ivf.precompute_table()
    ivf.nprobe = min(int(index.search_params["nprobe"]), index.n_centroids)
    transforms = [] if index.front is None else [_front_transform(index.front, index.d)]
    if dp != p:
        transforms.append(faiss.RemapDimensionsTransform(p, dp, False))
    if not transforms:
        return ivf
    out = faiss.IndexPreTransform(transforms[-1], ivf)
    for vt in transforms[-2::-1]:
        out.prepend_transform(vt)
    out.is_trained = True
    return out
