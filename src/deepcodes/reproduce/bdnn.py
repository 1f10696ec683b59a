"""Reproduction of the BDNN paper's comparison (Do, Doan, Cheung, ECCV 2016).

Unsupervised, 16/32/64 bits: UH-BDNN vs Deep Hashing vs PCA-ITQ vs LSH on mnist-unsup, sift10k and
cifar10-unsup (512-d GIST). Supervised: SH-BDNN vs supervised Deep Hashing vs PCA-ITQ on mnist-sup
and cifar10-gist-sup. Every configuration is fitted with ``seeds`` seeds (0, 1, ...) and evaluated
by Hamming ranking of the whole database (ties by database index); the table gives the mean and the
standard deviation of mAP over seeds.

Each fitted configuration's result is saved under ``out_dir/runs/`` as soon as it is measured, and
found there on a later run with the same settings, so an interrupted reproduction resumes.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ..data import load_protocol
from ..eval import TIE_RULE, markdown_table, plot_map_vs_bits, plot_pr_curves, write_json
from ..errors import InputError
from ..pipeline import evaluate_coder, fit_method
from . import ReproduceOptions

log = logging.getLogger(__name__)

UNSUPERVISED = ("mnist-unsup", "sift10k", "cifar10-unsup")
SUPERVISED = ("mnist-sup", "cifar10-gist-sup")
UNSUP_METHODS = ("uh-bdnn", "dh", "itq", "lsh")
SUP_METHODS = ("sh-bdnn", "sdh", "itq")
DEEP = {"uh-bdnn", "sh-bdnn", "dh", "sdh"}
BITS = (16, 32, 64)
QUICK_BITS = (32,)
# The quick run trains the deep coders for 5 outer iterations instead of 20 (still with validation
# early stopping) so that it finishes in minutes rather than an hour on 2 CPU cores.
QUICK_OPTIONS = {"n_outer": 5}


def _options(method: str, quick: bool, device: str) -> dict:
    options = dict(QUICK_OPTIONS) if quick and method in DEEP else {}
    if method in DEEP and device != "cpu":
        options["device"] = device
    return options


def _run_one(method: str, bits: int, protocol, seed: int, options: dict, runs: Path) -> dict:
    key = f"{protocol.name}_{method}_{bits}_s{seed}" + "".join(f"_{k}{v}" for k, v in sorted(options.items()))
    path = runs / f"{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("ignoring unreadable run file %s", path)
    coder = fit_method(method, bits, protocol, random_state=seed, **options)
    result = evaluate_coder(coder, protocol)
    row = {"protocol": protocol.name, "method": method, "bits": bits, "seed": seed, "options": options,
           "map": result["map"], "precision_at_100": result["precision_at_k"].get("100"),
           "precision_radius2": result.get("precision_radius2"), "pr_curve": result["pr_curve"],
           "fit_seconds": result["fit_seconds"],
           "best_iteration": getattr(coder, "best_iteration_", None),
           "validation_map": (coder.validation_map_.tolist() if hasattr(coder, "validation_map_") else None)}
    write_json(path, row)
    return row


def _summary(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation (ddof 0) of mAP per (protocol, method, bits)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["protocol"], row["method"], row["bits"]), []).append(row)
    out = []
    for (protocol, method, bits), members in groups.items():
        maps = np.array([r["map"] for r in members])
        out.append({"protocol": protocol, "method": method, "bits": bits, "map": float(maps.mean()),
                    "map_std": float(maps.std()), "n_seeds": len(members),
                    "fit_seconds": float(np.mean([r["fit_seconds"] or 0.0 for r in members]))})
    return out


def _table(summary: list[dict], bits: tuple[int, ...]) -> str:
    rows = []
    for protocol in dict.fromkeys(s["protocol"] for s in summary):
        for method in dict.fromkeys(s["method"] for s in summary if s["protocol"] == protocol):
            row = {"protocol": protocol, "method": method}
            for s in summary:
                if s["protocol"] == protocol and s["method"] == method:
                    row[f"{s['bits']} bits"] = f"{s['map']:.4f} ± {s['map_std']:.4f}"
                    row[f"fit s ({s['bits']})"] = f"{s['fit_seconds']:.0f}"
            rows.append(row)
    columns = ["protocol", "method"] + [f"{b} bits" for b in bits] + [f"fit s ({b})" for b in bits]
    return markdown_table(rows, columns)


def _claims(summary: list[dict], bits: tuple[int, ...]) -> list[dict]:
    """The paper's ordering UH-BDNN > DH > ITQ (mean mAP) on each unsupervised protocol and length,
    and SH-BDNN above every other coder on each supervised one."""
    by = {(s["protocol"], s["method"], s["bits"]): s["map"] for s in summary}
    out = []
    for b in bits:
        for p in UNSUPERVISED:
            uh, dh, itq = (by.get((p, m, b)) for m in ("uh-bdnn", "dh", "itq"))
            if None not in (uh, dh, itq):
                out.append({"claim": f"{p} {b} bits: UH-BDNN > DH > ITQ", "holds": bool(uh > dh > itq),
                            "values": f"{uh:.4f} / {dh:.4f} / {itq:.4f}"})
        for p in SUPERVISED:
            sh = by.get((p, "sh-bdnn", b))
            rest = [by[(p, m, b)] for m in ("sdh", "itq") if (p, m, b) in by]
            if sh is not None and rest:
                out.append({"claim": f"{p} {b} bits: SH-BDNN > SDH, ITQ", "holds": bool(sh > max(rest)),
                            "values": f"{sh:.4f} vs best other {max(rest):.4f}"})
    return out


def run(out_dir: Path, options: ReproduceOptions = ReproduceOptions()) -> dict:
    """Run the comparison; write ``bdnn.md``, ``bdnn.json``, ``map_vs_bits.png`` and
    ``pr_32bits.png`` (plus ``pr_32bits_<protocol>.png`` per protocol) in ``out_dir``."""
    if options.schedule != "default":
        raise InputError(f"reproduce bdnn has no schedule {options.schedule!r} yet")
    quick, progress, device = options.quick, options.progress, options.device
    seeds = options.n_seeds
    chosen, bits = options.select(UNSUPERVISED + SUPERVISED, QUICK_BITS if quick else BITS)
    out_dir = Path(out_dir)
    runs = out_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(seeds))
    plan = [(p, m) for p in UNSUPERVISED if p in chosen for m in UNSUP_METHODS] + [
        (p, m) for p in SUPERVISED if p in chosen for m in SUP_METHODS]
    started = time.perf_counter()
    rows, sizes = [], {}
    total = len(plan) * len(bits) * len(seed_list)
    for protocol_name, method in plan:
        protocol = load_protocol(protocol_name)
        sizes[protocol_name] = protocol.summary()
        for b in bits:
            for seed in seed_list:
                row = _run_one(method, b, protocol, seed, _options(method, quick, device), runs)
                rows.append(row)
                if progress:
                    log.warning("[%d/%d] %s %s %d bits seed %d: mAP %.4f (fit %.0fs, %.0fs elapsed)", len(rows), total,
                                protocol_name, method, b, seed, row["map"], row["fit_seconds"] or 0.0,
                                time.perf_counter() - started)
    summary = _summary(rows)
    claims = _claims(summary, bits)
    size_rows = [{"protocol": s["name"], "train": s["n_train"], "database": s["n_database"], "queries": s["n_queries"],
                  "dim": s["dim"], "relevance": ("same class" if s["relevance"] == "class"
                                                 else f"{s['n_neighbors']} exact Euclidean NN")}
                 for s in sizes.values()]
    deep_note = (f"Deep coders trained with {QUICK_OPTIONS['n_outer']} outer iterations (quick run); "
                 if quick else "Deep coders with their default settings; ")
    text = "\n".join([
        "# BDNN reproduction: UH-BDNN / SH-BDNN vs Deep Hashing, ITQ, LSH", "",
        f"mAP over the full Hamming ranking of the database, mean ± standard deviation over {len(seed_list)} "
        f"seed(s) ({', '.join(map(str, seed_list))}); ties: {TIE_RULE}. {deep_note}the best outer iteration "
        "is chosen on a validation split carved from the training set, never on the queries. "
        "`fit s` is the mean fitting time in seconds (2 shared CPU cores).", "",
        markdown_table(size_rows, ["protocol", "train", "database", "queries", "dim", "relevance"]),
        _table(summary, bits),
        "Paper's claims, mean mAP:", "",
        markdown_table(claims, ["claim", "holds", "values"]) if claims else "(none measured)\n",
    ])
    (out_dir / "bdnn.md").write_text(text)
    write_json(out_dir / "bdnn.json", {"quick": quick, "seeds": seed_list, "bits": list(bits), "tie_rule": TIE_RULE,
                                       "protocols": sizes, "summary": summary, "claims": claims, "runs": rows})
    plot_map_vs_bits(summary, out_dir / "map_vs_bits.png", "BDNN reproduction: mAP vs code length")
    pr_bits = 32 if 32 in bits else bits[0]
    for i, protocol_name in enumerate(dict.fromkeys(r["protocol"] for r in rows)):
        curves = []
        for method in dict.fromkeys(r["method"] for r in rows if r["protocol"] == protocol_name):
            row = next(r for r in rows if r["protocol"] == protocol_name and r["method"] == method
                       and r["bits"] == pr_bits and r["seed"] == seed_list[0])
            curves.append({"method": method, "precision": row["pr_curve"]["precision"],
                           "recall": row["pr_curve"]["recall"]})
        title = f"{protocol_name}, {pr_bits} bits (Hamming radius 0..{pr_bits}), seed {seed_list[0]}"
        plot_pr_curves(curves, out_dir / f"pr_{pr_bits}bits_{protocol_name}.png", title)
        if i == 0:
            plot_pr_curves(curves, out_dir / f"pr_{pr_bits}bits.png", title)
    return {"table": text, "summary": summary, "claims": claims, "out_dir": str(out_dir)}
