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
    Method("dsh", "DSH: deep supervised hashing, pairwise loss with a ±1 regulariser (Liu et al., CVPR 2016)",
           _deep("dsh", "DSH"), supervised=True),
    Method("dnnh", "DNNH: triplet ranking loss, divide-and-encode layer (Lai et al., CVPR 2015)",
           _deep("dnnh", "DNNH"), supervised=True),
    Method("subic", "SuBiC: block-structured one-hot codes, block-sum (ADC) search (Jain et al., ICCV 2017)",
           _deep("subic", "SuBiC"), supervised=True),
):
    register_method(_m)


# Parameters the command line sets itself, and the flag that sets each.
SET_BY_COMMAND = {"n_bits": "--bits", "random_state": "--seed"}


def make_coder(name: str, bits: int, random_state=0, **options):
    """An unfitted coder for method ``name`` at ``bits`` bits, with ``options`` as extra parameters.

    Unknown names, options the coder does not take (the valid ones are listed), options the
    command sets itself (``n_bits``, ``random_state``) and, for PQ/OPQ/RQ, an ``M`` and
    ``n_bits_per_code`` whose product is not ``bits`` raise InputError. For those quantizers ``M``
    alone gives ``n_bits_per_code = bits / M`` and ``n_bits_per_code`` alone ``M = bits / n_bits_per_code``.
    """
    method = get_method(name)
    bits = check_n_bits(bits, what="bits")
    coder = method.build(bits, random_state)
    valid = coder.get_params(deep=False)
    for key in options:
        if key in SET_BY_COMMAND:
            raise InputError(f"{key} of {name} is set by {SET_BY_COMMAND[key]}, not as an option")
        if key not in valid:
            raise InputError(f"{name} has no parameter {key!r}; valid: "
                             f"{', '.join(sorted(set(valid) - set(SET_BY_COMMAND)))}")
    if "M" in valid and "n_bits_per_code" in valid:
        options = _code_shape(name, bits, options)
    return coder.set_params(**options)


def _code_shape(name: str, bits: int, options: dict) -> dict:
    """Complete M / n_bits_per_code from ``bits`` so that M * n_bits_per_code == bits."""
    options = dict(options)
    M, per_code = options.get("M"), options.get("n_bits_per_code")
    for key, value in (("M", M), ("n_bits_per_code", per_code)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{key} must be a positive integer, got {value!r}")
    if M is None and per_code is None:
        return options
    if M is None:
        M = bits // per_code
    if per_code is None:
        per_code = bits // M
    if M * per_code != bits:
        raise InputError(f"{name}: --bits {bits} must equal M x n_bits_per_code, got M={M} and "
                         f"n_bits_per_code={per_code}")
    options.update(M=M, n_bits_per_code=per_code)
    return options


def get_method(name: str) -> Method:
    """The registered method called ``name``."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]
