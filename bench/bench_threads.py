"""What one BLAS thread saves the fits with small matrix products: ITQ's rotation steps.

An ITQ fit (PCA to b dimensions, then 50 iterations of a b x b Procrustes rotation) on the 10,000
SIFT10K base vectors at b = 48 bits, as the library runs it (its rotation on one BLAS thread,
``deepcodes.threads.single_blas``) against the same fit with the rotation left on every BLAS thread
(``--threads``), taking turns, best and median of ``--repeats``, in one process per OpenMP wait
policy (``bench/harness.py``: the same threads and ``OMP_WAIT_POLICY`` for both, PASSIVE by
default), with the load average. Both fits give the same codes (checked).

    python bench/bench_threads.py --threads 2 --wait-policy PASSIVE,ACTIVE --repeats 7
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from harness import Harness, load_note, publish  # noqa: E402


def fit_times(X: np.ndarray, n_bits: int, repeats: int, h: Harness) -> dict:
    import deepcodes.coders.itq as itq_module
    from deepcodes.coders import ITQ

    library_way = itq_module.single_blas

    def fit(single: bool):
        itq_module.single_blas = library_way if single else contextlib.nullcontext
        try:
            return ITQ(n_bits=n_bits, random_state=0).fit(X)
        finally:
            itq_module.single_blas = library_way

    times = {"one BLAS thread (the library)": [], f"{h.threads} BLAS threads": []}
    codes = {}
    before = os.getloadavg()[0]
    for _ in range(repeats):
        for name, single in zip(times, (True, False)):
            start = time.perf_counter()
            coder = fit(single)
            times[name].append(time.perf_counter() - start)
            codes[name] = coder.encode(X[:2000])
    same = len({c.tobytes() for c in codes.values()}) == 1
    h.loads.append((before, os.getloadavg()[0]))
    return {name: {"best": min(t), "median": statistics.median(t), "same_codes": same} for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    Harness.add_arguments(parser)
    parser.add_argument("--bits", type=int, default=48)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.set_defaults(wait_policy="PASSIVE")
    args = parser.parse_args()
    h = Harness.from_args(args)
    if h.is_parent:
        reports = h.run_children(__file__, sys.argv[1:])
        lines = [f"ITQ fit, SIFT10K base (10,000 x 128), {args.bits} bits; {load_note(reports)}", "",
                 "| policy | rotation on | best s | median s | median / library's | same codes |",
                 "| --- | --- | ---: | ---: | ---: | --- |"]
        for r in reports:
            rows = r["rows"]
            ref = rows[0]["median"]
            for row in rows:
                lines.append(f"| {r['policy']} | {row['name']} | {row['best']:.3f} | {row['median']:.3f} | "
                             f"{row['median'] / ref:.2f}x | {row['same_codes']} |")
        publish(args.out, "threads_itq", reports, "\n".join(lines) + "\n")
        return
    from deepcodes.data.datasets import load_sift10k

    base = load_sift10k()[0].astype(np.float32)
    results = fit_times(base, args.bits, h.repeats, h)
    h.finish([{"name": name, **v} for name, v in results.items()])


if __name__ == "__main__":
    main()
