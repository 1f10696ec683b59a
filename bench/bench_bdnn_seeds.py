"""The unsupervised BDNN comparison on chosen protocols, lengths and seeds: mean ± std of the mAP,
fit time and peak memory per (protocol, method, bits).

``deepcodes reproduce bdnn`` runs every protocol (supervised ones too) at 16/32/64 bits; on the
shared 2-core machine its three seeds take hours. This script runs the part that fits the time at
hand, with the same fitting and evaluation (``fit_method``, ``evaluate_coder``), one run at a time,
and keeps each run's result in ``--out/runs`` so that an interrupted run resumes.

    python bench/bench_bdnn_seeds.py --protocol sift10k --protocol cifar10-unsup --bits 32 \\
        [--method uh-bdnn --method dh --method itq --method lsh] [--seeds 3] [--threads 1] \\
        [--option 'dh:n_outer=20'] [--out bench/results/bdnn_seeds]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from deepcodes.eval import markdown_table
from deepcodes.pipeline import evaluate_coder, fit_method
from deepcodes.reproduce.bdnn import PeakMemory


def run_one(method: str, bits: int, protocol: str, seed: int, options: dict, runs: Path) -> dict:
    """Fit and evaluate once; the result is read back from ``runs`` when already measured."""
    tag = "".join(f"_{k}{v}" for k, v in sorted(options.items()))
    path = runs / f"{protocol}_{method}_{bits}_s{seed}{tag}.json"
    if path.is_file():
        return json.loads(path.read_text())
    load_before = os.getloadavg()[0]
    with PeakMemory() as peak:
        coder = fit_method(method, bits, protocol, random_state=seed, **options)
    result = evaluate_coder(coder, protocol)
    history = getattr(coder, "history_", None)
    row = {"protocol": protocol, "method": method, "bits": bits, "seed": seed, "options": options,
           "map": result["map"], "fit_seconds": coder.meta_["fit_seconds"], "fit_peak_mb": peak.mb,
           "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
           "best_iteration": getattr(coder, "best_iteration_", None),
           "history": history}
    path.write_text(json.dumps(row) + "\n")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", action="append", required=True)
    parser.add_argument("--bits", type=int, action="append", required=True)
    parser.add_argument("--method", action="append", help="default: uh-bdnn, dh, itq, lsh")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--option", action="append", default=[], help="method:key=value (JSON value)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bdnn_seeds"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    methods = args.method or ["uh-bdnn", "dh", "itq", "lsh"]
    options = {m: {} for m in methods}
    for text in args.option:
        method, setting = text.split(":", 1)
        key, value = setting.split("=", 1)
        options[method][key] = json.loads(value)
    runs = args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    rows = []
    # Seeds outermost: a partial run already holds complete tables for its first seeds.
    for seed in range(args.seeds):
        for protocol in args.protocol:
            for bits in args.bits:
                for method in methods:
                    row = run_one(method, bits, protocol, seed, options[method], runs)
                    logging.warning("%s %s %d bits seed %d: mAP %.4f, fit %.1f s", protocol, method, bits, seed,
                                    row["map"], row["fit_seconds"])
                    rows.append(row)
    table = []
    for protocol in args.protocol:
        for method in methods:
            entry = {"protocol": protocol, "method": method}
            for bits in args.bits:
                group = [r for r in rows if (r["protocol"], r["method"], r["bits"]) == (protocol, method, bits)]
                maps = np.array([r["map"] for r in group])
                fits = np.array([r["fit_seconds"] for r in group])
                peaks = [r["fit_peak_mb"] for r in group if r["fit_peak_mb"] is not None]
                entry[f"{bits} bits"] = f"{maps.mean():.4f} ± {maps.std():.4f}"
                entry[f"fit s ({bits})"] = f"{fits.mean():.1f} ± {fits.std():.1f}"
                entry[f"peak MB ({bits})"] = f"{max(peaks):.0f}" if peaks else ""
            table.append(entry)
    columns = (["protocol", "method"] + [f"{b} bits" for b in args.bits] + [f"fit s ({b})" for b in args.bits]
               + [f"peak MB ({b})" for b in args.bits])
    text = (f"{args.seeds} seeds (0..{args.seeds - 1}), mean ± std (ddof 0); torch threads {args.threads}; "
            f"options {json.dumps({m: o for m, o in options.items() if o})}\n\n" + markdown_table(table, columns))
    print(text)
    (args.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
