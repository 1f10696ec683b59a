"""The named methods of the command line: each turns a code length in bits into an unfitted coder.

Binary hashers take ``bits`` as their code length. Quantizers take it as the code size: ``bits/8``
sub-quantizers of 8 bits (256 centroids) each, trained on a seeded sample of at most 20,000 points
(faiss's own k-means samples 256 points per centroid, about 65,000; 20,000 keeps every fit in the
demo under ~20 s on 2 cores at a cost of < 3% quantization error on MNIST).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import InputError
from .validation import check_n_bits

QUANTIZER_MAX_TRAIN = 20_000


@dataclass(frozen=True)
class Method:
    """A named way to make a coder: ``build(bits, random_state, **options)``."""

    name: str
    description: str
    build: Callable
    supervised: bool = False


def construct(cls, fixed: dict, options: dict):
    """``cls(**fixed, **options)``, with an option the class does not take, or one the command sets
    itself (``fixed``), refused by name (InputError) rather than surfacing as a TypeError."""
    valid = [p for p in cls._get_param_names() if p not in fixed]
    for name in options:
        if name in fixed:
            raise InputError(f"option {name!r} of {cls.__name__} is set by the command itself (e.g. --bits, --seed)")
        if name not in valid:
            raise InputError(f"{cls.__name__} has no option {name!r}; its options are: {', '.join(valid)}")
    return cls(**fixed, **options)


def _lsh(bits, random_state, **options):
    from .coders import LSH

    return construct(LSH, {"n_bits": bits, "random_state": random_state}, options)


def _itq(bits, random_state, **options):
    from .coders import ITQ

    return construct(ITQ, {"n_bits": bits, "random_state": random_state}, options)


def _quantizer(cls_name):
    def build(bits, random_state, **options):
        from . import coders

        bits = check_n_bits(bits, what="bits")
        options.setdefault("max_train", QUANTIZER_MAX_TRAIN)
        fixed = {"M": bits // 8, "n_bits_per_code": 8, "random_state": random_state}
        return construct(getattr(coders, cls_name), fixed, options)

    return build


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (the CLI's ``fit`` and ``demo`` see it at once)."""
    METHODS[method.name] = method
    return method


def _deep(module: str, cls_name: str, **fixed):
    """Builder for a torch coder that lives in ``deepcodes.coders.<module>`` (imported on use)."""
    def build(bits, random_state, **options):
        import importlib

        cls = getattr(importlib.import_module(f"deepcodes.coders.{module}"), cls_name)
        return construct(cls, {"n_bits": bits, "random_state": random_state, **fixed}, options)

    return build


for _m in (
    Method("lsh", "LSH: signs of random Gaussian projections", _lsh),
    Method("itq", "PCA-ITQ: PCA then an orthogonal rotation minimising quantization loss", _itq),
    Method("pq", "Product quantization, bits/8 sub-quantizers of 256 centroids", _quantizer("PQ")),
    Method("opq", "Optimized PQ (non-parametric: alternating PQ and Procrustes rotation)", _quantizer("OPQ")),
    Method("rq", "Residual quantization, bits/8 stages of 256 codewords", _quantizer("RQ")),
    Method("uh-bdnn", "UH-BDNN: unsupervised binary deep network (Do et al., ECCV 2016)", _deep("bdnn", "UHBDNN")),
    Method("sh-bdnn", "SH-BDNN: supervised binary deep network (Do et al., ECCV 2016)", _deep("bdnn", "SHBDNN"),
           supervised=True),
    Method("dh", "Deep Hashing, unsupervised (Liong et al., CVPR 2015)", _deep("deephash", "DeepHash", supervised=False)),
    Method("sdh", "Supervised Deep Hashing (Liong et al., CVPR 2015)", _deep("deephash", "DeepHash", supervised=True),
           supervised=True),
    Method("gsl", "Deep representation + vector quantization through the Gradient Snapping Layer (Liu & Lu, 2016)",
           _deep("gsl", "GSLQuantizer"), supervised=True),
):
    register_method(_m)


def make_coder(name: str, bits: int, random_state=0, **options):
    """An unfitted coder for method ``name`` at ``bits`` bits. Unknown names raise InputError."""
    method = get_method(name)
    check_n_bits(bits, what="bits")
    return method.build(bits, random_state, **options)


def get_method(name: str) -> Method:
    """The registered method called ``name``."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]
