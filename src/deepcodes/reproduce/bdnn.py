"""Reproduction of the BDNN paper's comparison (Do, Doan, Cheung, ECCV 2016).

Unsupervised, 16/32/64 bits: UH-BDNN vs Deep Hashing vs PCA-ITQ vs LSH on mnist-unsup, sift10k and
cifar10-unsup (512-d GIST). Supervised: SH-BDNN vs supervised Deep Hashing vs PCA-ITQ on mnist-sup
and cifar10-gist-sup. The models fitted for mnist-unsup and mnist-sup are also evaluated on the
authors' MNIST protocol (``mnist-unsup-10k``, ``mnist-sup-10k``: the same 60,000 training images,
all 10,000 test images as queries). Every configuration is fitted with ``seeds`` seeds (0, 1, ...)
and evaluated by Hamming ranking of the whole database (ties by database index); the tables give
the mean and the standard deviation (ddof 0) over seeds of mAP, of the fit time and of the fit's
peak resident memory.

``schedule="paper"`` trains the deep coders with the authors' schedule (20 outer iterations of 400
L-BFGS iterations) instead of their fast default. ``quick`` runs one seed at 32 bits (with the
default schedule, the deep coders stop after 5 outer iterations).

Each fitted configuration's results are saved under ``out_dir/runs/`` as soon as they are measured
and found there on a later run with the same settings, so an interrupted reproduction resumes.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..data import load_protocol
from ..eval import TIE_RULE, markdown_table, plot_map_vs_bits, plot_pr_curves, write_json
from ..errors import InputError
from ..pipeline import evaluate_coder, fit_method
from . import SCHEDULES, ReproduceOptions

log = logging.getLogger(__name__)

UNSUPERVISED = ("mnist-unsup", "sift10k", "cifar10-unsup")
SUPERVISED = ("mnist-sup", "cifar10-gist-sup")
# Protocols with the training set of another: its fitted models are evaluated on them too.
ALSO_EVALUATED = {"mnist-unsup": ("mnist-unsup-10k",), "mnist-sup": ("mnist-sup-10k",)}
UNSUP_METHODS = ("uh-bdnn", "dh", "itq", "lsh")
SUP_METHODS = ("sh-bdnn", "sdh", "itq")
DEEP = {"uh-bdnn", "sh-bdnn", "dh", "sdh"}
BITS = (16, 32, 64)
QUICK_BITS = (32,)
# The quick run trains the deep coders for 5 outer iterations instead of 20 (still with validation
# early stopping) so that it finishes in minutes rather than an hour on 2 CPU cores.
QUICK_OPTIONS = {"n_outer": 5}
# Bump when a change to the coders makes earlier run files stale.
RUN_VERSION = 3


def _options(method: str, options: ReproduceOptions) -> dict:
    if method not in DEEP:
        return {}
    out = {"schedule": "paper"} if options.schedule == "paper" else (dict(QUICK_OPTIONS) if options.quick else {})
    if options.device != "cpu":
        out["device"] = options.device
    return out


class PeakMemory:
    """Peak resident memory (MB) of this process between entering and leaving the block, by
    resetting Linux's high-water mark (``/proc/self/clear_refs``); ``mb`` is None elsewhere."""

    def __enter__(self) -> "PeakMemory":
        self.mb = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._ok = True
        except OSError:
            self._ok = False
        return self

    def __exit__(self, *exc) -> None:
        if self._ok:
            with open("/proc/self/status") as f:
                kb = next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
            self.mb = None if kb is None else kb / 1024


def _run_one(method: str, bits: int, protocol_name: str, seed: int, options: dict, runs: Path) -> list[dict]:
    """Fit ``method`` on the protocol's training set and evaluate it there and on ALSO_EVALUATED:
    one row per evaluated protocol (read back from ``runs`` when already measured)."""
    key = (f"v{RUN_VERSION}_{protocol_name}_{method}_{bits}_s{seed}"
           + "".join(f"_{k}{v}" for k, v in sorted(options.items())))
    path = runs / f"{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())["rows"]
        except (OSError, json.JSONDecodeError, KeyError):
            log.warning("ignoring unreadable run file %s", path)
    protocol = load_protocol(protocol_name)
    load_before = os.getloadavg()[0]
    with PeakMemory() as peak:
        coder = fit_method(method, bits, protocol, random_state=seed, **options)
    # The machine is shared: the 1-minute load average before and after the fit goes with its time.
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    history = getattr(coder, "history_", None)
    rows = []
    for name in (protocol_name,) + ALSO_EVALUATED.get(protocol_name, ()):
        result = evaluate_coder(coder, load_protocol(name))
        rows.append({"protocol": name, "trained_on": protocol_name, "method": method, "bits": bits, "seed": seed,
                     "options": options, "map": result["map"],
                     "precision_at_100": result["precision_at_k"].get("100"),
                     "precision_radius2": result.get("precision_radius2"), "pr_curve": result["pr_curve"],
                     "fit_seconds": result["fit_seconds"], "fit_peak_mb": peak.mb, "load_average": load,
                     "torch_threads": torch.get_num_threads(),
                     "best_iteration": getattr(coder, "best_iteration_", None), "history": history})
    write_json(path, {"rows": rows})
    return rows


def _mean_std(values) -> tuple[float, float]:
    values = np.array([v for v in values if v is not None], dtype=np.float64)
    return (float(values.mean()), float(values.std())) if len(values) else (float("nan"), float("nan"))


def _summary(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation (ddof 0) over seeds per (protocol, method, bits), with the range
    of the load average around the fits and the torch thread counts."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["protocol"], row["method"], row["bits"]), []).append(row)
    out = []
    for (protocol, method, bits), members in groups.items():
        entry = {"protocol": protocol, "trained_on": members[0]["trained_on"], "method": method, "bits": bits,
                 "n_seeds": len(members)}
        for name in ("map", "fit_seconds", "fit_peak_mb"):
            entry[name], entry[f"{name}_std"] = _mean_std(r[name] for r in members)
        loads = [v for r in members for v in r.get("load_average") or ()]
        entry["load_min"], entry["load_max"] = (min(loads), max(loads)) if loads else (None, None)
        entry["torch_threads"] = sorted({r["torch_threads"] for r in members if r.get("torch_threads")})
        out.append(entry)
    return out


def _table(summary: list[dict], cells) -> list[dict]:
    """One row per (protocol, method) of ``summary``, in order; ``cells(s)`` gives the columns that
    the summary entry ``s`` (one code length) fills."""
    rows: dict[tuple, dict] = {}
    for s in summary:
        rows.setdefault((s["protocol"], s["method"]), {"protocol": s["protocol"], "method": s["method"]}).update(cells(s))
    return list(rows.values())


def _mean_pm(s: dict, name: str, fmt: str) -> str:
    """``mean ± std`` over the seeds, or the single value when one seed was run."""
    mean = format(s[name], fmt)
    return f"{mean} ± {format(s[f'{name}_std'], fmt)}" if s["n_seeds"] > 1 else mean


def _protocol_tables(summary: list[dict]) -> str:
    """One table per evaluated protocol: a row per method, a column per measured code length for
    the mAP and, on the training protocol, the fit time and peak memory; then the seeds, the load
    average around the fits and the torch threads. Lengths not measured have no column."""
    parts = []
    for protocol in dict.fromkeys(s["protocol"] for s in summary):
        members = [s for s in summary if s["protocol"] == protocol]
        bits = sorted({s["bits"] for s in members})
        own = members[0]["trained_on"] == protocol
        columns = ["method"] + [f"{b} bits" for b in bits]
        if own:
            columns += [f"fit s ({b})" for b in bits] + [f"peak MB ({b})" for b in bits]

        def cells(s):
            out = {f"{s['bits']} bits": _mean_pm(s, "map", ".4f")}
            if own:
                out[f"fit s ({s['bits']})"] = _mean_pm(s, "fit_seconds", ".1f")
                out[f"peak MB ({s['bits']})"] = "" if np.isnan(s["fit_peak_mb"]) else f"{s['fit_peak_mb']:.0f}"
            return out

        seeds = sorted({s["n_seeds"] for s in members})
        loads = [v for s in members for v in (s["load_min"], s["load_max"]) if v is not None]
        threads = sorted({t for s in members for t in s["torch_threads"]})
        note = [f"seeds per cell: {'/'.join(map(str, seeds))}"]
        if own:
            note.append("fit load average (1 min, before and after each fit): "
                        + (f"{min(loads):.2f}–{max(loads):.2f}" if loads else "not recorded"))
            if threads:
                note.append(f"torch threads: {'/'.join(map(str, threads))}")
        else:
            note.append(f"the models fitted on {members[0]['trained_on']} (their fit costs are in its table)")
        parts.append(f"**{protocol}** ({'; '.join(note)})\n\n" + markdown_table(_table(members, cells), columns))
    return "\n".join(parts)


def _claims(summary: list[dict], bits: tuple[int, ...]) -> list[dict]:
    """The paper's orderings on mean mAP: UH-BDNN > DH > ITQ on each unsupervised protocol and
    length (and each half of it), SH-BDNN above every other coder on each supervised one."""
    by = {(s["protocol"], s["method"], s["bits"]): s for s in summary}
    out = []

    def claim(text, holds, values, spread):
        out.append({"claim": text, "holds": bool(holds), "values": values, "largest std": f"{spread:.4f}"})

    for b in bits:
        for p in UNSUPERVISED + tuple(q for p in UNSUPERVISED for q in ALSO_EVALUATED.get(p, ())):
            uh, dh, itq = (by.get((p, m, b)) for m in ("uh-bdnn", "dh", "itq"))
            if None not in (uh, dh, itq):
                claim(f"{p} {b} bits: UH-BDNN > DH > ITQ", uh["map"] > dh["map"] > itq["map"],
                      f"{uh['map']:.4f} / {dh['map']:.4f} / {itq['map']:.4f}", max(s["map_std"] for s in (uh, dh, itq)))
            # Each half on its own, also where the third method was not run.
            for name, one in (("UH-BDNN", uh), ("DH", dh)):
                if one is not None and itq is not None:
                    gap = one["map"] - itq["map"]
                    claim(f"{p} {b} bits: {name} > ITQ", gap > 0, f"{one['map']:.4f} vs {itq['map']:.4f} ({gap:+.4f})",
                          max(one["map_std"], itq["map_std"]))
        for p in SUPERVISED + tuple(q for p in SUPERVISED for q in ALSO_EVALUATED.get(p, ())):
            sh = by.get((p, "sh-bdnn", b))
            rest = [by[(p, m, b)] for m in ("sdh", "itq") if (p, m, b) in by]
            if sh is not None and rest:
                other = max(s["map"] for s in rest)
                claim(f"{p} {b} bits: SH-BDNN > SDH, ITQ", sh["map"] > other,
                      f"{sh['map']:.4f} vs best other {other:.4f}", max(s["map_std"] for s in [sh] + rest))
    sh32 = by.get(("mnist-sup", "sh-bdnn", 32))
    if sh32 is not None:
        claim("mnist-sup 32 bits: SH-BDNN >= 0.95", sh32["map"] >= 0.95, f"{sh32['map']:.4f}", sh32["map_std"])
    return out


def run(out_dir: Path, options: ReproduceOptions = ReproduceOptions()) -> dict:
    """Run the comparison; write ``bdnn.md``, ``bdnn.json``, ``map_vs_bits.png`` and
    ``pr_32bits.png`` (plus ``pr_32bits_<protocol>.png`` per protocol) in ``out_dir``."""
    if options.schedule not in SCHEDULES:
        raise InputError(f"reproduce bdnn has no schedule {options.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    chosen, bits = options.select(UNSUPERVISED + SUPERVISED, QUICK_BITS if options.quick else BITS)
    out_dir = Path(out_dir)
    runs = out_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(options.n_seeds))
    methods = options.select_methods(tuple(dict.fromkeys(UNSUP_METHODS + SUP_METHODS)))
    plan = [(p, m) for p in UNSUPERVISED if p in chosen for m in UNSUP_METHODS if m in methods] + [
        (p, m) for p in SUPERVISED if p in chosen for m in SUP_METHODS if m in methods]
    started = time.perf_counter()
    rows = []
    total = len(plan) * len(bits) * len(seed_list)
    done = 0
    # Seeds outermost: a partial run already holds complete tables for its first seeds. Within a
    # seed the shallow baselines are fitted first (seconds against minutes), so that a run stopped
    # during a deep coder already has them; the tables keep the plan's order.
    fit_order = sorted(plan, key=lambda pm: pm[1] in DEEP)
    for seed in seed_list:
        for protocol_name, method in fit_order:
            for b in bits:
                new = _run_one(method, b, protocol_name, seed, _options(method, options), runs)
                rows.extend(new)
                done += 1
                if options.progress:
                    log.warning("[%d/%d] %s %s %d bits seed %d: mAP %s (fit %.0fs, %.0fs elapsed)", done, total,
                                protocol_name, method, b, seed, " / ".join(f"{r['map']:.4f}" for r in new),
                                new[0]["fit_seconds"] or 0.0, time.perf_counter() - started)
    rows.sort(key=lambda r: plan.index((r["trained_on"], r["method"])))
    summary = _summary(rows)
    claims = _claims(summary, bits)
    names = list(dict.fromkeys(r["protocol"] for r in rows))
    sizes = {name: load_protocol(name).summary() for name in names}
    size_rows = [{"protocol": s["name"], "train": s["n_train"], "database": s["n_database"], "queries": s["n_queries"],
                  "dim": s["dim"], "relevance": ("same class" if s["relevance"] == "class"
                                                 else f"{s['n_neighbors']} exact Euclidean NN")}
                 for s in sizes.values()]
    if options.schedule == "paper":
        deep_note = "Deep coders trained with the authors' schedule (20 outer iterations of 400 L-BFGS iterations); "
    elif options.quick:
        deep_note = f"Deep coders trained with {QUICK_OPTIONS['n_outer']} outer iterations (quick run); "
    else:
        deep_note = "Deep coders with their default (fast) schedule; "
    text = "\n".join([
        "# BDNN reproduction: UH-BDNN / SH-BDNN vs Deep Hashing, ITQ, LSH", "",
        f"mAP over the full Hamming ranking of the database, mean ± standard deviation over {len(seed_list)} "
        f"seed(s) ({', '.join(map(str, seed_list))}); ties: {TIE_RULE}. {deep_note}the best outer iteration "
        "is chosen on a validation split carved from the training set, never on the queries. The models "
        "fitted for mnist-unsup / mnist-sup are also evaluated on mnist-unsup-10k / mnist-sup-10k.", "",
        markdown_table(size_rows, ["protocol", "train", "database", "queries", "dim", "relevance"]),
        "mAP, fit time (seconds, on this machine's CPU threads) and peak resident memory of the process during "
        "the fit (MB, mean over seeds; it includes the loaded protocols); mean ± std (ddof 0) over seeds:", "",
        _protocol_tables(summary),
        "Paper's claims, mean mAP:", "",
        markdown_table(claims, ["claim", "holds", "values", "largest std"]) if claims else "(none measured)\n",
    ])
    (out_dir / "bdnn.md").write_text(text)
    write_json(out_dir / "bdnn.json", {"quick": options.quick, "schedule": options.schedule, "seeds": seed_list,
                                       "bits": list(bits), "tie_rule": TIE_RULE, "protocols": sizes,
                                       "summary": summary, "claims": claims, "runs": rows})
    plot_map_vs_bits(summary, out_dir / "map_vs_bits.png", "BDNN reproduction: mAP vs code length")
    pr_bits = 32 if 32 in bits else bits[0]
    for i, protocol_name in enumerate(names):
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
