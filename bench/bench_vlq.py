"""VLQIndex vs faiss IndexIVFPQ vs our IVFADCIndex: recall against queries/s at equal bytes per vector.

Every index in one run shares the data, the queries, one first-level k-means run (the same
centroids are handed to each, faiss's quantizer included, so the k-means budget is identical)
and the training sample of its residual quantizer. Byte groups compared (codes as stored in the
file; every index also stores an int64 id per vector). VLQ's exact scan also reads a float32 line
term per code, derived from the codes and held in memory only, so it reads 4 bytes more per code
than it stores; "VLQ M=11" (12 + 4 bytes) is the 16-byte comparison at equal bytes read:

* 8 bytes:  VLQ M=7 + 1 lambda byte (12 read) | IVFADC M=8 | faiss IVFPQ M=8 x 8 bits
* 9 bytes:  VLQ M=8 + 1 lambda byte (13 read) | faiss IVFPQ M=8 x 9 bits (72 bits)
* 16 bytes: VLQ M=15 + 1 lambda byte (20 read) | VLQ M=11 + 1 (12 stored, 16 read) | IVFADC M=16 |
  faiss IVFPQ M=16 x 8 bits
* 17 bytes: VLQ M=16 + 1 lambda byte (the paper's setting, 21 read) | faiss IVFPQ M=16 x 9 bits (18 bytes)
* 16 bytes, 4-bit fast scan: VLQ-FS M=28 (``VLQ1024x64,PQ28x4,FastScan``: 14 bytes of packed
  sub-codes + 1 lambda byte + 1 line-term byte) | faiss IVFPQFastScan M=32 x 4 bits
  (``IVF1024,PQ32x4fs``); both also against faiss IVFPQ M=16 above
* 8 bytes, 4-bit fast scan: VLQ-FS M=12 (6 + 1 + 1) | faiss IVFPQFastScan M=16 x 4 bits

Metrics: R@1/10/100, the fraction of queries whose true nearest neighbour is in the top 1/10/100
(the paper's Recall@R), and 10-recall@10, the mean share of the true 10 nearest in the top 10.
Timings are the best of ``--repeats`` runs of all queries at once, on the cores of this machine.

    python bench/bench_vlq.py                                   # 1M SIFT set if built, else SIFT10K
    python bench/bench_vlq.py --data synthetic --n 1000000      # clustered synthetic set
    python bench/bench_vlq.py --scaling 1000000,3000000         # build/search cost against N (synthetic)
    python bench/bench_vlq.py --from-json bench/results/vlq_sift1m-cifar.json   # redraw tables/plots

With ``--interleave`` every index is built first and the searches run in rounds (every setting of
every index once per round, ``--repeats`` rounds, best kept), so the shared machine's load drifts
over all sides alike; the load average is recorded before and after each round.
"""
from __future__ import annotations

import os

# One OpenMP wait policy for both sides (numba's threading layer and faiss share GNU OpenMP,
# which reads it once at start-up): PASSIVE unless the caller chose; printed with the results.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import logging
import time
from pathlib import Path

import faiss
import numpy as np

from deepcodes.coders.kmeans import kmeans
from deepcodes.coders.pq import subsample
from deepcodes.data.groundtruth import exact_knn
from deepcodes.index.ivfadc import IVFADCIndex
from deepcodes.index.vlq import VLQIndex
from deepcodes.index.vlq_fastscan import VLQFastScanIndex

CONFIGS = [  # (label, kind, M, nbits, byte group)
    ("VLQ M=7", "vlq", 7, 8, 8), ("IVFADC M=8", "ivfadc", 8, 8, 8), ("faiss IVFPQ M=8", "faiss", 8, 8, 8),
    ("VLQ M=8", "vlq", 8, 8, 9), ("faiss IVFPQ M=8x9b", "faiss", 8, 9, 9),
    ("VLQ M=15", "vlq", 15, 8, 16), ("VLQ M=11", "vlq", 11, 8, 16), ("IVFADC M=16", "ivfadc", 16, 8, 16), ("faiss IVFPQ M=16", "faiss", 16, 8, 16),
    ("VLQ M=16", "vlq", 16, 8, 17), ("faiss IVFPQ M=16x9b", "faiss", 16, 9, 17),
    ("VLQ-FS M=28", "vlqfs", 28, 4, 16), ("faiss IVFPQfs M=32x4", "faissfs", 32, 4, 16),
    ("VLQ-FS M=12", "vlqfs", 12, 4, 8), ("faiss IVFPQfs M=16x4", "faissfs", 16, 4, 8),
]
FAISS = ("faiss", "faissfs")
VLQ_KINDS = ("vlq", "vlqfs")
STYLES = {"vlq": "-o", "vlqfs": "-D", "ivfadc": "--s", "faiss": ":^", "faissfs": ":v"}


# -- memory ------------------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> int:
    """Reset the process's peak RSS (Linux clear_refs) and return the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_kb("VmRSS") * 1024


def peak_rss() -> int:
    return _status_kb("VmHWM") * 1024


# -- data --------------------------------------------------------------------------------------

_CHUNK = 1 << 18


def synthetic_stream(n: int, d: int = 128, n_clusters: int = 2000, latent: int = 16, seed: int = 0,
                     stream: int = 1):
    """Clustered synthetic vectors, float32, as a function that yields ``(start, rows)`` chunks of
    at most 2**18 rows, the same rows on every call: a seeded Gaussian mixture of ``n_clusters``
    clusters in a ``latent``-dimensional space, mapped to ``d`` dimensions by a random linear map,
    plus small isotropic noise. Real descriptors have a low intrinsic dimension; isotropic 128-D
    clusters would make every neighbour almost equally far and the benchmark meaningless.
    ``stream`` 1 is the base, 2 the queries (independent draws from the same mixture)."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.standard_normal((n_clusters, latent)).astype(np.float32)
    scales = rng.uniform(0.5, 1.0, n_clusters).astype(np.float32)
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    W = (rng.standard_normal((latent, d)) / np.sqrt(latent)).astype(np.float32)

    def chunks():
        gen = np.random.default_rng(seed + stream)
        for s in range(0, n, _CHUNK):
            e = min(n, s + _CHUNK)
            lab = gen.choice(n_clusters, e - s, p=weights)
            z = centres[lab] + scales[lab, None] * gen.standard_normal((e - s, latent), dtype=np.float32)
            yield s, z @ W + 0.05 * gen.standard_normal((e - s, d), dtype=np.float32)

    return chunks


def materialize(chunks, n: int, d: int = 128) -> np.ndarray:
    out = np.empty((n, d), dtype=np.float32)
    for s, rows in chunks():
        out[s:s + rows.shape[0]] = rows
    return out


def synthetic(n: int, nq: int, seed: int = 0):
    """The base (n, 128) and queries (nq, 128) of :func:`synthetic_stream`, in memory."""
    return (materialize(synthetic_stream(n, seed=seed, stream=1), n),
            materialize(synthetic_stream(nq, seed=seed, stream=2), nq))


def streamed_truth_and_sample(chunks, n: int, Q: np.ndarray, k: int, max_train: int, rng):
    """One pass over ``chunks``: the exact top-``k`` of ``Q`` over all n rows (exact_knn per chunk,
    float64 distances, merged by (distance, id)), and the rows :func:`subsample` would draw with
    ``rng`` from the whole set. Memory: one chunk, the running top-k and the sample."""
    pick = np.arange(n) if n <= max_train else np.sort(rng.choice(n, max_train, replace=False))
    sample = np.empty((len(pick), Q.shape[1]), dtype=np.float32)
    best_d = np.full((len(Q), 0), np.inf, dtype=np.float32)
    best_i = np.empty((len(Q), 0), dtype=np.int64)
    for s, rows in chunks():
        e = s + rows.shape[0]
        lo, hi = np.searchsorted(pick, [s, e])
        sample[lo:hi] = rows[pick[lo:hi] - s]
        d, i = exact_knn(rows, Q, min(k, rows.shape[0]))
        cat_d, cat_i = np.concatenate([best_d, d], 1), np.concatenate([best_i, i + s], 1)
        order = np.lexsort((cat_i, cat_d), axis=-1)[:, :k]
        best_d, best_i = np.take_along_axis(cat_d, order, 1), np.take_along_axis(cat_i, order, 1)
    return best_i, sample


def load_data(args):
    cache = Path.home() / ".cache" / "deepcodes" / "sift1m-cifar"
    name = args.data
    if name == "auto":
        name = "sift1m-cifar" if (cache / "manifest.json").is_file() else "sift10k"
    if name == "sift1m-cifar":
        from deepcodes.data.sift_cifar import load_sift_cifar

        base, queries, gt = load_sift_cifar()
        base = np.array(base)  # into memory, so the add-memory figure counts only what the index adds
        desc = f"SIFT1M-CIFAR (dense SIFT of CIFAR-10 images), {base.shape[0]:,} base, {len(queries):,} queries"
    elif name == "sift10k":
        from deepcodes.data import load_sift10k

        base, queries, gt = load_sift10k()
        desc = f"ANN_SIFT10K, {base.shape[0]:,} base, {len(queries):,} queries"
    else:
        base, queries = synthetic(args.n, args.nq, seed=args.seed)
        t = time.perf_counter()
        gt = exact_knn(base, queries, 100)[1]
        print(f"ground truth for {args.n:,} synthetic vectors: {time.perf_counter() - t:.1f} s", flush=True)
        desc = f"synthetic clustered data (2000-cluster Gaussian mixture in 16-D, linearly mapped to 128-D, plus noise), {base.shape[0]:,} base, {len(queries):,} queries"
    return name, desc, base, queries.astype(np.float32), gt


# -- evaluation --------------------------------------------------------------------------------

def recalls(ids: np.ndarray, gt: np.ndarray) -> dict:
    nn = gt[:, :1]
    out = {f"R@{r}": float((ids[:, :r] == nn).any(1).mean()) for r in (1, 10, 100) if r <= ids.shape[1]}
    out["10-recall@10"] = float(np.mean([len(np.intersect1d(i[:10], g[:10])) / 10 for i, g in zip(ids, gt)]))
    return out


def timed(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def batches(base, batch):
    """``base`` as :func:`synthetic_stream`'s chunks: an array in memory is cut in ``batch`` rows;
    a chunk function (a streamed set) is returned as it is."""
    if callable(base):
        return base
    return lambda: ((s, base[s:s + batch]) for s in range(0, base.shape[0], batch))


def faiss_ivfpq(centroids, M, nbits, Xt, base, batch, fast_scan=False):
    d = centroids.shape[1]
    quantizer = faiss.IndexFlatL2(d)
    quantizer.add(centroids)
    kind = faiss.IndexIVFPQFastScan if fast_scan else faiss.IndexIVFPQ
    index = kind(quantizer, d, centroids.shape[0], M, nbits)
    index.cp.niter = ARGS.n_iter  # same PQ k-means budget as ours
    # faiss skips the coarse k-means when its quantizer already holds nlist trained centroids
    t0 = time.perf_counter()
    index.train(Xt)
    t1 = time.perf_counter()
    for _, rows in batches(base, batch)():
        index.add(np.ascontiguousarray(rows, dtype=np.float32))
    return index, t1 - t0, time.perf_counter() - t1


def build(label, kind, M, nbits, centroids, Xt, base, n, args):
    """Train (on the shared sample, with the shared centroids) and add ``base`` (n rows: an array,
    or a chunk function of a streamed set, added a chunk at a time); returns the index and its
    build row."""
    rss0 = reset_peak()
    if kind in FAISS:
        index, t_train, t_add = faiss_ivfpq(centroids, M, nbits, Xt, base, args.batch, fast_scan=kind == "faissfs")
        per_vec = (index.code_size + 8)
        total = faiss.serialize_index(index).nbytes
        precomputed = index.precomputed_table.size() * 4 if kind == "faiss" else 0
    else:
        cls = {"vlq": VLQIndex, "vlqfs": VLQFastScanIndex, "ivfadc": IVFADCIndex}[kind]
        extra = {"n_neighbors": args.n_neighbors} if kind in VLQ_KINDS else {}
        index = cls(centroids.shape[1], centroids.shape[0], M=M, n_bits_per_code=nbits, n_iter=args.n_iter,
                    random_state=args.seed, **extra)
        t0 = time.perf_counter()
        index.train(Xt, centroids=centroids)
        t1 = time.perf_counter()
        rss1 = reset_peak()
        if callable(base):
            for start, rows in base():
                index.add(rows, ids=np.arange(start, start + rows.shape[0]), batch_size=args.batch)
        else:
            index.add(base, batch_size=args.batch, progress=args.progress)
        t_add = time.perf_counter() - t1
        add_peak = peak_rss() - rss1
        t_train = t1 - t0
        mem = index.memory_bytes()
        # the bytes per code the search reads: VLQ-FS reads packed nibbles, lambda and line-term bytes,
        # VLQ its codes and the line terms it holds beside them
        read = index.code_size + mem.get("line_terms", 0) // max(index.ntotal, 1)
        per_vec = (-(-M // 2) + 2 if kind == "vlqfs" else read) + 8
        precomputed = mem.pop("precomputed")
        fastscan_mb = mem.pop("fastscan", 0) / 2**20
        total = sum(mem.values())
    row = {"method": label, "kind": kind, "M": M, "nbits": nbits, "code_bytes": per_vec - 8,
           "bytes_per_vector": per_vec, "index_bytes_per_vector": total / n,
           "precomputed_mb": precomputed / 2**20,
           "train_s_after_kmeans": t_train, "add_s": t_add,
           "peak_mb_during_build": (peak_rss() - rss0) / 2**20}
    if kind not in FAISS:
        row["add_peak_mb"] = add_peak / 2**20
    if kind == "vlqfs":
        row["fastscan_layout_mb"] = fastscan_mb
    return index, row


def search_settings(index, kind, Q, args):
    """``[(setting, run)]``: every setting of the sweep and a function searching all queries with
    it, returning ``(ids, mean codes scanned per query)``."""
    n_nb = args.n_neighbors
    if kind in VLQ_KINDS:
        kprimes = args.fs_kprime if kind == "vlqfs" else [None]
        grid = [(p, w, kp) for p in args.vlq_nprobe for w in args.vlq_w if w <= p * n_nb for kp in kprimes]
    else:
        nlist = index.nlist if kind in FAISS else index.n_centroids
        grid = [(p, None, None) for p in args.nprobe if p <= nlist]
    out = []
    for nprobe, w, kprime in grid:
        if kind in FAISS:
            def run(nprobe=nprobe):
                index.nprobe = nprobe
                faiss.cvar.indexIVF_stats.reset()
                d, i = index.search(Q, args.k)
                return i, faiss.cvar.indexIVF_stats.ndis / len(Q)
        else:
            params = {"nprobe": nprobe, "return_scanned": True}
            params.update({"w": w} if kind in VLQ_KINDS else {})
            params.update({"kprime": kprime} if kprime is not None else {})

            def run(params=params):
                d, i, scanned = index.search(Q, args.k, **params)
                return i, float(scanned.mean())
        out.append(({"nprobe": nprobe, "w": w, "kprime": kprime}, run))
    return out


def search_grid(index, kind, Q, gt, args):
    rows = []
    for setting, run in search_settings(index, kind, Q, args):
        t, (ids, scanned) = timed(run, args.repeats)
        rows.append({**setting, "scanned": scanned, "qps": len(Q) / t, **recalls(ids, gt)})
    return rows


def interleaved_grids(indexes, Q, gt, args):
    """Every setting of every index, ``args.repeats`` rounds, best time kept: ``({label: rows},
    [load average before/after each round])``."""
    runs = {label: search_settings(index, kind, Q, args) for label, (index, kind) in indexes.items()}
    best = {label: [np.inf] * len(r) for label, r in runs.items()}
    found = {label: [None] * len(r) for label, r in runs.items()}
    loads = []
    for _ in range(args.repeats):
        before = os.getloadavg()[0]
        for label, settings in runs.items():
            for j, (_, run) in enumerate(settings):
                t = time.perf_counter()
                out = run()
                best[label][j] = min(best[label][j], time.perf_counter() - t)
                found[label][j] = out
        loads.append((before, os.getloadavg()[0]))
        print(f"round: load {loads[-1][0]:.1f} -> {loads[-1][1]:.1f}", flush=True)
    results = {}
    for label, settings in runs.items():
        results[label] = [{**setting, "scanned": found[label][j][1], "qps": len(Q) / best[label][j],
                           **recalls(found[label][j][0], gt)} for j, (setting, _) in enumerate(settings)]
    return results, loads


def pareto(points, key):
    """Points not beaten on both qps and ``key``, sorted by qps."""
    pts = sorted(points, key=lambda r: (-r["qps"], -r[key]))
    out, best = [], -1.0
    for r in pts:
        if r[key] > best:
            out.append(r)
            best = r[key]
    return sorted(out, key=lambda r: r["qps"])


def equal_speed_table(results, key):
    """For each faiss point, the best recall of VLQ (same or one byte fewer/more group) at >= its qps."""
    lines = []
    pairs = [("VLQ M=7", "faiss IVFPQ M=8"), ("VLQ M=8", "faiss IVFPQ M=8x9b"), ("VLQ M=8", "faiss IVFPQ M=8"),
             ("VLQ M=15", "faiss IVFPQ M=16"), ("VLQ M=11", "faiss IVFPQ M=16"), ("VLQ M=16", "faiss IVFPQ M=16"),
             ("VLQ-FS M=28", "faiss IVFPQfs M=32x4"), ("VLQ-FS M=28", "faiss IVFPQ M=16"),
             ("VLQ-FS M=12", "faiss IVFPQfs M=16x4"), ("VLQ-FS M=12", "faiss IVFPQ M=8")]
    for ours, theirs in pairs:
        if ours not in results or theirs not in results:
            continue
        for f in results[theirs]:
            faster = [r for r in results[ours] if r["qps"] >= f["qps"]]
            if not faster:
                lines.append((ours, theirs, f, None))
                continue
            best = max(faster, key=lambda r: r[key])
            lines.append((ours, theirs, f, best))
    return lines


TARGET_PAIRS = [("VLQ M=15", "faiss IVFPQ M=16"), ("VLQ M=11", "faiss IVFPQ M=16"), ("VLQ-FS M=28", "faiss IVFPQ M=16"),
                ("VLQ-FS M=28", "faiss IVFPQfs M=32x4"), ("VLQ-FS M=12", "faiss IVFPQfs M=16x4")]


def qps_at(rows, key, target):
    """The highest qps among settings reaching ``key`` >= target (None if none does)."""
    fast = [r for r in rows if r[key] >= target]
    return max(fast, key=lambda r: r["qps"]) if fast else None


def target_table(results, key="R@10", targets=(0.5, 0.7, 0.8)):
    """Lines of the issue-12 target table: for each pair and recall target, each side's fastest setting
    reaching it and the ratio of their queries/s."""
    L = [f"| ours | faiss | {key} target | ours setting | ours qps | faiss nprobe | faiss qps | ours / faiss |",
         "|---|---|---|---|---|---|---|---|"]
    for ours, theirs in TARGET_PAIRS:
        if ours not in results or theirs not in results:
            continue
        for target in targets:
            a, b = qps_at(results[ours], key, target), qps_at(results[theirs], key, target)
            sa = "not reached" if a is None else f"({a['nprobe']}, {a['w']}" + (f", k'={a['kprime']}" if a.get("kprime") else "") + f") {a[key]:.3f}"
            sb = "not reached" if b is None else f"{b['nprobe']} ({b[key]:.3f})"
            ratio = f"{a['qps'] / b['qps']:.2f}x" if a is not None and b is not None else "-"
            qa = "" if a is None else f"{a['qps']:.0f}"
            qb = "" if b is None else f"{b['qps']:.0f}"
            L.append(f"| {ours} | {theirs} | {target} | {sa} | {qa} | {sb} | {qb} | {ratio} |")
    return L


def plot(results, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(8, 9), (16, 17)]
    metrics = [m for m in ("R@1", "R@10", "R@100", "10-recall@10") if m in next(iter(results.values()))[0]]
    fig, axes = plt.subplots(len(groups), len(metrics), figsize=(5 * len(metrics), 4.2 * len(groups)), squeeze=False)
    for gi, grp in enumerate(groups):
        for mi, key in enumerate(metrics):
            ax = axes[gi][mi]
            for label, rows in results.items():
                info = rows[0]
                if info["group"] not in grp:
                    continue
                pts = pareto(rows, key) if info["kind"] in VLQ_KINDS else sorted(rows, key=lambda r: r["qps"])
                style = STYLES[info["kind"]]
                ax.plot([r[key] for r in pts], [r["qps"] for r in pts], style, ms=4,
                        label=f"{label} ({info['code_bytes']} B)")
            ax.set_yscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel("queries/s")
            ax.set_title(f"{key}, {grp[0]}-{grp[1]} bytes/vector")
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scanned(results, path, title):
    """R@10 and 10-recall@10 against codes scanned per query: the accuracy side of the trade-off,
    free of how fast either scan kernel is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(8, 9), (16, 17)]
    metrics = ["R@10", "10-recall@10"]
    fig, axes = plt.subplots(len(groups), len(metrics), figsize=(6 * len(metrics), 4.2 * len(groups)), squeeze=False)
    for gi, grp in enumerate(groups):
        for mi, key in enumerate(metrics):
            ax = axes[gi][mi]
            for label, rows in results.items():
                info = rows[0]
                if info["group"] not in grp:
                    continue
                if info["kind"] in VLQ_KINDS:
                    # the best recall reached within each budget of codes scanned
                    pts = sorted(rows, key=lambda r: (r["scanned"], -r[key]))
                    front, best = [], -1.0
                    for r in pts:
                        if r[key] > best:
                            front.append(r)
                            best = r[key]
                    pts = front
                else:
                    pts = sorted(rows, key=lambda r: r["scanned"])
                style = STYLES[info["kind"]]
                ax.plot([r["scanned"] for r in pts], [r[key] for r in pts], style, ms=4,
                        label=f"{label} ({info['code_bytes']} B)")
            ax.set_xscale("log")
            ax.set_xlabel("codes scanned per query")
            ax.set_ylabel(key)
            ax.set_title(f"{key}, {grp[0]}-{grp[1]} bytes/vector")
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(stem, desc, setup, builds, results):
    plot(results, f"{stem}.png", f"{desc}: queries/s against recall (VLQ: Pareto front over nprobe, w)")
    plot_scanned(results, f"{stem}_scanned.png", f"{desc}: recall against codes scanned per query")
    markdown(desc, setup, builds, results, f"{stem}.md")


def fmt_w(w):
    return "-" if w is None else str(w)


def markdown(desc, setup, builds, results, path):
    L = [f"# VLQIndex vs faiss IndexIVFPQ vs IVFADCIndex\n", f"Data: {desc}.\n", setup + "\n",
         "## Build\n",
         "bytes/vector: stored code + int64 id. Index bytes/vector: everything the index file holds (lists, "
         "centroids, codebooks, VLQ neighbour table and lambda codebook) over N. Precomputed: tables derived "
         "at train/load time (P[c, m, j] = ||r_mj||² + 2<c_m, r_mj>, as faiss's precomputed table). Add peak: "
         "resident-memory peak during add beyond what the process held before it (the data is already in memory).\n",
         "| method | code bytes | bytes/vector (code + id) | index bytes/vector | precomputed MB | train s (after shared k-means) | add s | add peak MB |",
         "|---|---|---|---|---|---|---|---|"]
    for b in builds:
        L.append(f"| {b['method']} | {b['code_bytes']} | {b['bytes_per_vector']} | {b['index_bytes_per_vector']:.2f} | "
                 f"{b['precomputed_mb']:.1f} | "
                 f"{b['train_s_after_kmeans']:.1f} | {b['add_s']:.1f} | {b.get('add_peak_mb', float('nan')):.0f} |")
    for key in ("R@10", "10-recall@10"):
        L += [f"\n## {key} at equal or higher speed\n",
              "For each faiss point, the VLQ setting with the best " + key + " among those at least as fast.\n",
              "| VLQ | faiss | faiss nprobe | faiss qps | faiss " + key + " | VLQ (nprobe, w) | VLQ qps | VLQ " + key + " | difference |",
              "|---|---|---|---|---|---|---|---|---|"]
        for ours, theirs, f, best in equal_speed_table(results, key):
            if best is None:
                L.append(f"| {ours} | {theirs} | {f['nprobe']} | {f['qps']:.0f} | {f[key]:.3f} | none this fast | | | |")
            else:
                L.append(f"| {ours} | {theirs} | {f['nprobe']} | {f['qps']:.0f} | {f[key]:.3f} | "
                         f"({best['nprobe']}, {best['w']}) | {best['qps']:.0f} | {best[key]:.3f} | {best[key] - f[key]:+.3f} |")
    for key in ("R@1", "R@10"):
        L += [f"\n## queries/s at {key} targets\n",
              "Each side's fastest setting reaching the target; ratio of queries/s (issue 12's target: >= 1.0).\n"]
        L += target_table(results, key, (0.3, 0.33) if key == "R@1" else (0.5, 0.7, 0.8))
    L += ["\n## Every setting\n",
          "| method | code bytes | nprobe | w | kprime | codes scanned/query | qps | R@1 | R@10 | R@100 | 10-recall@10 |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, rows in results.items():
        for r in rows:
            L.append(f"| {label} | {r['code_bytes']} | {r['nprobe']} | {fmt_w(r['w'])} | {fmt_w(r.get('kprime'))} | "
                     f"{r['scanned']:.0f} | {r['qps']:.0f} | "
                     f"{r['R@1']:.3f} | {r['R@10']:.3f} | {r.get('R@100', float('nan')):.3f} | {r['10-recall@10']:.3f} |")
    Path(path).write_text("\n".join(L) + "\n")


def run_curves(args):
    name, desc, base, Q, gt = load_data(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_centroids = args.n_centroids or (1024 if base.shape[0] >= 500_000 else 64)
    rng = np.random.default_rng(args.seed)
    Xt = np.ascontiguousarray(subsample(base, args.max_train, rng), dtype=np.float32)
    cached = Path(args.centroids_cache) if args.centroids_cache else None
    if cached is not None and cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            centroids, t_kmeans = z["centroids"], float(z["seconds"])
        if centroids.shape != (n_centroids, base.shape[1]):
            raise SystemExit(f"{cached} holds centroids of shape {centroids.shape}, not ({n_centroids}, {base.shape[1]})")
    else:
        t = time.perf_counter()
        centroids = kmeans(Xt, n_centroids, n_iter=args.n_iter, seed=args.seed)
        t_kmeans = time.perf_counter() - t
        if cached is not None:
            np.savez(cached, centroids=centroids, seconds=t_kmeans)
    setup = (f"First level: one faiss k-means, {n_centroids} centroids, {args.n_iter} iterations on {Xt.shape[0]:,} "
             f"sampled vectors ({t_kmeans:.1f} s), shared by every index (faiss's quantizer is pre-filled with it). "
             f"Residual PQ and the VLQ lambda codebook: {args.n_iter} k-means iterations on the same sample. "
             f"VLQ: n_neighbors={args.n_neighbors}. k={args.k}; {len(Q)} queries searched in one batch; "
             f"timings best of {args.repeats}; faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads, "
             f"numba with the same cores; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} for both; "
             f"load average {os.getloadavg()[0]:.1f}"
             + (f"; k-means centroids cached in {cached}" if cached is not None else "")
             + (f"; searches interleaved over all indexes, {args.repeats} rounds" if args.interleave else "") + ".")
    print(setup, flush=True)
    builds, results, indexes = [], {}, {}
    wanted = [c for c in CONFIGS if c[0] in args.methods] if args.methods else CONFIGS
    for label, kind, M, nbits, group in wanted:
        index, row = build(label, kind, M, nbits, centroids, Xt, base, base.shape[0], args)
        row["group"] = group
        builds.append(row)
        print(json.dumps(row), flush=True)
        if args.interleave:
            indexes[label] = (index, kind)
            continue
        results[label] = search_grid(index, kind, Q, gt, args)
        del index
    if args.interleave:
        results, loads = interleaved_grids(indexes, Q, gt, args)
        setup += " Load average before/after each round: " + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in loads) + "."
        del indexes
    for (label, kind, M, nbits, group), row in zip(wanted, builds):
        for r in results[label]:
            r.update({"method": label, "kind": kind, "group": group, "code_bytes": row["code_bytes"]})
            print(json.dumps(r), flush=True)
    stem = out / f"vlq_{name}"
    Path(f"{stem}.json").write_text(json.dumps({"data": desc, "setup": setup, "kmeans_s": t_kmeans,
                                                 "builds": builds, "results": results}, indent=1))
    write_reports(stem, desc, setup, builds, results)
    print(f"wrote {stem}.json, .md, .png, _scanned.png")


def run_scaling(args):
    """Build and search cost against N on synthetic data streamed in chunks of 2**18 rows (never
    held whole: generated again for each pass), exact ground truth by a chunked brute force."""
    from harness import describe_threads

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(json.dumps({"threads": describe_threads(), "load_before": os.getloadavg()[0]}), flush=True)
    for n in args.scaling:
        chunks = synthetic_stream(n, seed=args.seed, stream=1)
        Q = materialize(synthetic_stream(args.nq, seed=args.seed, stream=2), args.nq)
        t = time.perf_counter()
        gt, Xt = streamed_truth_and_sample(chunks, n, Q, 100, args.max_train, np.random.default_rng(args.seed))
        t_gt = time.perf_counter() - t
        print(json.dumps({"n": n, "gt_and_sample_s": t_gt, "load": os.getloadavg()[0]}), flush=True)
        n_centroids = args.n_centroids or 1024
        t = time.perf_counter()
        centroids = kmeans(Xt, n_centroids, n_iter=args.n_iter, seed=args.seed)
        t_km = time.perf_counter() - t
        for label, kind, M, nbits, _ in [c for c in CONFIGS if c[0] in ("VLQ M=8", "faiss IVFPQ M=8")]:
            index, b = build(label, kind, M, nbits, centroids, Xt, chunks, n, args)
            settings = [(8, 128), (16, 256), (32, 512)] if kind == "vlq" else [(8, None), (16, None), (32, None)]
            for nprobe, w in settings:
                if kind == "faiss":
                    index.nprobe = nprobe
                    t, (_, ids) = timed(lambda: index.search(Q, args.k), args.repeats)
                else:
                    t, (_, ids) = timed(lambda: index.search(Q, args.k, nprobe=nprobe, w=w), args.repeats)
                row = {"n": n, "method": label, "n_centroids": n_centroids, "kmeans_s": t_km, "gt_s": t_gt,
                       "train_s_after_kmeans": b["train_s_after_kmeans"], "add_s": b["add_s"],
                       "add_peak_mb": b.get("add_peak_mb"), "nprobe": nprobe, "w": w, "qps": len(Q) / t,
                       "load": os.getloadavg()[0], **recalls(ids, gt)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            del index
        write_scaling(rows, out)  # after every N, so a stopped run keeps what it measured
    print(scaling_table(rows))


def scaling_table(rows) -> str:
    L = ["| N | method | k-means s | train s (after k-means) | add s | add peak MB | nprobe | w | qps | R@1 | R@10 | R@100 | 10-recall@10 | load |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["n"]):
        peak = "-" if r["add_peak_mb"] is None else f"{r['add_peak_mb']:.0f}"
        L.append(f"| {r['n']:,} | {r['method']} | {r['kmeans_s']:.1f} | {r['train_s_after_kmeans']:.1f} | {r['add_s']:.1f} | {peak} | "
                 f"{r['nprobe']} | {fmt_w(r['w'])} | {r['qps']:.0f} | {r['R@1']:.3f} | {r['R@10']:.3f} | {r['R@100']:.3f} | "
                 f"{r['10-recall@10']:.3f} | {r['load']:.1f} |")
    return "\n".join(L)


def write_scaling(rows, out: Path) -> None:
    (out / "vlq_scaling.json").write_text(json.dumps(rows, indent=1))
    (out / "vlq_scaling.md").write_text("Synthetic clustered data (not real vectors).\n\n" + scaling_table(rows) + "\n")


def ints(text):
    return [int(v) for v in text.split(",") if v]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="auto", choices=["auto", "sift1m-cifar", "sift10k", "synthetic"])
    p.add_argument("--n", type=int, default=1_000_000, help="synthetic base size")
    p.add_argument("--nq", type=int, default=1000, help="synthetic queries")
    p.add_argument("--n-centroids", type=int, default=None, help="default 1024 for N >= 500k, else 64")
    p.add_argument("--n-neighbors", type=int, default=64)
    p.add_argument("--max-train", type=int, default=262_144)
    p.add_argument("--n-iter", type=int, default=20)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--batch", type=int, default=65536)
    p.add_argument("--nprobe", type=ints, default=ints("1,2,4,8,16,32,64,128"))
    p.add_argument("--vlq-nprobe", type=ints, default=ints("2,4,8,16,32"))
    p.add_argument("--vlq-w", type=ints, default=ints("16,32,64,128,256,512,1024"))
    p.add_argument("--methods", type=lambda s: [m.strip() for m in s.split(";") if m.strip()], default=None,
                   help="';'-separated labels to run (default: all)")
    p.add_argument("--scaling", type=ints, default=None, help="synthetic sizes for the scaling run, e.g. 1000000,3000000")
    p.add_argument("--fs-kprime", type=lambda s: [None if v == "default" else int(v) for v in s.split(",")],
                   default=[None], help="VLQ-FS shortlist lengths to sweep ('default' = max(4k, 40))")
    p.add_argument("--interleave", action="store_true", help="build every index, then search in interleaved rounds")
    p.add_argument("--centroids-cache", default=None, help="npz file: read the shared k-means centroids from it, "
                                                            "or write them there after computing")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--from-json", default=None, help="only redraw the tables and plots of a saved run")
    global ARGS
    ARGS = args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        write_reports(str(Path(args.from_json).with_suffix("")), saved["data"], saved["setup"], saved["builds"],
                      saved["results"])
    elif args.scaling:
        run_scaling(args)
    else:
        run_curves(args)


if __name__ == "__main__":
    main()
