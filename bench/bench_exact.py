"""Exact search throughput against faiss, under the same threads and OpenMP wait policy:
HammingIndex vs faiss IndexBinaryFlat, ADCIndex vs faiss IndexPQ (8 and 16 bytes), FastScanIndex
vs faiss IndexPQFastScan (4-bit codes, 8 and 16 bytes, faiss fed our PQ codebooks; exact ADC on the
same 4-bit codes timed too).

``--n`` database codes (a comma-separated list runs each size in turn: how the scans' cost
grows), ``--nq`` queries, k = ``--k``, every method in the same process on the same
data; each timing is the best of ``--repeats`` interleaved runs (see ``bench/harness.py``: one child
process per ``--wait-policy``, the load average recorded). Also checks that our results equal
faiss's distances and follow the (distance, id) tie rule, and measures the Hamming scan against its
two bounds: the machine's memory read bandwidth and the scan of an L1-resident database.

    python bench/bench_exact.py [--n 1000000] [--nq 1000] [--k 100] [--threads 2]
                                [--wait-policy PASSIVE,ACTIVE] [--repeats 3] [--out bench/results]
                                [--parts hamming,adc,fastscan,bounds]
    python bench/bench_exact.py --n 100000,300000,1000000 --parts hamming,adc   # cost against N
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numba as nb
import numpy as np

from harness import Harness, load_note, publish

from deepcodes.coders import ITQ, PQ
from deepcodes.data import load_sift10k
from deepcodes.index import ADCIndex, FastScanIndex, HammingIndex
from deepcodes.knn import hamming as hamming_kernels
from deepcodes.knn.hamming import hamming_search, to_words


def tie_rule_holds(d, i):
    return bool(np.all((d[:, 1:] > d[:, :-1]) | ((d[:, 1:] == d[:, :-1]) & (i[:, 1:] > i[:, :-1]))))


def noisy_sample(X, n, rng):
    """``n`` rows of X drawn with replacement plus Gaussian noise (σ = 4): a SIFT-like set of any size."""
    return X[rng.integers(0, len(X), n)] + rng.normal(0, 4, (n, X.shape[1])).astype(np.float32)


def recall(ids, truth):
    return float(np.mean([len(np.intersect1d(a, b)) / truth.shape[1] for a, b in zip(ids, truth)]))


def bench_hamming(h, X, n, nq, k, rng):
    rows = []
    for n_bits in (64, 128):
        for kind in ("random", "itq-sift"):
            if kind == "random":
                db = rng.integers(0, 256, (n, n_bits // 8), dtype=np.uint8)
                q = rng.integers(0, 256, (nq, n_bits // 8), dtype=np.uint8)
            else:  # learned codes with realistic structure: ITQ on SIFT10K, database resampled with noise
                itq = ITQ(n_bits, random_state=0).fit(X)
                db = itq.encode(noisy_sample(X, n, rng))
                q = itq.encode(noisy_sample(X, nq, rng))
            ours = HammingIndex(n_bits)
            ours.add_codes(db)
            ours.search_codes(q[:4], k)  # compile
            ref = faiss.IndexBinaryFlat(n_bits)
            ref.add(db)
            best, res = h.race({"ours": lambda: ours.search_codes(q, k), "faiss": lambda: ref.search(q, k)})
            (d, i), (fd, _) = res["ours"], res["faiss"]
            rows.append({"bench": "hamming", "what": f"Hamming {n_bits} bits", "codes": kind, "n": n, "nq": nq, "k": k,
                         "ours_qps": nq / best["ours"], "faiss_qps": nq / best["faiss"],
                         "ratio": best["faiss"] / best["ours"], "same": bool(np.array_equal(d, fd)),
                         "tie_rule": tie_rule_holds(d, i), "load": h.last_load()})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_adc(h, X, db_vectors, Q, truth, k, exact=True, fastscan=True):
    rows = []
    n, nq = db_vectors.shape[0], Q.shape[0]
    for M in (8, 16) if exact else ():
        pq = PQ(M=M, n_iter=20, random_state=0).fit(X)
        codes = pq.encode(db_vectors)
        ours = ADCIndex(pq)
        ours.add_codes(codes)
        ours.search(Q[:4], k)
        ref = faiss.IndexPQ(X.shape[1], M, 8)
        faiss.copy_array_to_vector(pq.codebooks_.ravel(), ref.pq.centroids)
        ref.is_trained = True
        ref.add_sa_codes(codes)
        best, res = h.race({"ours": lambda: ours.search(Q, k), "faiss": lambda: ref.search(Q, k)})
        (d, i), (fd, _) = res["ours"], res["faiss"]
        rows.append({"bench": "adc", "what": f"ADC PQ{M} ({M} bytes)", "codes": "SIFT10K-derived", "n": n, "nq": nq,
                     "k": k, "ours_qps": nq / best["ours"], "faiss_qps": nq / best["faiss"],
                     "ratio": best["faiss"] / best["ours"],
                     "same": bool((np.abs(d - fd) <= 1e-5 * np.maximum(np.abs(fd), 1.0)).all()),
                     "tie_rule": tie_rule_holds(d, i), "recall_at_10": recall(i[:, :10], truth), "load": h.last_load()})
        print(json.dumps(rows[-1]), flush=True)
    for M in (16, 32) if fastscan else ():
        pq = PQ(M=M, n_bits_per_code=4, n_iter=20, random_state=0).fit(X)
        ref = faiss.IndexPQFastScan(X.shape[1], M, 4)
        faiss.copy_array_to_vector(pq.codebooks_.ravel(), ref.pq.centroids)
        ref.is_trained = True
        ref.add(db_vectors)  # faiss encodes with our codebooks
        codes = pq.encode(db_vectors)
        fast, exact = FastScanIndex(pq), ADCIndex(pq)
        fast.add_codes(codes)
        exact.add_codes(codes)
        fast.search(Q[:4], k)
        exact.search(Q[:4], k)
        best, res = h.race({"ours": lambda: fast.search(Q, k), "faiss": lambda: ref.search(Q, k),
                            "exact": lambda: exact.search(Q, k)})
        (d, i), (ed, ei) = res["ours"], res["exact"]
        rows.append({"bench": "fastscan", "what": f"fast-scan PQ{M}x4 ({M // 2} bytes)", "codes": "SIFT10K-derived",
                     "n": n, "nq": nq, "k": k, "ours_qps": nq / best["ours"], "faiss_qps": nq / best["faiss"],
                     "exact_adc_qps": nq / best["exact"], "ratio": best["faiss"] / best["ours"],
                     "same": f"{(i == ei).all(axis=1).mean():.0%} rows = exact ADC", "tie_rule": tie_rule_holds(d, i),
                     "recall_at_10": recall(i[:, :10], truth),
                     "faiss_recall_at_10": recall(res["faiss"][1][:, :10], truth), "load": h.last_load()})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def hamming_bounds(h, n, nq, rng):
    """The 128-bit Hamming scan's codes/s (k = 1) against (a) the rate at which the machine reads
    memory (numpy's sum over the database words, a streaming read) and (b) the same kernel over an
    L1-resident database (2,048 codes, 32 KB) with as many more queries, which bounds what the
    distance loop can do from cache. Also counts the popcount instructions in the compiled kernel."""
    db = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    q = rng.integers(0, 256, (nq, 16), dtype=np.uint8)
    words = to_words(db)
    small = np.ascontiguousarray(words[:2048])
    many = rng.integers(0, 256, (min(1 << 17, max(64, nq * n // 2048)), 16), dtype=np.uint8)
    hamming_search(q[:4], words, 1, 128)
    hamming_search(many[:4], small, 1, 128)
    best, _ = h.race({"scan": lambda: hamming_search(q, words, 1, 128),
                      "resident": lambda: hamming_search(many, small, 1, 128), "read": lambda: words.sum()})
    scan = nq * n / best["scan"]
    cached = many.shape[0] * 2048 / best["resident"]
    bandwidth = words.nbytes / best["read"]
    # a block of up to 16 queries reads each database word from memory once
    scan_bytes = words.nbytes * (nq / 16) / best["scan"]
    # the kernel as compiled here (the cached one cannot be inspected)
    fresh = nb.njit(parallel=True)(hamming_kernels._hamming_knn.py_func)
    fresh(to_words(q[:2]), small, 1, 128, 1, 1025, (0, 0))
    asm = fresh.inspect_asm(fresh.signatures[0])
    row = {"bench": "bounds", "scan_codes_per_s": scan, "resident_codes_per_s": cached,
           "share_of_cache_bound": scan / cached, "read_GB_s": bandwidth / 1e9, "scan_read_GB_s": scan_bytes / 1e9,
           "share_of_memory_bound": scan_bytes / bandwidth, "popcnt": asm.count("popcnt"),
           "vpshufb": asm.count("vpshufb"), "load": h.last_load()}
    print(json.dumps(row), flush=True)
    return [row]


def markdown(reports) -> str:
    lines = [load_note(reports), "",
             "| policy | search | codes | N | ours q/s | faiss q/s | ours / faiss | same results | tie rule | recall@10 ours / faiss | load |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- |"]
    for rep in reports:
        for r in rep["rows"]:
            if r["bench"] == "bounds":
                continue
            rec = f"{r['recall_at_10']:.3f}" if "recall_at_10" in r else ""
            if "faiss_recall_at_10" in r:
                rec += f" / {r['faiss_recall_at_10']:.3f}"
            what = r["what"] + (f" (exact ADC on these codes: {r['exact_adc_qps']:,.0f} q/s)" if "exact_adc_qps" in r else "")
            lines.append(f"| {rep['policy']} | {what} | {r['codes']} | {r['n']:,} | {r['ours_qps']:,.0f} | {r['faiss_qps']:,.0f} "
                         f"| {r['ratio']:.2f}x | {r['same']} | {r['tie_rule']} | {rec} | {r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    if not any(r["bench"] == "bounds" for rep in reports for r in rep["rows"]):
        return "\n".join(lines) + "\n"
    lines += ["", "| policy | 128-bit scan codes/s (k = 1) | L1-resident codes/s | share of cache bound | memory read GB/s "
              "| scan reads GB/s | share of memory bound | popcnt / vpshufb in kernel |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for rep in reports:
        for r in rep["rows"]:
            if r["bench"] == "bounds":
                lines.append(f"| {rep['policy']} | {r['scan_codes_per_s']:.3g} | {r['resident_codes_per_s']:.3g} "
                             f"| {r['share_of_cache_bound']:.0%} | {r['read_GB_s']:.1f} | {r['scan_read_GB_s']:.2f} "
                             f"| {r['share_of_memory_bound']:.0%} | {r['popcnt']} / {r['vpshufb']} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=lambda v: [int(x) for x in v.split(",") if x], default=[1_000_000],
                        help="database size(s), comma-separated")
    parser.add_argument("--nq", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--parts", type=lambda v: set(v.split(",")), default={"hamming", "adc", "fastscan", "bounds"},
                        help="which benches to run: hamming, adc, fastscan, bounds")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    Harness.add_arguments(parser)
    args = parser.parse_args()
    h = Harness.from_args(args)
    if h.is_parent:
        reports = h.run_children(__file__, sys.argv[1:])
        publish(args.out, "exact", reports, markdown(reports))
        return
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    base, _, _ = load_sift10k()
    X = base.astype(np.float32)
    rows = []
    for n in args.n:
        db_vectors = noisy_sample(X, n, rng)
        Q = noisy_sample(X, args.nq, rng)
        truth = faiss.knn(Q, db_vectors, 10)[1]
        if "hamming" in args.parts:
            rows += bench_hamming(h, X, n, args.nq, args.k, rng)
        if args.parts & {"adc", "fastscan"}:
            rows += bench_adc(h, X, db_vectors, Q, truth, args.k, exact="adc" in args.parts,
                              fastscan="fastscan" in args.parts)
        if "bounds" in args.parts:
            rows += hamming_bounds(h, n, args.nq, rng)
    h.finish(rows, seconds=time.perf_counter() - start)


if __name__ == "__main__":
    main()
