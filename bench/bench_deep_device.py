"""Fit the deep coders with their default settings on a torch device and evaluate them.

Shows that the ``device`` path works end to end and gives the full-schedule figures that the 2-core
CPU machines cannot afford in a session (UH-BDNN/SH-BDNN/DH/SDH with 20 outer iterations, GSL).

    python bench/bench_deep_device.py --device cuda [--bits 32] [--runs uh-bdnn:mnist-unsup,sh-bdnn:mnist-sup]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from deepcodes.pipeline import evaluate_coder, fit_method

DEFAULT_RUNS = ("sh-bdnn:mnist-sup,uh-bdnn:mnist-unsup,sdh:mnist-sup,dh:mnist-unsup,itq:mnist-unsup,"
                "gsl:mnist-sup")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated method:protocol pairs")
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    rows = []
    for pair in args.runs.split(","):
        method, protocol = pair.split(":")
        options = {} if method in ("itq", "lsh", "pq", "opq", "rq") else {"device": args.device}
        start = time.perf_counter()
        coder = fit_method(method, args.bits, protocol, random_state=args.seed, **options)
        fit_s = time.perf_counter() - start
        result = evaluate_coder(coder, protocol)
        rows.append({"method": method, "protocol": protocol, "bits": args.bits, "device": device_name,
                     "fit_seconds": round(fit_s, 1), "map": round(result["map"], 4),
                     "precision_at_100": round(result["precision_at_k"]["100"], 4)})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| method | protocol | bits | device | fit s | mAP | P@100 |\n| --- | --- | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['method']} | {r['protocol']} | {r['bits']} | {r['device']} | {r['fit_seconds']} | "
              f"{r['map']:.4f} | {r['precision_at_100']:.4f} |")


if __name__ == "__main__":
    main()
