"""Multi-index hashing vs faiss IndexBinaryFlat vs HammingIndex: exact Hamming k-NN on 1M codes.

Code sets (``--n`` database codes, 1,000 queries each):

* ``random-64``, ``random-128``: uniform random bits (the hardest case for multi-index hashing:
  the k-th neighbour is far away);
* ``itq-64``, ``itq-128``: PCA-ITQ fitted on ``--train`` base vectors of SIFT1M-CIFAR
  (``deepcodes data sift1m-cifar``, built here if missing), encoding its first ``--n`` base vectors
  and its 1,000 held-out queries.

For k = 1, 10, 100 every method searches all queries at once; each timing is the best of
``--repeats`` interleaved runs (the machine is shared and noisy). Multi-index hashing must return
exactly HammingIndex's (distance, id) lists; faiss's distances must match (its ids may order ties
differently). Also printed: the median distance of the 10th neighbour, which decides how far the
multi-index search has to go, and a sweep of the number of substrings m at k = 10.

    python bench/bench_mih.py [--n 1000000] [--repeats 2] [--out bench/results]

Writes ``mih.json``, ``mih.md`` (the tables) and ``mih_qps.png`` (queries/s against k) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np

from deepcodes.coders import ITQ
from deepcodes.data.sift_cifar import load_sift_cifar
from deepcodes.index.hamming import HammingIndex
from deepcodes.index.mih import MultiIndexHashing

KS = (1, 10, 100)
SWEEP = {64: (3, 4, 5, 6), 128: (6, 8, 9, 10, 12)}
METHODS = ("faiss IndexBinaryFlat", "HammingIndex", "MultiIndexHashing")


def race(fns, repeats):
    """Best-of-``repeats`` seconds of each search, run in turn, and each one's last result."""
    best = [np.inf] * len(fns)
    results = [None] * len(fns)
    for _ in range(repeats):
        for slot, fn in enumerate(fns):
            start = time.perf_counter()
            results[slot] = fn()
            best[slot] = min(best[slot], time.perf_counter() - start)
    return best, results


def code_sets(n, n_train, rng):
    """Yield (name, n_bits, database codes, query codes)."""
    base, queries, _ = load_sift_cifar(progress=True)
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


def bench_set(name, n_bits, db, q, repeats):
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
    for k in KS:
        (t_faiss, t_ham, t_mih), ((fd, _), (hd, hi), (md, mi)) = race(
            [lambda: flat.search(q, k), lambda: ham.search_codes(q, k), lambda: mih.search_codes(q, k)], repeats)
        nq = q.shape[0]
        row = {
            "codes": name, "bits": n_bits, "n": db.shape[0], "nq": nq, "k": k, "m": mih.m_,
            "qps": {METHODS[0]: nq / t_faiss, METHODS[1]: nq / t_ham, METHODS[2]: nq / t_mih},
            "mih_vs_faiss": t_faiss / t_mih, "mih_vs_hamming": t_ham / t_mih,
            "mih_identical": bool(np.array_equal(md, hd) and np.array_equal(mi, hi)),
            "faiss_same_distances": bool(np.array_equal(fd, hd)),
            "median_kth_distance": float(np.median(hd[:, -1])),
            "median_10th_distance": float(np.median(hd[:, 9])) if k >= 10 else None,
            "mih_build_s": build_s, "mih_linear_scan_share": float((mih.last_work_ < 0).mean()),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if k == 10:
            ref10 = (hd, hi)
    sweep = {}
    for m in SWEEP[n_bits]:
        other = MultiIndexHashing(n_bits, n_substrings=m)
        other.add_codes(db)
        other.search_codes(q[:4], 1)
        (t,), ((d, i),) = race([lambda: other.search_codes(q, 10)], repeats)
        sweep[m] = {"qps": q.shape[0] / t,
                    "identical": bool(np.array_equal(d, ref10[0]) and np.array_equal(i, ref10[1]))}
        print(f"{name} k=10 m={m}: {sweep[m]['qps']:.0f} q/s", flush=True)
    return rows, sweep


def markdown(rows, sweeps, info) -> str:
    lines = [f"{info['n']:,} database codes, {info['nq']:,} queries, {info['threads']} threads; "
             "queries/s, best of "f"{info['repeats']} interleaved runs.", "",
             "| codes | k | m | median k-th dist | faiss IndexBinaryFlat q/s | HammingIndex q/s | MIH q/s "
             "| MIH / faiss | MIH / HammingIndex | MIH = HammingIndex | MIH queries scanned |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        qps = r["qps"]
        lines.append(f"| {r['codes']} | {r['k']} | {r['m']} | {r['median_kth_distance']:g} | {qps[METHODS[0]]:,.0f} "
                     f"| {qps[METHODS[1]]:,.0f} | {qps[METHODS[2]]:,.0f} | {r['mih_vs_faiss']:.1f}x "
                     f"| {r['mih_vs_hamming']:.1f}x | {'yes' if r['mih_identical'] else '**NO**'} "
                     f"| {r['mih_linear_scan_share']:.0%} |")
    lines += ["", "Median distance of the 10th neighbour: " + ", ".join(
        f"{r['codes']} {r['median_10th_distance']:g}" for r in rows if r["k"] == 10) + ".", "",
        "MIH queries/s at k = 10 against the number of substrings m:", "",
        "| codes | m: q/s |", "| --- | --- |"]
    for name, sweep in sweeps.items():
        lines.append(f"| {name} | " + ", ".join(f"{m}: {s['qps']:,.0f}" + ("" if s["identical"] else " (DIFFERS)")
                                                for m, s in sweep.items()) + " |")
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
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows, sweeps = [], {}
    for name, n_bits, db, q in code_sets(args.n, args.train, rng):
        set_rows, sweeps[name] = bench_set(name, n_bits, db, q, args.repeats)
        rows += set_rows
    info = {"n": args.n, "nq": rows[0]["nq"], "repeats": args.repeats, "faiss": faiss.__version__,
            "threads": faiss.omp_get_max_threads()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mih.json").write_text(json.dumps({"info": info, "rows": rows, "sweeps": sweeps}, indent=2))
    text = markdown(rows, sweeps, info)
    (args.out / "mih.md").write_text(text)
    plot(rows, args.out / "mih_qps.png")
    print("\n" + text)


if __name__ == "__main__":
    main()
