"""Fit a named method on a protocol, index its database and evaluate it: the steps every command and
report shares, so the CLI, the demo and the reproductions measure the same way."""
from __future__ import annotations

import logging
import time

import numpy as np

from .coders.base import CodebookQuantizer
from .data import Protocol, load_protocol
from .errors import InputError
from .eval import evaluate_search_many
from .eval.relevance import relevance_for
from .index import ADCIndex, HammingIndex
from .methods import get_method, make_coder
from .validation import check_int, rng_from

log = logging.getLogger(__name__)


def fit_method(method: str, bits: int, protocol: Protocol | str, random_state=0, *, max_train: int | None = None,
               **options):
    """Fit method ``method`` at ``bits`` bits on the protocol's training set (see :func:`fit_coder`)."""
    if isinstance(protocol, str):
        protocol = load_protocol(protocol)
    return fit_coder(method, bits, protocol.train, protocol.train_labels, trained_on=protocol.name,
                     random_state=random_state, max_train=max_train, **options)


def fit_coder(method: str, bits: int, X, y=None, *, trained_on: str, random_state=0,
              max_train: int | None = None, **options):
    """Fit method ``method`` at ``bits`` bits on ``X`` (n, d) (and labels ``y`` for supervised ones).

    ``max_train`` caps the rows trained on: PQ/OPQ/RQ take it as their own ``max_train`` (their
    default is ``methods.QUANTIZER_MAX_TRAIN``); for other coders a sample of that many rows is drawn
    with ``default_rng(random_state)``. The returned coder's ``meta_`` records method, bits,
    ``protocol`` (= ``trained_on``), ``n_train`` (the rows the coder really trained on), seed and fit time.
    """
    spec = get_method(method)
    if max_train is not None:
        max_train = check_int(max_train, "max_train", low=1)
        if "max_train" in options:
            raise InputError("give the training-sample size once: --max-train, not also as an option")
    coder = make_coder(method, bits, random_state=random_state, **options)
    if spec.supervised and y is None:
        raise InputError(f"{method} is supervised but {trained_on!r} has no training labels")
    n = int(X.shape[0])
    if isinstance(coder, CodebookQuantizer):
        if max_train is not None:
            coder.set_params(max_train=max_train)
        n_used = n if coder.max_train is None else min(n, int(coder.max_train))
    elif max_train is not None and max_train < n:
        rows = np.sort(rng_from(random_state).choice(n, max_train, replace=False))
        X = X[rows]
        y = None if y is None else np.asarray(y)[rows]
        n_used = max_train
    else:
        n_used = n
    start = time.perf_counter()
    if spec.supervised:
        coder.fit(X, y)
    else:
        coder.fit(X)
    seconds = time.perf_counter() - start
    coder.meta_ = {"method": method, "bits": int(bits), "protocol": trained_on, "n_train": n_used,
                   "random_state": random_state, "fit_seconds": round(seconds, 3)}
    log.info("fitted %s at %d bits on %s (%d rows) in %.1fs", method, bits, trained_on, n_used, seconds)
    return coder


def evaluate_coder(coder, protocol: Protocol | str, *, chunk_size: int = 100, progress: bool = False) -> dict:
    """Encode the protocol's database and queries with ``coder``, rank the whole database for every
    query and return the metrics (see :func:`deepcodes.eval.evaluate_search`) with the context.

    Binary coders are searched by exact Hamming distance (``HammingIndex``), quantizers by exact
    ADC (``ADCIndex``); the query is encoded by the index for Hamming and never quantized for ADC.
    """
    return evaluate_coder_on(coder, [protocol], chunk_size=chunk_size, progress=progress)[0]


def evaluate_coder_on(coder, protocols: list, *, chunk_size: int = 100, progress: bool = False) -> list[dict]:
    """:func:`evaluate_coder` on several protocols that share one database and one query set (e.g.
    mnist-unsup and mnist-sup, which differ only in what is relevant): the database is encoded and
    each query chunk ranked once, then scored under every protocol. One result per protocol."""
    protocols = [load_protocol(p) if isinstance(p, str) else p for p in protocols]
    if not protocols:
        raise InputError("no protocol to evaluate on")
    first = protocols[0]
    for other in protocols[1:]:
        if not (np.array_equal(other.database, first.database) and np.array_equal(other.queries, first.queries)):
            raise InputError(f"protocols {first.name!r} and {other.name!r} do not share one database and "
                             "query set; evaluate them one at a time")
    if coder.dim_ != first.database.shape[1]:
        raise InputError(f"the model expects {coder.dim_}-dimensional input but protocol {first.name!r} "
                         f"has {first.database.shape[1]} dimensions")
    kind = getattr(coder, "code_kind", None)
    if kind == "binary":
        index, hamming_bits = HammingIndex(coder=coder), int(coder.n_bits)
    elif kind == "quantizer":
        index, hamming_bits = ADCIndex(coder), None
    else:
        raise InputError(f"{type(coder).__name__} is neither a binary coder nor a quantizer")
    start = time.perf_counter()
    index.add(first.database)
    encode_seconds = time.perf_counter() - start
    true_nn = [p.ground_truth() if p.relevance == "knn" else None for p in protocols]
    start = time.perf_counter()
    results = evaluate_search_many(index.search, first.queries, [relevance_for(p) for p in protocols],
                                   first.database.shape[0], true_neighbors=true_nn, hamming_bits=hamming_bits,
                                   chunk_size=chunk_size, progress=progress)
    search_eval_seconds = round(time.perf_counter() - start, 3)
    meta = dict(getattr(coder, "meta_", None) or {})
    for protocol, result in zip(protocols, results):
        result.update({
            "method": meta.get("method", type(coder).__name__.lower()),
            "coder": type(coder).__name__,
            "bits": int(coder.n_bits),
            "protocol": protocol.name,
            "trained_on": meta.get("protocol"),
            "n_train": meta.get("n_train"),
            "encode_seconds": round(encode_seconds, 3),
            # shared by the protocols evaluated together
            "search_eval_seconds": search_eval_seconds,
            "fit_seconds": meta.get("fit_seconds"),
        })
    return results
