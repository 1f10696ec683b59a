"""Fit a named method on a protocol, index its database and evaluate it: the steps every command and
report shares, so the CLI, the demo and the reproductions measure the same way."""
from __future__ import annotations

import logging
import time

import numpy as np

from .data import Protocol, load_protocol
from .errors import InputError
from .eval import evaluate_search
from .eval.relevance import relevance_for
from .index import ADCIndex, HammingIndex
from .methods import get_method, make_coder

log = logging.getLogger(__name__)


def fit_method(method: str, bits: int, protocol: Protocol | str, random_state=0, **options):
    """Fit method ``method`` at ``bits`` bits on the protocol's training set. The returned coder's
    ``meta_`` records method, bits, protocol, training size, seed and fit time."""
    if isinstance(protocol, str):
        protocol = load_protocol(protocol)
    spec = get_method(method)
    coder = make_coder(method, bits, random_state=random_state, **options)
    if spec.supervised and protocol.train_labels is None:
        raise InputError(f"{method} is supervised but protocol {protocol.name!r} has no training labels")
    start = time.perf_counter()
    if spec.supervised:
        coder.fit(protocol.train, protocol.train_labels)
    else:
        coder.fit(protocol.train)
    seconds = time.perf_counter() - start
    coder.meta_ = {"method": method, "bits": int(bits), "protocol": protocol.name,
                   "n_train": int(protocol.train.shape[0]), "random_state": random_state,
                   "fit_seconds": round(seconds, 3)}
    log.info("fitted %s at %d bits on %s in %.1fs", method, bits, protocol.name, seconds)
    return coder


def build_index(coder):
    """The exact index for ``coder``'s codes: HammingIndex for binary coders, ADCIndex for quantizers."""
    kind = getattr(coder, "code_kind", None)
    if kind == "binary":
        return HammingIndex(coder=coder)
    if kind == "quantizer":
        return ADCIndex(coder)
    raise InputError(f"{type(coder).__name__} is neither a binary coder nor a quantizer")


def evaluate_coder(coder, protocol: Protocol | str, *, chunk_size: int = 100, progress: bool = False) -> dict:
    """Encode the protocol's database and queries with ``coder``, rank the whole database for every
    query and return the metrics (see :func:`deepcodes.eval.evaluate_search`) with the context."""
    if isinstance(protocol, str):
        protocol = load_protocol(protocol)
    if coder.dim_ != protocol.database.shape[1]:
        raise InputError(f"the model expects {coder.dim_}-dimensional input but protocol {protocol.name!r} "
                         f"has {protocol.database.shape[1]} dimensions")
    index = build_index(coder)
    start = time.perf_counter()
    index.add(protocol.database)
    if isinstance(index, HammingIndex):
        queries = coder.encode(protocol.queries)

        def search(Q, k):
            return index.search_codes(Q, k)
        hamming_bits = coder.n_bits
    else:
        queries = protocol.queries
        search = index.search
        hamming_bits = None
    encode_seconds = time.perf_counter() - start
    true_nn = protocol.ground_truth() if protocol.relevance == "knn" else None
    start = time.perf_counter()
    result = evaluate_search(search, queries, relevance_for(protocol), protocol.database.shape[0],
                             true_neighbors=true_nn, hamming_bits=hamming_bits, chunk_size=chunk_size,
                             progress=progress)
    meta = dict(getattr(coder, "meta_", None) or {})
    result.update({
        "method": meta.get("method", type(coder).__name__.lower()),
        "coder": type(coder).__name__,
        "bits": int(coder.n_bits),
        "protocol": protocol.name,
        "trained_on": meta.get("protocol"),
        "n_train": int(protocol.train.shape[0]),
        "encode_seconds": round(encode_seconds, 3),
        "search_eval_seconds": round(time.perf_counter() - start, 3),
        "fit_seconds": meta.get("fit_seconds"),
    })
    return result


def headline(result: dict) -> dict:
    """The few numbers a table shows: mAP, precision@100, recall@1000 and precision within radius 2."""
    row = {"method": result["method"], "protocol": result["protocol"], "bits": result["bits"],
           "map": result["map"], "p@100": result["precision_at_k"].get("100", np.nan)}
    if "precision_radius2" in result:
        row["p(r<=2)"] = result["precision_radius2"]
    return row
