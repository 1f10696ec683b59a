"""Explore GSL configurations beyond the reproduction's on the validation split (never the queries).

Every configuration is one more variant of ``deepcodes.reproduce.gsl.Study`` (seed 0, the shared
warm-up of the reproduction's schedule, cached in the same ``runs`` folder, so a configuration the
reproduction already ran is read back); ``scratch`` configurations instead train the whole
schedule (warm-up + fine epochs) with quantization awareness from the second epoch. One JSON line
per configuration goes to stdout and to ``--out``; ``docs/gsl.md`` records every result.

    python bench/explore_gsl.py --protocol mnist-sup --family classification --bits 32 \\
        --runs reproduce-gsl/runs --out explore.jsonl [--only NAME ...]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from deepcodes.data import load_protocol
from deepcodes.reproduce import gsl as rep

GSL = dict(quantization="gsl", n_neighbors=16, snap="direction")
CONFIGS = {
    "gsl K4": {**GSL, "n_neighbors": 4},
    "gsl K64": {**GSL, "n_neighbors": 64},
    "gsl K256": {**GSL, "n_neighbors": 256},
    "gsl landing": {**GSL, "snap": "landing"},
    "gsl + qloss λ/3": {**GSL, "quant_weight": 1 / 3},
    "post-hoc long": dict(quantization="none", fine_factor=3),
    "quant-loss long": dict(quantization="loss", fine_factor=3),
    "gsl long": {**GSL, "fine_factor": 3},
    "quant-loss scratch": dict(quantization="loss", scratch=True),
    "gsl scratch": {**GSL, "scratch": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="mnist-sup")
    ap.add_argument("--family", default="classification", choices=list(rep.FAMILIES))
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--runs", type=Path, default=Path("reproduce-gsl/runs"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    protocol = load_protocol(args.protocol)
    schedule = rep.SCHEDULES[args.protocol]
    args.runs.mkdir(parents=True, exist_ok=True)
    study = rep.Study(protocol, schedule, args.family, args.device, args.runs, progress=False)
    tuning = study.tune()                 # λ and α of the reproduction (read back when it ran)
    for name in args.only or CONFIGS:
        cfg = dict(CONFIGS[name])
        factor, scratch = cfg.pop("fine_factor", 1), cfg.pop("scratch", False)
        if cfg["quantization"] == "gsl":
            cfg["alpha"] = tuning["alpha"]
        if "quant_weight" in cfg:
            cfg["quant_weight"] *= tuning["lambda"]
        elif cfg["quantization"] == "loss":
            cfg["quant_weight"] = tuning["lambda"]
        t = time.perf_counter()
        if scratch:
            model = study.model(args.bits, 2000, epochs=schedule.warm + schedule.fine, lr=schedule.warm_lr,
                                quant_start=1, **cfg).fit(study.X, study.y)
            row = {"validation_map": model.validation_score_, "best_epoch": model.best_epoch_}
        else:
            study.schedule = rep.Schedule(**{**schedule.__dict__, "fine": schedule.fine * factor})
            row = study.variant(name.replace(" ", "-"), args.bits, 0, **cfg)
            study.schedule = schedule
        row = {"protocol": args.protocol, "family": args.family, "bits": args.bits, "config": name,
               "settings": cfg, "fine_factor": factor, "scratch": scratch,
               "validation_map": round(row["validation_map"], 4), "best_epoch": row["best_epoch"],
               "seconds": round(time.perf_counter() - t, 1)}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
