"""The supervised deep hashers side by side: SH-BDNN, DSH, DNNH, SuBiC, SDH, GSL-PQ and PCA-ITQ on
``mnist-sup`` (MLP on the pixels), ``cifar10-sup`` (the small CNN on the pixels, with augmentation)
and ``cifar10-gist-sup`` (MLP on 512-d GIST) at 16/32/64 bits.

Every configuration is fitted with ``seeds`` seeds (0, 1, ...) on the protocol's training set; the
deep coders keep the epoch (outer iteration) with the best mAP on a validation split of the
training set, never on the queries. Binary codes are ranked by Hamming distance over the whole
database, SuBiC by its block-sum (ADC) score and also by Hamming distance on its one-hot bits
("subic-hamming", the same fit), GSL-PQ by ADC; ties by database index. Reported: mAP, precision
at 1,000, precision within Hamming radius 2 (binary codes), fit time (wall and CPU seconds).

Each result is saved under ``out_dir/runs/`` as soon as it is measured and read back on a later
run with the same settings, so an interrupted reproduction resumes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from ..coders.subic import block_shape
from ..data import load_protocol
from ..eval import TIE_RULE, evaluate_search, markdown_table, plot_map_vs_bits, plot_pr_curves, write_json
from ..eval.relevance import relevance_for
from ..errors import InputError
from ..index import HammingIndex
from ..pipeline import evaluate_coder, fit_method
from . import ReproduceOptions
from .records import cached_json, group_rows

log = logging.getLogger(__name__)

# cifar10-sup (the CNN, the costliest per point) last.
PROTOCOLS = ("mnist-sup", "cifar10-gist-sup", "cifar10-sup")
METHODS = ("sh-bdnn", "dsh", "dnnh", "subic", "sdh", "gsl", "itq")
# Fitting order: the costliest (SH-BDNN's full-batch L-BFGS) last.
FIT_ORDER = ("dsh", "dnnh", "subic", "gsl", "itq", "sdh", "sh-bdnn")
NETWORK_METHODS = ("dsh", "dnnh", "subic", "gsl")
LBFGS_METHODS = ("sh-bdnn", "sdh")
BITS = (16, 32, 64)
# The backbone and training length of the Adam-trained coders per protocol.
NETWORKS = {
    "mnist-sup": dict(backbone="mlp", hidden=(512, 512), epochs=10),
    "cifar10-sup": dict(backbone="cnn", hidden=(256,), epochs=60, augment=True),
    "cifar10-gist-sup": dict(backbone="mlp", hidden=(512, 512), epochs=40),
}
# GSL-PQ in one fit: the unit-norm 64-d representation with the cosine classifier, the gradient
# snapping layer on for the second half of training (the representation first has to exist).
GSL = dict(dim=64, normalize=True, quantization="gsl", alpha=0.5, lr=2e-3, lr_schedule="cosine")
# The quick run: one seed, 32 bits, 10,000 MNIST training images, short schedules.
QUICK_TRAIN = {"mnist-sup": 10_000}
QUICK_EPOCHS = {"mnist-sup": 2, "cifar10-sup": 4, "cifar10-gist-sup": 5}
QUICK_LBFGS = {"n_outer": 3}
# SDH's validation mAP stays within 0.01 of its first outer iteration's over all 20 on both
# protocols (docs/bdnn.md's full run), so it runs 5 outer iterations here; SH-BDNN keeps its 20.
SDH_OPTIONS = {"n_outer": 5}


def method_options(method: str, protocol: str, bits: int, quick: bool, device: str) -> dict:
    """The options ``fit_method`` gets for ``method`` on ``protocol`` at ``bits``."""
    options: dict = {}
    if method in NETWORK_METHODS:
        options = dict(NETWORKS[protocol])
        if method == "subic":
            # Named even where it is SuBiC's default, so that the run files (keyed by the options)
            # of an earlier default are never read back as this one's.
            options["n_blocks"] = block_shape(bits, None)[0]
        if quick:
            options["epochs"] = QUICK_EPOCHS[protocol]
        if method == "gsl":
            options.update(GSL, quant_start=options["epochs"] // 2)
    elif method in LBFGS_METHODS and quick:
        options = dict(QUICK_LBFGS)
    elif method == "sdh":
        options = dict(SDH_OPTIONS)
    if method in NETWORK_METHODS + LBFGS_METHODS and device != "cpu":
        options["device"] = device
    return options


def _training_protocol(protocol, quick: bool):
    n = QUICK_TRAIN.get(protocol.name) if quick else None
    if n is None or n >= len(protocol.train):
        return protocol
    rows = np.sort(np.random.default_rng(0).choice(len(protocol.train), n, replace=False))
    return dataclasses.replace(protocol, train=protocol.train[rows], train_labels=protocol.train_labels[rows])


def _row(result: dict) -> dict:
    return {"map": result["map"], "precision_at_1000": result["precision_at_k"].get("1000"),
            "precision_radius2": result.get("precision_radius2"), "pr_curve": result["pr_curve"]}


def run_one(method: str, bits: int, protocol, train_protocol, seed: int, options: dict, runs: Path) -> list[dict]:
    """Fit and evaluate one configuration (or read it back from ``runs``); its result rows (two for
    SuBiC: block-sum and one-hot Hamming search)."""
    key = f"{protocol.name}_n{len(train_protocol.train)}_{method}_{bits}_s{seed}" + "".join(
        f"_{k}{v}" for k, v in sorted(options.items()))
    return cached_json(runs / f"{key}.json", lambda: _fit_and_evaluate(method, bits, protocol, train_protocol, seed,
                                                                       options))


def _fit_and_evaluate(method, bits, protocol, train_protocol, seed, options) -> list[dict]:
    cpu = time.process_time()
    coder = fit_method(method, bits, train_protocol, random_state=seed, **options)
    cpu = time.process_time() - cpu
    common = {"protocol": protocol.name, "bits": bits, "seed": seed, "options": options,
              "n_train": len(train_protocol.train), "fit_seconds": coder.meta_["fit_seconds"],
              "fit_cpu_seconds": round(cpu, 1), "best_epoch": getattr(coder, "best_epoch_", None),
              "best_iteration": getattr(coder, "best_iteration_", None)}
    rows = [{"method": method, **common, **_row(evaluate_coder(coder, protocol))}]
    if method == "subic":
        index = HammingIndex(n_bits=coder.one_hot_bits)
        index.add_codes(coder.one_hot_codes(protocol.database))
        result = evaluate_search(lambda Q, k: index.search_codes(Q, k), coder.one_hot_codes(protocol.queries),
                                 relevance_for(protocol), len(protocol.database), hamming_bits=coder.one_hot_bits)
        rows.append({"method": "subic-hamming", **common, **_row(result)})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation (over seeds, ddof 0) of each metric per protocol, method, bits."""
    out = []
    for (protocol, method, bits), members in group_rows(rows, ("protocol", "method", "bits")).items():
        entry = {"protocol": protocol, "method": method, "bits": bits, "n_seeds": len(members)}
        for metric in ("map", "precision_at_1000", "precision_radius2", "fit_seconds", "fit_cpu_seconds"):
            values = [r[metric] for r in members if r.get(metric) is not None]
            entry[metric] = float(np.mean(values)) if values else None
            entry[f"{metric}_std"] = float(np.std(values)) if values else None
        out.append(entry)
    return out


def tables(summary: list[dict], bits: tuple[int, ...]) -> str:
    """mAP table (mean ± std), precision@1000 and within radius 2 table, fit times, and the
    ranking claims (DSH, DNNH, SuBiC above SDH and PCA-ITQ; SH-BDNN's place)."""
    by = {(s["protocol"], s["method"], s["bits"]): s for s in summary}
    protocols = list(dict.fromkeys(s["protocol"] for s in summary))
    methods = [m for m in (*METHODS[:4], "subic-hamming", *METHODS[4:]) if any(s["method"] == m for s in summary)]

    def fmt(s, metric, std=True):
        if s is None or s.get(metric) is None:
            return None
        return f"{s[metric]:.4f} ± {s[metric + '_std']:.4f}" if std else f"{s[metric]:.4f}"

    map_rows, prec_rows, time_rows, claims = [], [], [], []
    for p in protocols:
        for m in methods:
            cells = {b: by.get((p, m, b)) for b in bits}
            if not any(cells.values()):
                continue
            map_rows.append({"protocol": p, "method": m, **{f"{b} bits": fmt(cells[b], "map") for b in bits}})
            prec_rows.append({"protocol": p, "method": m,
                              **{f"P@1000 ({b})": fmt(cells[b], "precision_at_1000", False) for b in bits},
                              **{f"P(r≤2) ({b})": fmt(cells[b], "precision_radius2", False) for b in bits}})
            time_rows.append({"protocol": p, "method": m,
                              **{f"wall s ({b})": None if cells[b] is None else f"{cells[b]['fit_seconds']:.0f}"
                                 for b in bits},
                              **{f"CPU s ({b})": None if cells[b] is None or cells[b]["fit_cpu_seconds"] is None
                                 else f"{cells[b]['fit_cpu_seconds']:.0f}" for b in bits}})
        for b in bits:
            ranked = sorted(((by[(p, m, b)]["map"], m) for m in methods if (p, m, b) in by), reverse=True)
            floor = [by[(p, m, b)]["map"] for m in ("sdh", "itq") if (p, m, b) in by]
            for m in ("dsh", "dnnh", "subic"):
                if (p, m, b) in by and floor:
                    claims.append({"claim": f"{p} {b} bits: {m} > SDH, PCA-ITQ",
                                   "holds": bool(by[(p, m, b)]["map"] > max(floor)),
                                   "values": f"{by[(p, m, b)]['map']:.4f} vs {max(floor):.4f}"})
            if (p, "sh-bdnn", b) in by:
                place = [m for _, m in ranked].index("sh-bdnn") + 1
                claims.append({"claim": f"{p} {b} bits: SH-BDNN's place", "holds": None,
                               "values": f"{place} of {len(ranked)}: " + " > ".join(m for _, m in ranked)})
    return "\n".join([
        "mAP (mean ± std over seeds):", "", markdown_table(map_rows, ["protocol", "method", *[f"{b} bits" for b in bits]]),
        "Precision at 1,000 and within Hamming radius 2 (mean over seeds; radius 2 only for Hamming ranking):", "",
        markdown_table(prec_rows, ["protocol", "method", *[f"P@1000 ({b})" for b in bits],
                                   *[f"P(r≤2) ({b})" for b in bits]]),
        "Fit time, mean seconds (wall on the shared machine, and this process's CPU time):", "",
        markdown_table(time_rows, ["protocol", "method", *[f"wall s ({b})" for b in bits],
                                   *[f"CPU s ({b})" for b in bits]]),
        "Claims (mean mAP):", "",
        markdown_table(claims, ["claim", "holds", "values"]) if claims else "(none measured)\n",
    ])


def run(out_dir: Path, options: ReproduceOptions = ReproduceOptions()) -> dict:
    """Run the comparison; write ``supervised.md``, ``supervised.json``, ``supervised_map_vs_bits.png``
    and ``supervised_pr_32bits_<protocol>.png`` in ``out_dir``. ``quick``: one seed, 32 bits,
    10,000 MNIST training images, short training."""
    if options.schedule != "default":
        raise InputError(f"reproduce supervised has no schedule {options.schedule!r}")
    if options.methods:
        raise InputError("reproduce supervised has no choice of methods (--method)")
    quick = options.quick
    protocols, bits = options.select(PROTOCOLS, (32,) if quick else BITS)
    out_dir = Path(out_dir)
    runs = out_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    seeds = list(range(options.n_seeds))
    started = time.perf_counter()
    rows, sizes = [], {}
    # 32 bits first: an interrupted run has the middle column complete first.
    plan = [(p, b, m, s) for p in protocols for b in sorted(bits, key=lambda b: (b != 32, b))
            for m in FIT_ORDER for s in seeds]
    for i, (name, b, method, seed) in enumerate(plan):
        protocol = load_protocol(name)
        train = _training_protocol(protocol, quick)
        sizes[name] = {**protocol.summary(), "n_train": len(train.train)}
        got = run_one(method, b, protocol, train, seed, method_options(method, name, b, quick, options.device), runs)
        rows += got
        if options.progress:
            log.warning("[%d/%d] %s %s %d bits seed %d: mAP %.4f (fit %.0fs, %.0fs elapsed)", i + 1, len(plan), name,
                        method, b, seed, got[0]["map"], got[0]["fit_seconds"], time.perf_counter() - started)
    summary = summarise(rows)
    size_rows = [{"protocol": s["name"], "train": s["n_train"], "database": s["n_database"],
                  "queries": s["n_queries"], "dim": s["dim"]} for s in sizes.values()]
    text = "\n".join([
        "# Supervised deep hashers: SH-BDNN, DSH, DNNH, SuBiC, SDH, GSL-PQ, PCA-ITQ", "",
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}); relevance = same class; ranking over the whole "
        f"database, ties: {TIE_RULE}. Networks: {json.dumps(NETWORKS)}; model selection on a validation split "
        "of the training set. This invocation took "
        f"{(time.perf_counter() - started) / 60:.1f} min (results read back from runs/ cost nothing; "
        "the fit times below are those measured when each was fitted).", "",
        markdown_table(size_rows, ["protocol", "train", "database", "queries", "dim"]),
        tables(summary, bits),
    ])
    (out_dir / "supervised.md").write_text(text)
    write_json(out_dir / "supervised.json", {"quick": quick, "seeds": seeds, "bits": list(bits), "tie_rule": TIE_RULE,
                                             "networks": NETWORKS, "gsl": GSL, "protocols": sizes,
                                             "summary": summary, "runs": rows})
    plot_map_vs_bits(summary, out_dir / "supervised_map_vs_bits.png", "Supervised hashers: mAP vs code length")
    pr_bits = 32 if 32 in bits else bits[0]
    for name in protocols:
        curves = [{"method": r["method"], "precision": r["pr_curve"]["precision"], "recall": r["pr_curve"]["recall"]}
                  for r in rows if r["protocol"] == name and r["bits"] == pr_bits and r["seed"] == seeds[0]]
        plot_pr_curves(curves, out_dir / f"supervised_pr_{pr_bits}bits_{name}.png",
                       f"{name}, {pr_bits} bits, seed {seeds[0]}")
    return {"table": text, "summary": summary, "out_dir": str(out_dir)}
