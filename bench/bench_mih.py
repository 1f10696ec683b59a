"""Multi-index hashing vs faiss IndexBinaryFlat vs HammingIndex: exact Hamming k-NN on 1M codes.

Code sets (``--n`` database codes, ``--nq`` queries each, at most 1,000):

* ``random-64``, ``random-128``: uniform random bits (the hardest case for multi-index hashing:
  the k-th neighbour is far away);
* ``itq-64``, ``itq-128``: PCA-ITQ fitted on ``--train`` base vectors of SIFT1M-CIFAR
  (``deepcodes data sift1m-cifar``, built here if missing), encoding its first ``--n`` base vectors
  and its 1,000 held-out queries.

For k = 1, 10, 100 every method searches all queries at once; each timing is the best of
``--repeats`` interleaved runs, under the same threads and OpenMP wait policy for every method (see
``bench/harness.py``: one child process per ``--wait-policy``, the load average recorded).
Multi-index hashing must return exactly HammingIndex's (distance, id) lists; faiss's distances must
match (its ids may order ties differently). faiss ``IndexBinaryMultiHash`` (the same m substrings,
``nflip`` = 2 bit flips per substring: approximate) is timed too, with its recall of the exact
k-th distance. Also printed: the median distance of the k-th neighbour, which decides how far the
multi-index search has to go, and with ``--sweep`` the number of substrings m at k = 10.

    python bench/bench_mih.py [--n 1000000] [--threads 2] [--wait-policy PASSIVE,ACTIVE]
                              [--repeats 3] [--sweep] [--out bench/results]

Writes ``mih.json``, ``mih.md`` (the tables) and ``mih_qps.png`` (queries/s against k) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from harness import Harness, load_note, publish

from deepcodes.coders import ITQ
from deepcodes.data.sift_cifar import load_sift_cifar
from deepcodes.index.hamming import HammingIndex
from deepcodes.index.mih import MultiIndexHashing

KS = (1, 10, 100)
SWEEP = {64: (3, 4, 5, 6), 128: (6, 8, 9, 10, 12)}
METHODS = ("faiss IndexBinaryFlat", "HammingIndex", "MultiIndexHashing", "faiss IndexBinaryMultiHash")


def code_sets(n, n_train, nq, rng):
    """Yield (name, n_bits, database codes, query codes) for the first ``nq`` queries."""
    base, queries, _ = load_sift_cifar(progress=True)
    queries = queries[:nq]
    if base.shape[0] < n:
        raise SystemExit(f"SIFT1M-CIFAR has {base.shape[0]} base vectors, fewer than --n {n}")
    train = np.asarray(base[np.sort(rng.choice(base.shape[0], n_train, replace=False))], dtype=np.float32)
    for n_bits in (64, 128):
        yield (f"random-{n_bits}", n_bits, rng.integers(0, 256, (n, n_bits // 8), dtype=np.uint8),
               rng.integers(0, 256, (queries.shape[0], n_bits // 8), dtype=np.uint8))
        start = time.perf_counter()
        itq = ITQ(n_bits, random_state=0).fit(train)
        db = np.concatenate([itq.encode(np.asarray(base[s:min(n, s + 100_000)], dtype=np.float32))
                             for s in range(0, n, 100_000)])
        print(f"ITQ {n_bits} bits: fit on {n_train} and encode {n} in {time.perf_counter() - start:.0f} s", flush=True)
        yield f"itq-{n_bits}", n_bits, db, itq.encode(queries.astype(np.float32))


def bench_set(h, name, n_bits, db, q, sweep_m):
    rows = []
    flat = faiss.IndexBinaryFlat(n_bits)
    flat.add(db)
    ham = HammingIndex(n_bits)
    ham.add_codes(db)
    mih = MultiIndexHashing(n_bits)
    mih.add_codes(db)
    start = time.perf_counter()
    mih.search_codes(q[:4], 1)  # builds the tables (and compiles the kernel on first use)
    build_s = time.perf_counter() - start
    ham.search_codes(q[:4], 1)
    multihash = faiss.IndexBinaryMultiHash(n_bits, mih.m_, n_bits // mih.m_)
    multihash.nflip = 2
    multihash.add(db)
    for k in KS:
        fns = dict(zip(METHODS, [lambda: flat.search(q, k), lambda: ham.search_codes(q, k),
                                 lambda: mih.search_codes(q, k), lambda: multihash.search(q, k)]))
        best, res = h.race(fns)
        (fd, _), (hd, hi), (md, mi), (xd, _) = (res[m] for m in METHODS)
        t_faiss, t_ham, t_mih = (best[m] for m in METHODS[:3])
        nq = q.shape[0]
        row = {
            "codes": name, "bits": n_bits, "n": db.shape[0], "nq": nq, "k": k, "m": mih.m_,
            "qps": {m: nq / best[m] for m in METHODS},
            "mih_vs_faiss": t_faiss / t_mih, "mih_vs_hamming": t_ham / t_mih,
            "mih_vs_multihash": best[METHODS[3]] / t_mih,
            # share of queries whose k-th distance faiss's multi-hash index got right
            "multihash_exact_kth": float((xd[:, -1] == hd[:, -1]).mean()),
            "mih_identical": bool(np.array_equal(md, hd) and np.array_equal(mi, hi)),
            "faiss_same_distances": bool(np.array_equal(fd, hd)),
            "median_kth_distance": float(np.median(hd[:, -1])),
            "median_10th_distance": float(np.median(hd[:, 9])) if k >= 10 else None,
            "mih_build_s": build_s, "mih_linear_scan_share": float((mih.last_work_ < 0).mean()),
            "load": h.last_load(),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if k == 10:
            ref10 = (hd, hi)
    sweep = {}
    for m in SWEEP[n_bits] if sweep_m else ():
        other = MultiIndexHashing(n_bits, n_substrings=m)
        other.add_codes(db)
        other.search_codes(q[:4], 1)
        best, res = h.race({"mih": lambda: other.search_codes(q, 10)})
        d, i = res["mih"]
        sweep[m] = {"qps": q.shape[0] / best["mih"],
                    "identical": bool(np.array_equal(d, ref10[0]) and np.array_equal(i, ref10[1]))}
        print(f"{name} k=10 m={m}: {sweep[m]['qps']:.0f} q/s", flush=True)
    return rows, sweep


def markdown(reports) -> str:
    info = reports[0]["info"]
    lines = [f"{info['n']:,} database codes, {info['nq']:,} queries; queries/s, best of {reports[0]['repeats']} "
             f"interleaved runs. {load_note(reports)}.", "",
             "| policy | codes | k | m | median k-th dist | faiss IndexBinaryFlat q/s | HammingIndex q/s | MIH q/s "
             "| MIH / faiss flat | MIH / HammingIndex | MIH = HammingIndex | MIH queries scanned "
             "| faiss MultiHash q/s (k-th exact) | MIH / faiss MultiHash | load |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for rep in reports:
        for r in rep["rows"]:
            qps = r["qps"]
            lines.append(f"| {rep['policy']} | {r['codes']} | {r['k']} | {r['m']} | {r['median_kth_distance']:g} "
                         f"| {qps[METHODS[0]]:,.0f} | {qps[METHODS[1]]:,.0f} | {qps[METHODS[2]]:,.0f} "
                         f"| {r['mih_vs_faiss']:.1f}x | {r['mih_vs_hamming']:.2f}x "
                         f"| {'yes' if r['mih_identical'] else '**NO**'} | {r['mih_linear_scan_share']:.0%} "
                         f"| {qps[METHODS[3]]:,.0f} ({r['multihash_exact_kth']:.0%}) | {r['mih_vs_multihash']:.1f}x "
                         f"| {r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    sweeps = [(rep["policy"], name, sweep) for rep in reports for name, sweep in rep["sweeps"].items() if sweep]
    if sweeps:
        lines += ["", "MIH queries/s at k = 10 against the number of substrings m:", "",
                  "| policy | codes | m: q/s |", "| --- | --- | --- |"]
        for policy, name, sweep in sweeps:
            lines.append(f"| {policy} | {name} | " + ", ".join(
                f"{m}: {s['qps']:,.0f}" + ("" if s["identical"] else " (DIFFERS)") for m, s in sweep.items()) + " |")
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["codes"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        sel = [r for r in rows if r["codes"] == name]
        for method, marker in zip(METHODS, "osD"):
            ax.plot([r["k"] for r in sel], [r["qps"][method] for r in sel], marker=marker, label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(KS, [str(k) for k in KS])
        ax.set_title(f"{name} (m={sel[0]['m']})")
        ax.set_xlabel("k")
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(f"queries/s ({rows[0]['n']:,} codes)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--train", type=int, default=50_000, help="ITQ training vectors (sampled from the base)")
    parser.add_argument("--nq", type=int, default=1000, help="queries (the first of the set's 1,000)")
    parser.add_argument("--sweep", action="store_true", help="also sweep the number of substrings m at k = 10")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    Harness.add_arguments(parser)
    args = parser.parse_args()
    h = Harness.from_args(args)
    if h.is_parent:
        reports = h.run_children(__file__, sys.argv[1:])
        publish(args.out, "mih", reports, markdown(reports))
        plot(reports[0]["rows"], args.out / "mih_qps.png")
        return
    rng = np.random.default_rng(0)
    rows, sweeps = [], {}
    for name, n_bits, db, q in code_sets(args.n, args.train, args.nq, rng):
        set_rows, sweeps[name] = bench_set(h, name, n_bits, db, q, args.sweep)
        rows += set_rows
    h.finish(rows, sweeps=sweeps, info={"n": args.n, "nq": rows[0]["nq"]})


if __name__ == "__main__":
    main()
