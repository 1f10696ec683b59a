"""Factory strings: ``index_factory(d, "OPQ16,IVF1024,PQ16")`` builds an untrained index from a spec
(faiss's idea, deepcodes's vocabulary). The index remembers its spec: ``describe()``, its repr and
its file show it.

A spec is comma-separated tokens, one of these forms (``<b>`` bits, a multiple of 8; ``<M>``
sub-quantizers, optionally ``x<nbits>`` bits each, 8 by default):

* binary codes: ``CODER<b>,Hamming`` or ``CODER<b>,MIH[<m>]`` (m substrings; default from the size);
* quantizer codes, searched exhaustively: ``PQ<M>,ADC``, ``OPQ<M>,ADC``, ``RQ<M>,ADC``,
  ``GSL-PQ<M>,ADC`` (also ``GSL-OPQ``, ``GSL-RQ``);
* inverted files with a residual PQ: ``[FRONT,]IVF<lists>,PQ<M>`` and
  ``[FRONT,]VLQ<centroids>x<neighbours>,PQ<M>``, and ``[FRONT,]VLQ<c>x<n>,PQ<M>x4,FastScan`` (VLQ
  searched by 4-bit fast scan, as ``PQ<M>x4,FastScan`` is ADC's), FRONT one of ``PCA<p>``, ``OPQ<M>``, ``GSL<dim>``,
  ``UHBDNN<b>``, ``SHBDNN<b>``.

:data:`TOKENS` lists every token with what it builds; the README's table is made from it.
"""
from __future__ import annotations

import re

from .errors import InputError
from .validation import check_int

#: (token, what it builds, code bytes per vector) for every token a spec may hold.
TOKENS: tuple[tuple[str, str, str], ...] = (
    ("LSH<b>", "random-projection hashing (LSH), b bits", "b/8"),
    ("ITQ<b>", "PCA-ITQ, b bits (b <= d)", "b/8"),
    ("UHBDNN<b>", "UH-BDNN (unsupervised binary deep network), b bits", "b/8"),
    ("SHBDNN<b>", "SH-BDNN (supervised: train(X, y)), b bits", "b/8"),
    ("DH<b>", "Deep Hashing, b bits", "b/8"),
    ("SDH<b>", "supervised Deep Hashing (train(X, y)), b bits", "b/8"),
    ("Hamming", "HammingIndex: exact Hamming k-NN (linear scan) over the binary codes", "-"),
    ("MIH[<m>]", "MultiIndexHashing: exact Hamming k-NN by m hash tables (codes of 16+ bits)", "-"),
    ("PQ<M>[x<nbits>]", "product quantizer, M sub-quantizers of 2^nbits codewords", "M"),
    ("OPQ<M>[x<nbits>]", "optimized PQ (learned rotation, then PQ)", "M"),
    ("RQ<M>[x<nbits>]", "residual quantizer, M stages", "M"),
    ("GSL-PQ<M> / GSL-OPQ<M> / GSL-RQ<M>", "GSLQuantizer: network trained with the quantizer (train(X, y)), M bytes", "M"),
    ("ADC", "ADCIndex: exact asymmetric-distance k-NN over the quantizer codes", "-"),
    ("FastScan", "FastScanIndex: 4-bit codes (x4) by 8-bit SIMD tables, shortlist re-ranked exactly", "-"),
    ("IVF<lists>", "IVFADCIndex: k-means inverted file, residual PQ given by the next token", "M"),
    ("VLQ<centroids>x<neighbours>", "VLQIndex: vector-and-line inverted file, residual PQ next",
     "M + 1 (+ 4 in memory: line term)"),
    ("VLQ<c>x<n>,PQ<M>x4,FastScan", "VLQFastScanIndex: VLQ over 4-bit residual codes by 8-bit SIMD tables, "
     "shortlist re-ranked exactly", "M / 2 + 2 read by the scan"),
    ("PCA<p>", "front of an inverted file: PCA to p dimensions", "-"),
    ("OPQ<M> (before IVF/VLQ)", "front: the rotation of an OPQ with M sub-quantizers", "-"),
    ("GSL<dim>", "front: a GSLQuantizer's network, dim outputs (train(X, y))", "-"),
    ("UHBDNN<b> / SHBDNN<b> (before IVF/VLQ)", "front: the real-valued code layer of a BDNN, b outputs", "-"),
)

_VALID = ("valid specs: CODER<b>,Hamming | CODER<b>,MIH[<m>] (CODER: LSH, ITQ, UHBDNN, SHBDNN, DH, SDH; "
          "b a multiple of 8) | PQ<M>[x<nbits>],ADC | OPQ<M>[x<nbits>],ADC | RQ<M>[x<nbits>],ADC | "
          "PQ<M>x4,FastScan (or OPQ, RQ) | "
          "GSL-PQ<M>,ADC (or GSL-OPQ, GSL-RQ) | [FRONT,]IVF<lists>,PQ<M>[x<nbits>] | "
          "[FRONT,]VLQ<centroids>x<neighbours>,PQ<M>[x<nbits>] | [FRONT,]VLQ<c>x<n>,PQ<M>x4,FastScan (FRONT: PCA<p>, OPQ<M>, GSL<dim>, "
          "UHBDNN<b>, SHBDNN<b>); e.g. ITQ64,MIH  PQ16,ADC  OPQ16,IVF1024,PQ16  PCA64,VLQ1024x64,PQ16")

_BINARY = re.compile(r"(LSH|ITQ|UHBDNN|SHBDNN|DH|SDH)(\d+)")
_MIH = re.compile(r"MIH(\d*)")
_QUANTIZER = re.compile(r"(GSL-)?(PQ|OPQ|RQ)(\d+)(?:x(\d+))?")
_IVF = re.compile(r"IVF(\d+)")
_VLQ = re.compile(r"VLQ(\d+)x(\d+)")
_RESIDUAL_PQ = re.compile(r"PQ(\d+)(?:x(\d+))?")
_FRONT = re.compile(r"(PCA|OPQ|GSL|UHBDNN|SHBDNN)(\d+)")


class _Refused(Exception):
    """A reason the spec is refused (turned into one InputError naming the spec)."""


def index_factory(d: int, spec: str, *, random_state=None):
    """An untrained index for ``d``-dimensional vectors described by ``spec`` (see the module
    docstring and :data:`TOKENS`). ``random_state`` seeds every part. ``train(X[, y])`` it, then
    ``add``. InputError, listing the valid forms, for an unknown or inconsistent spec."""
    d = check_int(d, "d (dimension)", low=1)
    if not isinstance(spec, str):
        raise InputError(f"an index spec is a string such as 'PQ16,ADC', got {type(spec).__name__}")
    tokens = [t.strip() for t in spec.split(",")]
    norm = ",".join(tokens)
    try:
        if any(not t for t in tokens):
            raise _Refused("it has an empty token")
        if len(tokens) < 2:
            raise _Refused("a spec has at least two tokens: codes, then how they are searched")
        last = tokens[-1]
        if last == "Hamming" or _MIH.fullmatch(last):
            return _binary(d, tokens, norm, random_state)
        if last == "FastScan" and len(tokens) >= 3:
            return _inverted(d, tokens[:-1], norm, random_state, fast_scan=True)
        if last in ("ADC", "FastScan"):
            return _adc(d, tokens, norm, random_state)
        if _RESIDUAL_PQ.fullmatch(last) and len(tokens) >= 2:
            return _inverted(d, tokens, norm, random_state)
        raise _Refused(f"{last!r} cannot end a spec (Hamming, MIH, ADC, FastScan or the PQ of an IVF/VLQ can)")
    except (_Refused, InputError) as exc:
        raise InputError(f"bad index spec {spec!r}: {exc}; {_VALID}") from None


def _number(text: str, what: str, low: int = 1, high: int | None = None) -> int:
    value = int(text)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise _Refused(f"{what} must be {bounds}, got {value}")
    return value


def _bits(text: str, what: str) -> int:
    bits = _number(text, what)
    if bits % 8:
        raise _Refused(f"{what} must be a multiple of 8, got {bits}")
    return bits


def _only(tokens: list[str], n: int, form: str) -> None:
    if len(tokens) != n:
        raise _Refused(f"expected the form {form}, got {len(tokens)} tokens")


def _binary_coder(token: str, d: int, random_state):
    m = _BINARY.fullmatch(token)
    if not m:
        raise _Refused(f"{token!r} is not a binary coder (LSH, ITQ, UHBDNN, SHBDNN, DH, SDH followed by bits)")
    name, bits = m.group(1), _bits(m.group(2), f"the code length of {token}")
    if name == "LSH":
        from .coders import LSH

        return LSH(bits, random_state=random_state)
    if name == "ITQ":
        from .coders import ITQ

        if bits > d:
            raise _Refused(f"ITQ makes at most one bit per dimension: {bits} bits from d={d}")
        return ITQ(bits, random_state=random_state)
    if name in ("UHBDNN", "SHBDNN"):
        from .coders import bdnn

        return getattr(bdnn, name)(bits, random_state=random_state)
    from .coders.deephash import DeepHash

    return DeepHash(bits, supervised=name == "SDH", random_state=random_state)


def _binary(d, tokens, norm, random_state):
    from .index import HammingIndex, MultiIndexHashing

    _only(tokens, 2, "CODER<b>,Hamming or CODER<b>,MIH[<m>]")
    coder = _binary_coder(tokens[0], d, random_state)
    if tokens[1] == "Hamming":
        return HammingIndex(coder=coder, d=d, spec=norm)
    if coder.n_bits < 16:
        raise _Refused(f"MIH needs codes of at least 16 bits (two substrings); {tokens[0]} has {coder.n_bits}: use Hamming")
    m = _MIH.fullmatch(tokens[1]).group(1)
    n_substrings = _number(m, "the number of MIH substrings", high=coder.n_bits // 2) if m else None
    return MultiIndexHashing(n_substrings=n_substrings, coder=coder, d=d, spec=norm)


def _quantizer(kind: str, M: int, nbits: int, d: int, random_state):
    from .coders import OPQ, PQ, RQ

    if kind != "RQ" and M > d:
        raise _Refused(f"{kind}{M} has more sub-quantizers than the {d} dimensions")
    return {"PQ": PQ, "OPQ": OPQ, "RQ": RQ}[kind](M=M, n_bits_per_code=nbits, random_state=random_state)


def _adc(d, tokens, norm, random_state):
    from .index import ADCIndex

    _only(tokens, 2, "PQ<M>,ADC (or OPQ, RQ, GSL-PQ)")
    m = _QUANTIZER.fullmatch(tokens[0])
    if not m:
        raise _Refused(f"{tokens[0]!r} is not a quantizer (PQ<M>, OPQ<M>, RQ<M>, GSL-PQ<M>)")
    gsl, kind = m.group(1), m.group(2)
    M = _number(m.group(3), f"the number of sub-quantizers of {tokens[0]}")
    if gsl:
        from .coders.gsl import GSLQuantizer

        if m.group(4):
            raise _Refused("GSL quantizers have 8 bits per sub-code: drop the x<nbits>")
        if tokens[1] == "FastScan":
            raise _Refused("GSL quantizers have 8 bits per sub-code and FastScan searches 4: use ADC")
        model = GSLQuantizer(n_bits=8 * M, quantizer=kind.lower(), random_state=random_state)
        if kind != "RQ" and M > model.dim:
            raise _Refused(f"{tokens[0]} has more sub-quantizers than the {model.dim} dimensions of GSL's representation")
        return ADCIndex(model, d=d, spec=norm)
    nbits = _number(m.group(4), "bits per sub-code", high=8) if m.group(4) else 8
    if tokens[1] == "FastScan":
        from .index import FastScanIndex

        if nbits != 4:
            raise _Refused(f"FastScan searches 4-bit sub-codes: write {kind}{M}x4,FastScan")
        return FastScanIndex(_quantizer(kind, M, nbits, d, random_state), d=d, spec=norm)
    return ADCIndex(_quantizer(kind, M, nbits, d, random_state), d=d, spec=norm)


def _front(token: str, d: int, pq_M: int, random_state):
    from .coders import fronts

    m = _FRONT.fullmatch(token)
    if not m:
        raise _Refused(f"{token!r} is not a front (PCA<p>, OPQ<M>, GSL<dim>, UHBDNN<b>, SHBDNN<b>)")
    name, n = m.group(1), m.group(2)
    if name == "PCA":
        p = _number(n, "the PCA dimension", high=d)
        return fronts.PCA(p, random_state=random_state)
    if name == "OPQ":
        M = _number(n, "the OPQ sub-quantizers", high=d)
        return fronts.OPQRotation(M=M, random_state=random_state)
    if name == "GSL":
        from .coders.gsl import GSLQuantizer

        dim = _number(n, "the GSL representation dimension")
        if pq_M > dim:
            raise _Refused(f"PQ{pq_M} has more sub-quantizers than the {dim} dimensions of GSL{dim}")
        return fronts.GSLEmbedding(GSLQuantizer(n_bits=8 * pq_M, dim=dim, random_state=random_state))
    return fronts.CodeLayer(_binary_coder(token, d, random_state))


def _inverted(d, tokens, norm, random_state, fast_scan=False):
    from .index import IVFADCIndex, VLQFastScanIndex, VLQIndex

    if len(tokens) > 3:
        raise _Refused(f"expected [FRONT,]IVF<lists>,PQ<M> or [FRONT,]VLQ<c>x<n>,PQ<M>, got {len(tokens)} tokens")
    pq = _RESIDUAL_PQ.fullmatch(tokens[-1])
    if pq is None:
        raise _Refused(f"{tokens[-1]!r} is not the residual PQ (PQ<M>[x<nbits>]) of an IVF/VLQ")
    M = _number(pq.group(1), "the number of sub-quantizers of the residual PQ")
    nbits = _number(pq.group(2), "bits per sub-code", high=8) if pq.group(2) else 8
    front = _front(tokens[0], d, M, random_state) if len(tokens) == 3 else None
    coarse = tokens[-2]
    common = {"M": M, "n_bits_per_code": nbits, "random_state": random_state, "front": front, "spec": norm}
    if fast_scan and not _VLQ.fullmatch(coarse):
        raise _Refused(f"FastScan after an inverted file is built for VLQ<c>x<n>,PQ<M>x4 only, not {coarse!r}")
    if fast_scan and nbits != 4:
        raise _Refused(f"FastScan searches 4-bit sub-codes: write {coarse},PQ{M}x4,FastScan")
    if m := _IVF.fullmatch(coarse):
        return IVFADCIndex(d, _number(m.group(1), "the number of IVF lists"), **common)
    if m := _VLQ.fullmatch(coarse):
        n_centroids = _number(m.group(1), "the number of VLQ centroids", low=2)
        n_neighbors = _number(m.group(2), "the VLQ neighbours per centroid", high=n_centroids - 1)
        cls = VLQFastScanIndex if fast_scan else VLQIndex
        return cls(d, n_centroids, n_neighbors=n_neighbors, **common)
    raise _Refused(f"{coarse!r} is not an inverted file (IVF<lists> or VLQ<centroids>x<neighbours>) before {tokens[-1]}")
