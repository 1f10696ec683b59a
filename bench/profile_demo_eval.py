"""Where one demo coder's time goes: its fit, then its evaluation on both MNIST protocols (full
ranking of 60,000 items for 1,000 queries), with the functions that took the most time.

    python bench/profile_demo_eval.py itq,pq [--bits 32]

Runs on whichever deepcodes is first on PYTHONPATH: a tree without ``evaluate_coder_on`` (before
issue 12) is evaluated one protocol at a time, as its demo did, so the same command profiles the
code before and after a change (``git archive <commit> src | tar -x -C /tmp/old`` and
``PYTHONPATH=/tmp/old/src``). Prints wall and CPU seconds, the load average and the mAPs (which
must not change). The first evaluation of each coder compiles the kernels and is not profiled.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

# numba's threads are OpenMP threads here: one stated wait policy, as in the other benches
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from deepcodes import pipeline  # noqa: E402
from deepcodes.data import load_protocol  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("methods", type=lambda v: [m for m in v.split(",") if m])
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--top", type=int, default=12, help="functions listed, by own time")
    args = parser.parse_args()
    print(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}", flush=True)
    protocols = [load_protocol(n) for n in ("mnist-unsup", "mnist-sup")]
    protocols[0].ground_truth()  # the cached ground truth's check is paid once per run, not per coder
    for method in args.methods:
        t = time.perf_counter()
        coder = pipeline.fit_method(method, args.bits, protocols[0], random_state=0)
        print(f"{method}-{args.bits} fit: {time.perf_counter() - t:.2f} s wall", flush=True)
        if hasattr(pipeline, "evaluate_coder_on"):
            run = lambda: pipeline.evaluate_coder_on(coder, protocols)  # noqa: E731
        else:
            run = lambda: [pipeline.evaluate_coder(coder, p) for p in protocols]  # noqa: E731
        run()
        profile = cProfile.Profile()
        load, c, t = os.getloadavg()[0], time.process_time(), time.perf_counter()
        profile.enable()
        results = run()
        profile.disable()
        print(f"{method}-{args.bits} evaluation on both protocols: {time.perf_counter() - t:.2f} s wall, "
              f"{time.process_time() - c:.2f} s CPU, load {load:.1f} -> {os.getloadavg()[0]:.1f}, "
              f"mAP {[r['map'] for r in results]}", flush=True)
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
