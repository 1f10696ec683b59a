"""Exact search throughput: HammingIndex vs faiss IndexBinaryFlat, ADCIndex vs faiss IndexPQ.

1,000,000 database codes, 1,000 queries, k = 100, every method in the same run on the same data;
each timing is the best of ``--repeats`` interleaved runs (the machines are noisy). Also checks that
our results equal faiss's wherever faiss's order is unambiguous, and that ours follow the
(distance, id) tie rule.

    python bench/bench_exact.py [--n 1000000] [--nq 1000] [--k 100] [--repeats 3] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np

from deepcodes.coders import PQ
from deepcodes.data import load_sift10k
from deepcodes.index import ADCIndex, HammingIndex


def race(ours, theirs, repeats):
    """Best-of-``repeats`` seconds of two searches run alternately, and their last results."""
    best = [np.inf, np.inf]
    results = [None, None]
    for _ in range(repeats):
        for slot, fn in enumerate((ours, theirs)):
            start = time.perf_counter()
            results[slot] = fn()
            best[slot] = min(best[slot], time.perf_counter() - start)
    return best, results


def tie_rule_holds(d, i):
    return bool(np.all((d[:, 1:] > d[:, :-1]) | ((d[:, 1:] == d[:, :-1]) & (i[:, 1:] > i[:, :-1]))))


def bench_hamming(n, nq, k, repeats, rng):
    rows = []
    base, queries, _ = load_sift10k()
    for n_bits in (64, 128):
        for kind in ("random", "itq-sift"):
            if kind == "random":
                db = rng.integers(0, 256, (n, n_bits // 8), dtype=np.uint8)
                q = rng.integers(0, 256, (nq, n_bits // 8), dtype=np.uint8)
            else:
                # learned codes with realistic structure: ITQ on SIFT10K, database resampled with noise
                from deepcodes.coders import ITQ

                X = base.astype(np.float32)
                itq = ITQ(n_bits, random_state=0).fit(X)
                src = X[rng.integers(0, len(X), n)] + rng.normal(0, 4, (n, X.shape[1])).astype(np.float32)
                db = itq.encode(src)
                q = itq.encode(X[rng.integers(0, len(X), nq)] + rng.normal(0, 4, (nq, X.shape[1])).astype(np.float32))
            ours = HammingIndex(n_bits)
            ours.add_codes(db)
            ours.search_codes(q[:4], k)  # compile
            ref = faiss.IndexBinaryFlat(n_bits)
            ref.add(db)
            (t_ours, t_faiss), ((d, i), (fd, fi)) = race(lambda: ours.search_codes(q, k),
                                                          lambda: ref.search(q, k), repeats)
            rows.append({
                "bench": "hamming", "codes": kind, "bits": n_bits, "n": n, "nq": nq, "k": k,
                "ours_qps": nq / t_ours, "faiss_qps": nq / t_faiss, "ratio": t_faiss / t_ours,
                "same_distances": bool(np.array_equal(d, fd)), "tie_rule": tie_rule_holds(d, i),
                "same_ids_as_faiss": float((i == fi).mean()),
            })
            print(rows[-1], flush=True)
    return rows


def bench_adc(n, nq, k, repeats, rng):
    rows = []
    base, _, _ = load_sift10k()
    X = base.astype(np.float32)
    db_vectors = X[rng.integers(0, len(X), n)] + rng.normal(0, 4, (n, X.shape[1])).astype(np.float32)
    Q = X[rng.integers(0, len(X), nq)] + rng.normal(0, 4, (nq, X.shape[1])).astype(np.float32)
    for M in (8, 16):
        pq = PQ(M=M, n_iter=20, random_state=0).fit(X)
        codes = pq.encode(db_vectors)
        ours = ADCIndex(pq)
        ours.add_codes(codes)
        ours.search(Q[:4], k)
        ref = faiss.IndexPQ(X.shape[1], M, 8)
        faiss.copy_array_to_vector(pq.codebooks_.ravel(), ref.pq.centroids)
        ref.is_trained = True
        ref.sa_decode(codes[:1])  # the codebook is in place
        ref.add_sa_codes(codes)
        (t_ours, t_faiss), ((d, i), (fd, fi)) = race(lambda: ours.search(Q, k), lambda: ref.search(Q, k), repeats)
        rows.append({
            "bench": "adc", "M": M, "n": n, "nq": nq, "k": k,
            "ours_qps": nq / t_ours, "faiss_qps": nq / t_faiss, "ratio": t_faiss / t_ours,
            "max_rel_distance_diff": float((np.abs(d - fd) / np.maximum(np.abs(fd), 1e-6)).max()),
            "same_ids_as_faiss": float((i == fi).mean()),
            "tie_rule": tie_rule_holds(d, i),
        })
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--nq", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    info = {"faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads()}
    rows = bench_hamming(args.n, args.nq, args.k, args.repeats, rng) + bench_adc(args.n, args.nq, args.k, args.repeats, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "exact.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    print("\n| search | codes | ours q/s | faiss q/s | ours / faiss | same distances | tie rule |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        what = (f"Hamming {r['bits']} bits" if r["bench"] == "hamming" else f"ADC PQ M={r['M']}")
        codes = r.get("codes", "SIFT10K-derived")
        same = r["same_distances"] if "same_distances" in r else r["max_rel_distance_diff"] < 1e-5
        print(f"| {what} | {codes} | {r['ours_qps']:.0f} | {r['faiss_qps']:.0f} | {r['ratio']:.2f}x | {same} | {r['tie_rule']} |")


if __name__ == "__main__":
    main()
