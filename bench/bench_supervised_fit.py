"""Fit time of the supervised deep coders (DSH, DNNH, SuBiC; GSL-PQ too) on the 60,000 MNIST
training images with the MLP, with the settings of ``deepcodes reproduce supervised``, and their
test mAP.

The issue's target: each fits in under 10 minutes on 2 CPU cores. The machine is shared, so the
wall time depends on the load: the bench prints the 1-minute load average before and after each
fit, and the process's CPU time (user + system), which the load inflates far less.

    python bench/bench_supervised_fit.py [--methods dsh,dnnh,subic] [--bits 32] [--threads 2]
                                         [--out bench/results/supervised_fit.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

from deepcodes.data import load_protocol
from deepcodes.pipeline import evaluate_coder, fit_method
from deepcodes.reproduce.supervised import method_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dsh,dnnh,subic")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--protocol", default="mnist-sup")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/supervised_fit.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    protocol = load_protocol(args.protocol)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for method in args.methods.split(","):
        options = method_options(method, args.protocol, quick=False, device="cpu")
        load_before = os.getloadavg()[0]
        cpu = time.process_time()
        start = time.perf_counter()
        coder = fit_method(method, args.bits, protocol, random_state=0, **options)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        row = {"method": method, "bits": args.bits, "protocol": args.protocol, "n_train": len(protocol.train),
               "options": options, "torch_threads": torch.get_num_threads(), "fit_seconds": round(wall, 1),
               "fit_cpu_seconds": round(cpu, 1), "load_average_before": load_before,
               "load_average_after": os.getloadavg()[0], "best_epoch": coder.best_epoch_,
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "test_map": round(evaluate_coder(coder, protocol)["map"], 4)}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
