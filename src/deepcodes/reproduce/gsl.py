"""Reproduction and ablation of GSL (Liu & Lu, 2016) on ``mnist-sup`` and ``cifar10-sup``.

Every variant uses the same small CNN, the same classification loss, the same total number of
epochs and the same batch order; they differ only in the last ``fine`` epochs, which all start
from one shared warm-up network per seed (quantization awareness is switched on late):

1. float: the network trained ``fine`` more epochs with no quantizer, searched exactly (the ceiling);
2. post hoc: that same network, PQ fitted on its representations afterwards;
3. quantization loss: the ``fine`` epochs add ``λ ||z - q(z)||²`` (DQN-style), λ chosen on a
   validation split of the training set (never on the queries);
4. GSL: the ``fine`` epochs go through the Gradient Snapping Layer.

Also GSL with PQ, OPQ and RQ at 32 bits. Writes ``gsl.md``, ``gsl.json`` and plots to ``out_dir``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..coders.gsl import GSLQuantizer
from ..data import load_protocol
from ..eval import evaluate_search
from ..eval.relevance import ClassRelevance, relevance_for
from ..eval.report import markdown_table, plot_map_vs_bits, plot_pr_curves, write_json
from ..errors import InputError
from ..index import ADCIndex
from . import ReproduceOptions

log = logging.getLogger(__name__)

BITS = (16, 32, 64)
LAMBDAS = (0.003, 0.01, 0.03, 0.1, 1.0)
COMMON = dict(backbone="cnn", dim=64, loss="classification", batch_size=128, lr=1e-3, max_train=20_000)
GSL = dict(alpha=0.5, n_neighbors=16, snap="direction")
# Epochs of the shared warm-up and of the variant-specific end of training, and the training rows
# used (a seeded subset of MNIST's 60,000 keeps the whole run within 45 minutes on 2 cores; the
# database stays all 60,000), per protocol.
SCHEDULES = {"mnist-sup": {"warm": 4, "fine": 3, "n_train": 20_000},
             "cifar10-sup": {"warm": 15, "fine": 5, "n_train": None}}
VALIDATION = {"fraction": 0.2, "queries": 1000, "database": 10_000}
VARIANTS = ("float", "post-hoc", "quant-loss", "gsl")


def run(out_dir: Path, options: ReproduceOptions = ReproduceOptions()) -> dict:
    """Run the comparison; ``quick``: one seed at 32 bits. Returns ``{"table": markdown, ...}``."""
    if options.schedule != "default":
        raise InputError(f"reproduce gsl has no schedule {options.schedule!r}")
    if options.device != "cpu":
        raise InputError("reproduce gsl runs on the CPU only in this version")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    quick, progress, seeds = options.quick, options.progress, options.n_seeds
    bits_list = (32,) if quick else BITS
    start = time.perf_counter()
    records, tuning = [], {}
    for name, schedule in SCHEDULES.items():
        protocol = load_protocol(name)
        lam, tuning[name] = tune_quant_weight(protocol, schedule, bits=32, progress=progress)
        for seed in range(seeds):
            records += _run_seed(protocol, schedule, seed, bits_list, lam, progress)
    summary = _summarise(records)
    table = _tables(summary, tuning, seeds, time.perf_counter() - start)
    result = {"table": table, "summary": summary, "runs": records, "tuning": tuning,
              "settings": {"common": COMMON, "gsl": GSL, "schedules": SCHEDULES, "lambdas": LAMBDAS,
                           "validation": VALIDATION, "bits": list(bits_list), "seeds": seeds},
              "seconds": round(time.perf_counter() - start, 1)}
    (out_dir / "gsl.md").write_text(table)
    write_json(out_dir / "gsl.json", result)
    main = [r for r in summary if r["quantizer"] in ("pq", "none")]
    plot_map_vs_bits([{"method": r["variant"], "protocol": r["protocol"], "bits": r["bits"], "map": r["map_mean"]}
                      for r in main], out_dir / "gsl_map_vs_bits.png", "GSL vs its baselines (mean mAP)")
    for name in SCHEDULES:
        curves = [{"method": r["variant"] if r["quantizer"] == "pq" else f"gsl-{r['quantizer']}",
                   "precision": r["pr_curve"]["precision"], "recall": r["pr_curve"]["recall"]}
                  for r in records if r["protocol"] == name and r["bits"] in (32, None) and r["seed"] == 0]
        plot_pr_curves(curves, out_dir / f"gsl_pr_{name}_32bits.png", f"{name}, 32 bits, seed 0")
    return result


def _model(bits, seed, **kw) -> GSLQuantizer:
    return GSLQuantizer(n_bits=bits, random_state=seed, **{**COMMON, **kw})


def _training_set(protocol, schedule) -> tuple[np.ndarray, np.ndarray]:
    X, y = protocol.train, protocol.train_labels
    n = schedule["n_train"]
    if n is None or n >= len(X):
        return X, y
    rows = np.sort(np.random.default_rng(0).choice(len(X), n, replace=False))
    return X[rows], y[rows]


def _run_seed(protocol, schedule, seed, bits_list, lam, progress) -> list[dict]:
    X, y = _training_set(protocol, schedule)
    warm_seed, fine_seed = 1000 + seed, 2000 + seed   # every variant's end of training sees one batch order
    bar = tqdm(total=2 + 3 * len(bits_list) + 2 * (32 in bits_list), disable=not progress,
               desc=f"{protocol.name} seed {seed}")
    warm = _model(max(bits_list), warm_seed, quantization="none", epochs=schedule["warm"]).fit(X, y)
    bar.update()
    base = _model(max(bits_list), fine_seed, quantization="none", epochs=schedule["fine"], init=warm).fit(X, y)
    Zdb, Zq = base.embed(protocol.database), base.embed(protocol.queries)
    out = [_record(protocol, "float", "none", None, seed, _evaluate_float(protocol, Zdb, Zq), base)]
    bar.update()
    for bits in bits_list:
        post = _model(bits, fine_seed, quantization="none", epochs=0, init=base).fit(X, y)
        out.append(_record(protocol, "post-hoc", "pq", bits, seed, _evaluate(protocol, post, Zdb, Zq), post))
        bar.update()
        runs = [("quant-loss", "pq", dict(quantization="loss", quant_weight=lam)),
                ("gsl", "pq", dict(quantization="gsl", **GSL))]
        if bits == 32:
            runs += [("gsl", q, dict(quantization="gsl", quantizer=q, **GSL)) for q in ("opq", "rq")]
        for variant, quantizer, kw in runs:
            model = _model(bits, fine_seed, epochs=schedule["fine"], init=warm, **kw).fit(X, y)
            rec = _record(protocol, variant, quantizer, bits, seed, _evaluate(protocol, model), model)
            if variant == "quant-loss":
                rec["quant_weight"] = lam
            out.append(rec)
            bar.update()
    bar.close()
    return out


def validation_split(protocol, schedule) -> dict:
    """A seeded split of the training set: ``fit`` rows to train on, ``queries`` (held out) and
    ``database`` (a sample of the fit rows) to measure validation mAP. Never touches the queries."""
    X, y = _training_set(protocol, schedule)
    rng = np.random.default_rng(12345)
    perm = rng.permutation(len(X))
    n_val = int(round(VALIDATION["fraction"] * len(X)))
    val, fit = np.sort(perm[:n_val][:VALIDATION["queries"]]), np.sort(perm[n_val:])
    db = np.sort(rng.choice(fit, min(VALIDATION["database"], len(fit)), replace=False))
    return {"X": X[fit], "y": y[fit], "queries": X[val], "database": X[db],
            "relevance": ClassRelevance(y[db], y[val])}


def validation_map(model, split) -> float:
    """mAP of ``model``'s ADC search of the validation queries over the validation database."""
    index = ADCIndex(model.quantizer_)
    index.add(model.embed(split["database"]))
    return evaluate_search(index.search, model.embed(split["queries"]), split["relevance"],
                           len(split["database"]))["map"]


def tune_quant_weight(protocol, schedule, *, bits: int, progress: bool = False) -> tuple[float, dict]:
    """λ of the quantization-loss baseline with the best validation mAP at ``bits`` bits (seed 0),
    trained with the reproduction's schedule on the fit part of :func:`validation_split`."""
    split = validation_split(protocol, schedule)
    warm = _model(bits, 1000, quantization="none", epochs=schedule["warm"]).fit(split["X"], split["y"])
    scores = {}
    for lam in tqdm(LAMBDAS, disable=not progress, desc=f"{protocol.name} tune λ"):
        model = _model(bits, 2000, quantization="loss", quant_weight=lam, epochs=schedule["fine"],
                       init=warm).fit(split["X"], split["y"])
        scores[lam] = validation_map(model, split)
        log.info("%s: λ=%g validation mAP %.4f", protocol.name, lam, scores[lam])
    best = max(scores, key=scores.get)
    return best, {"bits": bits, "validation_map": {str(k): v for k, v in scores.items()}, "chosen": best}


def _evaluate(protocol, model, Zdb=None, Zq=None) -> dict:
    """The same search as ``pipeline.evaluate_coder`` (ADC over the whole database), embedding once."""
    Zdb = model.embed(protocol.database) if Zdb is None else Zdb
    Zq = model.embed(protocol.queries) if Zq is None else Zq
    index = ADCIndex(model.quantizer_)
    index.add(Zdb)
    return evaluate_search(index.search, Zq, relevance_for(protocol), len(Zdb))


def _evaluate_float(protocol, Zdb, Zq) -> dict:
    """Exact Euclidean search of the float representations (ranking by (distance, id))."""
    db_norm = np.einsum("nd,nd->n", Zdb, Zdb)

    def search(Q, k):
        d = np.maximum(np.einsum("qd,qd->q", Q, Q)[:, None] - 2 * Q @ Zdb.T + db_norm[None], 0)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, order, axis=1), order

    return evaluate_search(search, Zq, relevance_for(protocol), len(Zdb))


def _record(protocol, variant, quantizer, bits, seed, result, model) -> dict:
    rec = {"protocol": protocol.name, "variant": variant, "quantizer": quantizer, "bits": bits, "seed": seed,
           "map": result["map"], "p@100": result["precision_at_k"].get("100"), "pr_curve": result["pr_curve"]}
    if variant != "float":
        rec["quantization_error"] = float(model.quantizer_.quantization_error(
            model.embed(protocol.database[:5000])))
        rec["last_epoch"] = model.history_[-1] if model.history_ else None
    return rec


def _summarise(records) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["protocol"], r["variant"], r["quantizer"], r["bits"]), []).append(r)
    bits_all = sorted({r["bits"] for r in records if r["bits"] is not None})
    out = []
    for (protocol, variant, quantizer, bits), rs in groups.items():
        maps = np.array([r["map"] for r in rs])
        errs = [r["quantization_error"] for r in rs if "quantization_error" in r]
        for b in ([bits] if bits is not None else bits_all):    # the float ceiling holds at every length
            out.append({"protocol": protocol, "variant": variant, "quantizer": quantizer, "bits": b,
                        "map_mean": float(maps.mean()), "map_std": float(maps.std()), "n_seeds": len(rs),
                        "quantization_error": float(np.mean(errs)) if errs else None})
    return out


def _tables(summary, tuning, seeds, seconds) -> str:
    def cell(protocol, variant, bits, quantizer="pq"):
        for r in summary:
            if (r["protocol"], r["variant"], r["bits"]) == (protocol, variant, bits) and \
                    (variant == "float" or r["quantizer"] == quantizer):
                return f"{r['map_mean']:.4f} ± {r['map_std']:.4f}"
        return None

    rows = []
    for protocol in SCHEDULES:
        for bits in sorted({r["bits"] for r in summary if r["protocol"] == protocol}):
            rows.append({"protocol": protocol, "bits": bits,
                         **{v: cell(protocol, v, bits) for v in VARIANTS},
                         "λ": tuning[protocol]["chosen"]})
    text = (f"mAP (mean ± std over {seeds} seed(s)), same CNN, loss and epochs; PQ with bits/8 "
            "sub-quantizers of 256 codewords, exhaustive ADC search.\n\n")
    text += markdown_table(rows, ["protocol", "bits", *VARIANTS, "λ"])
    rows = [{"protocol": p, **{q: cell(p, "gsl", 32, q) for q in ("pq", "opq", "rq")}} for p in SCHEDULES
            if cell(p, "gsl", 32)]
    if rows:
        text += "\nGSL at 32 bits with each quantizer (mAP):\n\n" + markdown_table(rows, ["protocol", "pq", "opq", "rq"])
    text += f"\nTotal time {seconds / 60:.1f} min.\n"
    return text
