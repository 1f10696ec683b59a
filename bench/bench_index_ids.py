"""What caller ids cost: add with ids, first search (merge), search, remove, search after a removal.

HammingIndex (64-bit codes) against faiss ``IndexBinaryIDMap(IndexBinaryFlat)``, and IVFADCIndex
(256 lists, PQ16, 128-d, trained on SIFT10K) against the faiss ``IndexIVFPQ`` that
``export_faiss`` makes of it, on ``--n`` stored items under shuffled int64 ids, removing
``--remove`` of them. Codes are random (and the IVF's lists drawn at random): this measures the
bookkeeping, not recall. Each figure is the best of ``--repeats`` runs on freshly built indexes,
ours and faiss's alternating, in one process with the same thread count.

    python bench/bench_index_ids.py [--n 1000000] [--remove 10000] [--nq 1000] [--repeats 3]
"""
from __future__ import annotations

import os

# One OpenMP wait policy for both sides (numba's threading layer and faiss share GNU OpenMP,
# which reads it once at start-up): PASSIVE unless the caller chose; printed with the results.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import time

import faiss
import numpy as np

from deepcodes.data import load_sift10k
from deepcodes.index import HammingIndex, IVFADCIndex
from deepcodes.interop.faiss_export import export_faiss


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_ours(make, add, codes, ids, queries, gone, search_kw):
    index = make()
    t = {"add": timed(lambda: add(index, codes, ids))[0]}
    t["first search"] = timed(lambda: index.search(queries[:10], 10, **search_kw))[0]
    t["search"], res = timed(lambda: index.search(queries, 10, **search_kw))
    t["remove"] = timed(lambda: index.remove(gone))[0]
    t["search after remove"] = timed(lambda: index.search(queries, 10, **search_kw))[0]
    return t, res, index


def run_faiss(make, codes, ids, queries, gone):
    index = make()
    # faiss's IVF-PQ adds vectors, not codes: its index comes filled from export_faiss
    t = {"add": timed(lambda: index.add_with_ids(codes, ids))[0] if codes is not None else float("nan")}
    t["first search"] = timed(lambda: index.search(queries[:10], 10))[0]
    t["search"], res = timed(lambda: index.search(queries, 10))
    t["remove"] = timed(lambda: index.remove_ids(faiss.IDSelectorBatch(gone)))[0]
    t["search after remove"] = timed(lambda: index.search(queries, 10))[0]
    return t, res


def best(runs):
    return {k: min(r[k] for r in runs) for k in runs[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--remove", type=int, default=10_000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ids = rng.choice(10**12, args.n, replace=False).astype(np.int64)
    gone = rng.choice(ids, args.remove, replace=False)
    rows = {}

    codes = rng.integers(0, 256, (args.n, 8), dtype=np.uint8)
    q = rng.integers(0, 256, (args.nq, 8), dtype=np.uint8)

    def add_batches(index, c, i):
        for s in range(0, len(c), 65536):
            index.add_codes(c[s:s + 65536], i[s:s + 65536])

    ours, theirs = [], []
    warm = HammingIndex(64)
    warm.add_codes(codes[:1000])
    warm.search(q[:2], 10)
    for _ in range(args.repeats):
        t, (d, i), _ = run_ours(lambda: HammingIndex(64), add_batches, codes, ids, q, gone, {})
        ours.append(t)
        ft, (fd, fi) = run_faiss(lambda: faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(64)), codes, ids, q, gone)
        theirs.append(ft)
    assert (d == fd).all()
    rows["HammingIndex 64-bit / faiss IndexBinaryIDMap(IndexBinaryFlat)"] = (best(ours), best(theirs))

    base, queries, _ = load_sift10k()
    trained = IVFADCIndex(128, 256, M=16, n_iter=10, random_state=0).train(base.astype(np.float32))
    Q = queries[:args.nq].astype(np.float32)
    pq_codes = rng.integers(0, 256, (args.n, 16), dtype=np.uint8)
    lists = rng.integers(0, 256, args.n)

    def make_ivf():
        return IVFADCIndex.from_bytes(trained.to_bytes())

    def add_lists(index, c, i, li=lists):
        for s in range(0, len(c), 65536):
            index.add_codes(c[s:s + 65536], i[s:s + 65536], lists=li[s:s + 65536])

    ours, theirs = [], []
    warm = make_ivf()
    add_lists(warm, pq_codes[:5000], ids[:5000], lists[:5000])
    warm.search(Q[:2], 10, nprobe=8)
    for _ in range(args.repeats):
        t, (d, i), _ = run_ours(make_ivf, add_lists, pq_codes, ids, Q, gone, {"nprobe": 8})
        ours.append(t)
        refill = make_ivf()
        add_lists(refill, pq_codes, ids)
        ft, (fd, fi) = run_faiss(lambda: export_faiss(refill), None, None, Q, gone)
        theirs.append(ft)
    np.testing.assert_allclose(d, fd, rtol=1e-3, atol=1e-2)
    rows["IVFADCIndex IVF256,PQ16 / faiss IndexIVFPQ (export_faiss)"] = (best(ours), best(theirs))

    load = os.getloadavg()
    print(f"n={args.n:,} items, {args.remove:,} removed, {args.nq} queries, k=10, best of {args.repeats}; "
          f"faiss threads {faiss.omp_get_max_threads()}, numba threads {os.environ.get('NUMBA_NUM_THREADS', 'default')}; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} for both; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    for name, (o, f) in rows.items():
        print(f"\n{name}\n| step | ours (s) | faiss (s) | ours / faiss |\n| --- | --- | --- | --- |")
        for step in o:
            ratio = o[step] / f[step]
            print(f"| {step} | {o[step]:.4f} | {f[step]:.4f} | {ratio:.2f} |")
    print(json.dumps({k: {"ours": o, "faiss": f} for k, (o, f) in rows.items()}))


if __name__ == "__main__":
    main()
