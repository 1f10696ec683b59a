"""Explore GSL configurations against its baselines on the validation split (never the queries).

Each configuration trains from the shared warm-up network of the reproduction's schedule (or from
scratch with ``scratch``) and reports validation mAP at the given code length; one JSON line per
configuration is appended to ``--out``. The list of configurations is below; ``docs/gsl.md``
records every result.

    python bench/explore_gsl.py --protocol cifar10-sup --bits 32 --out explore.jsonl [--only NAME ...]
"""
from __future__ import annotations

import argparse
import json
import time

from deepcodes.data import load_protocol
from deepcodes.reproduce import gsl as rep

GSL = dict(quantization="gsl", alpha=0.5, n_neighbors=16, snap="direction")
CONFIGS = {
    "post-hoc": dict(quantization="none"),
    "qloss 0.01": dict(quantization="loss", quant_weight=0.01),
    "qloss 0.1": dict(quantization="loss", quant_weight=0.1),
    "qloss 1": dict(quantization="loss", quant_weight=1.0),
    "gsl a0.5 K16": GSL,
    "gsl a1 K16": {**GSL, "alpha": 1.0},
    "gsl a0.25 K16": {**GSL, "alpha": 0.25},
    "gsl a1 K256": {**GSL, "alpha": 1.0, "n_neighbors": 256},
    "gsl landing a1": {**GSL, "alpha": 1.0, "snap": "landing"},
    "gsl landing a0.5": {**GSL, "snap": "landing"},
    "gsl a1 + qloss 0.01": {**GSL, "alpha": 1.0, "quant_weight": 0.01},
    "gsl a1 + qloss 0.1": {**GSL, "alpha": 1.0, "quant_weight": 0.1},
    "gsl a1 + qloss 1": {**GSL, "alpha": 1.0, "quant_weight": 1.0},
    "gsl a1 long": {**GSL, "alpha": 1.0, "fine_factor": 3},
    "qloss 0.1 long": dict(quantization="loss", quant_weight=0.1, fine_factor=3),
    "post-hoc long": dict(quantization="none", fine_factor=3),
    "gsl a1 scratch": {**GSL, "alpha": 1.0, "scratch": True},
    "qloss 0.1 scratch": dict(quantization="loss", quant_weight=0.1, scratch=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="cifar10-sup")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--loss", default="classification")
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--quantizer", default="pq")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    protocol = load_protocol(args.protocol)
    schedule = rep.SCHEDULES[args.protocol]
    split = rep.validation_split(protocol, schedule)
    extra = dict(loss=args.loss, margin=args.margin, quantizer=args.quantizer)
    warm = rep._model(args.bits, 1000, quantization="none", epochs=schedule["warm"], **extra).fit(split["X"], split["y"])
    for name in args.only or CONFIGS:
        cfg = dict(CONFIGS[name])
        fine = schedule["fine"] * cfg.pop("fine_factor", 1)
        scratch = cfg.pop("scratch", False)
        t = time.perf_counter()
        if scratch:
            # quantization-aware from the second epoch on (a codebook of the untrained network means nothing)
            model = rep._model(args.bits, 2000, epochs=schedule["warm"] + fine,
                               quant_start=1 if cfg["quantization"] != "none" else 0, **extra, **cfg)
        else:
            model = rep._model(args.bits, 2000, epochs=fine, init=warm, **extra, **cfg)
        model.fit(split["X"], split["y"])
        row = {"protocol": args.protocol, "bits": args.bits, "loss": args.loss, "quantizer": args.quantizer,
               "config": name, "settings": cfg, "fine_epochs": fine, "scratch": scratch,
               "validation_map": round(rep.validation_map(model, split), 4),
               "quantization_error": round(model.quantizer_.quantization_error(model.embed(split["database"])), 4),
               "snapped_fraction": round(model.history_[-1]["snapped_fraction"], 3) if model.history_ else None,
               "seconds": round(time.perf_counter() - t, 1)}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
