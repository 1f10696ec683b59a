"""Coders: estimators that learn compact codes (``fit`` / ``encode``; quantizers also ``decode``)."""
from .base import BinaryCoder, Coder, CodebookQuantizer, Quantizer, pack_bits, unpack_bits
from .itq import ITQ
from .lsh import LSH
from .pq import OPQ, PQ
from .rq import RQ

__all__ = ["Coder", "BinaryCoder", "Quantizer", "CodebookQuantizer", "LSH", "ITQ", "PQ", "OPQ", "RQ", "pack_bits", "unpack_bits"]
