"""Fit time and peak memory of the deep coders on a protocol's full training set, and their test mAP.

The issue's target: UH-BDNN at 32 bits on the 60,000 MNIST training images in under 5 minutes on
2 CPU cores with peak memory under 4 GB. Peak memory is the process's maximum resident set size
(``resource.getrusage``), which includes the loaded protocol (the 60,000 x 784 float32 images,
188 MB) and the Python/torch runtime.

    python bench/bench_bdnn.py [--method uh-bdnn] [--bits 32] [--protocol mnist-unsup] [--seed 0]
                               [--option n_outer=20] [--option 'schedule="paper"'] [--threads 1]
                               [--device cpu] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

import torch

from deepcodes.data import load_protocol
from deepcodes.pipeline import evaluate_coder, fit_method


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="uh-bdnn")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--protocol", default="mnist-unsup")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--option", action="append", default=[], help="coder parameter key=value (JSON value)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quiet", action="store_true", help="no per-iteration log")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    protocol = load_protocol(args.protocol)
    load_before = os.getloadavg()
    rss_data = peak_rss_mb()
    start = time.perf_counter()
    coder = fit_method(args.method, args.bits, protocol, random_state=args.seed, device=args.device,
                       verbose=not args.quiet, **options)
    fit_seconds = time.perf_counter() - start
    rss_fit = peak_rss_mb()
    result = evaluate_coder(coder, protocol)
    row = {
        "method": args.method, "bits": args.bits, "protocol": args.protocol, "seed": args.seed,
        "options": options, "device": args.device, "torch_threads": torch.get_num_threads(),
        "n_train": int(protocol.train.shape[0]), "fit_seconds": round(fit_seconds, 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "peak_rss_mb_after_loading": round(rss_data, 1), "peak_rss_mb_after_fit": round(rss_fit, 1),
        "best_iteration": int(coder.best_iteration_), "objective": coder.objective_.round(6).tolist(),
        "validation_map": coder.validation_map_.round(4).tolist(), "test_map": round(result["map"], 4),
        "history": coder.history_,
    }
    print(json.dumps({k: v for k, v in row.items() if k != "history"}, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "".join(f"_{k}{v}" for k, v in sorted(options.items()))
    name = f"bdnn_{args.method}_{args.bits}_{args.protocol}_s{args.seed}{tag}.json"
    (args.out / name).write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
