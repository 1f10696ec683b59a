"""Peak memory of the streaming add: ``deepcodes add`` of the 1.23M-vector SIFT1M-CIFAR base to a
trained VLQ index (``VLQ1024x64,PQ15``).

The index is trained first (``--max-train`` rows, seeded) and saved empty; then
:func:`deepcodes.indexing.add_file`, the code of ``deepcodes add INDEX --base base.bvecs``, reads
the memory-mapped base in batches, encodes and appends them, and rewrites the index file. A thread
samples ``/proc/self/status`` every 5 ms during the add:

* ``RssAnon``: private memory (arrays, batches, the growing index): what the add itself costs;
* ``VmHWM``: the kernel's peak of the whole resident set (reset before the add), which also counts
  the pages of the memory-mapped base the add has touched (file-backed, reclaimable page cache:
  up to the file's 163 MB for this uint8 base, never a copy).

Both are reported against the sizes that would be held by a non-streaming add (the base as
float32: 631 MB). Run single-threaded:

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python bench/bench_stream_add.py [--batch 65536] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from deepcodes import index_factory
from deepcodes.data.sift_cifar import default_dir, load_sift_cifar
from deepcodes.data.vectors import open_vectors
from deepcodes.indexing import add_file

MB = 2 ** 20


def status_kb(*fields: str) -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name = line.split(":", 1)[0]
            if name in fields:
                out[name] = int(line.split()[1]) * 1024
    return out


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class Sampler(threading.Thread):
    """Polls RssAnon and VmRSS every ``interval`` seconds; keeps the maxima."""

    def __init__(self, interval: float = 0.005):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_anon = self.peak_rss = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            s = status_kb("RssAnon", "VmRSS")
            self.peak_anon = max(self.peak_anon, s["RssAnon"])
            self.peak_rss = max(self.peak_rss, s["VmRSS"])
            time.sleep(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="VLQ1024x64,PQ15")
    parser.add_argument("--max-train", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=65_536)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()

    load_sift_cifar()  # builds the set (minutes) if it is not cached yet
    base_path = default_dir() / "base.bvecs"
    with open_vectors(base_path) as base:
        n, d = base.shape
        t0 = time.perf_counter()
        index = index_factory(d, args.spec)
        X, rows = base.sample(args.max_train, random_state=args.seed)
        index.train(X)
        train_s = time.perf_counter() - t0
        del X
    work = Path(tempfile.mkdtemp(prefix="stream-add-"))
    path = work / "vlq.idx"
    index.meta_ = {"trained_on": {"file": str(base_path), "n_train": int(len(rows)), "n_available": n,
                                  "max_train": args.max_train, "seed": args.seed, "labels": None},
                   "sources": [], "removed": 0}
    index.save(path, meta=index.meta_)
    del index

    before = status_kb("RssAnon", "VmRSS")
    load_before = os.getloadavg()
    reset_peak()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    info = add_file(path, base_path, batch_size=args.batch)
    add_s = time.perf_counter() - t0
    sampler.stop()
    hwm = status_kb("VmHWM")["VmHWM"]
    result = {
        "spec": args.spec, "n_base": n, "d": d, "batch": args.batch, "max_train": args.max_train,
        "train_seconds": round(train_s, 1), "add_seconds": round(add_s, 1), "ntotal": info["ntotal"],
        "rss_before_add_mb": round(before["VmRSS"] / MB, 1), "anon_before_add_mb": round(before["RssAnon"] / MB, 1),
        "peak_anon_during_add_mb": round(sampler.peak_anon / MB, 1),
        "anon_growth_during_add_mb": round((sampler.peak_anon - before["RssAnon"]) / MB, 1),
        "peak_rss_during_add_mb (VmHWM, incl. mapped base pages)": round(hwm / MB, 1),
        "base_file_mb": round(base_path.stat().st_size / MB, 1),
        "base_as_float32_mb": round(n * d * 4 / MB, 1),
        "index_file_mb": round(path.stat().st_size / MB, 1),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")},
    }
    path.unlink()
    work.rmdir()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"stream_add_b{args.batch}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
