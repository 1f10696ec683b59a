"""Reproduction and ablation of GSL (Liu & Lu, 2016) on ``mnist-sup`` and ``cifar10-sup``.

Per protocol, loss family (classification, contrastive, triplet) and seed, one representation is
trained first (the warm-up: the small CNN, 64-d output scaled to unit norm, no quantizer, the whole
training set, cosine-decayed Adam, augmentation on CIFAR-10); every variant then trains ``fine``
more epochs from it with the same schedule and batch order, and differs only in its quantization
awareness:

* post hoc: no awareness, PQ fitted on the final representations (also searched exactly: float);
* quant-loss: ``λ ||z - q(z)||²`` added (q refitted every epoch), λ tuned on the validation split;
* gsl: the Gradient Snapping Layer, α tuned on the validation split;
* gsl+qloss: GSL with a small quantization loss (λ/10), 32 bits;
* gsl-late: GSL switched on only for the second half of the fine epochs, 32 bits;
* gsl-opq, gsl-rq: GSL with OPQ and RQ codebooks, 32 bits.

Every fit keeps the epoch with the best validation mAP on a split of the *training* set (the warm
model's split, inherited by every variant), never on the queries; λ and α are chosen on that
split too (seed 0, 32 bits). Each run's result is saved under ``out_dir/runs`` as it is measured
(warm networks as model files), so an interrupted reproduction resumes. Writes ``gsl.md``,
``gsl.json`` and plots.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import persist
from ..coders.gsl import GSLQuantizer
from ..data import load_protocol
from ..errors import FormatError, InputError
from ..eval import TIE_RULE, evaluate_search
from ..eval.relevance import relevance_for
from ..eval.report import markdown_table, plot_map_vs_bits, plot_pr_curves, write_json
from ..index import ADCIndex
from . import ReproduceOptions
from .records import cached_json, group_rows

log = logging.getLogger(__name__)

BITS = (16, 32, 64)
LAMBDAS = (0.03, 0.1, 0.3, 1.0, 3.0)
ALPHAS = (0.25, 0.5, 1.0)
NETWORK = dict(backbone="cnn", dim=64, hidden=(256,), normalize=True, scale=16.0, batch_size=128,
               lr_schedule="cosine", max_train=20_000)
FAMILIES = {"classification": dict(loss="classification"),
            "contrastive": dict(loss="contrastive", margin=1.0),
            "triplet": dict(loss="triplet", margin=0.5)}


@dataclass(frozen=True)
class Schedule:
    """Epochs of the warm-up and of each variant's end of training, their learning rates, training
    rows used (None: all), augmentation, each loss family's code lengths and number of seeds
    (None: the reproduction's ``--seeds``), the grids λ and α are tuned over, and whether the
    ablations (GSL + quantization loss, GSL late, GSL-OPQ, GSL-RQ) run."""

    warm: int
    fine: int
    warm_lr: float = 2e-3
    fine_lr: float = 5e-4
    n_train: int | None = None
    augment: bool = False
    families: tuple = (("classification", BITS, None), ("contrastive", (32,), 1), ("triplet", (32,), 1))
    lambdas: tuple = LAMBDAS
    alphas: tuple = ALPHAS
    ablations: bool = True


# The contrastive and triplet families run one seed at 32 bits: on 2 shared CPU cores the three
# families at three seeds and three lengths would take a day. On mnist-sup the warm-up's validation
# mAP levels off at 0.99 by its 5th epoch (of a 10-epoch cosine schedule, /work/runs logs of
# 2026-12-02), so 5 warm-up epochs (each 1-5 minutes on one shared CPU core) and narrower grids
# around the values the unit-norm representation needs.
# On cifar10-sup the first grids' best values sat at their edges (validation mAP still rising at
# lambda = 3 and at alpha = 0.25, seed 0, 32 bits, 2026-12-03), so both grids go one step further
# each way the trend pointed, for the baseline and for GSL alike.
# On an idle core (2026-12-03) a mnist-sup variant's 2 fine epochs take 25-55 s, so there the
# contrastive family runs every seed too (at 32 bits), and the triplet family, the one where GSL
# led the quantization loss at 32 bits on every seed, at every length.
SCHEDULES = {"mnist-sup": Schedule(warm=5, fine=2, lambdas=(0.1, 0.3, 1.0), alphas=(0.5, 1.0),
                                   families=(("classification", BITS, None), ("contrastive", (32,), None),
                                             ("triplet", BITS, None))),
             "cifar10-sup": Schedule(warm=60, fine=10, augment=True, lambdas=(*LAMBDAS, 10.0, 30.0),
                                     alphas=(0.125, *ALPHAS))}
# Quick: post hoc, quant-loss and GSL once, on a subset, with two-point grids and no ablations
# (each run costs about a minute on one loaded CPU core, most of it the final evaluation over the
# whole database; docs/gsl.md).
QUICK = {"mnist-sup": Schedule(warm=2, fine=2, n_train=10_000, families=(("classification", (32,), None),),
                               lambdas=(0.1, 1.0), alphas=(0.5,), ablations=False),
         "cifar10-sup": Schedule(warm=4, fine=2, augment=True, families=(("classification", (32,), None),),
                                 lambdas=(0.1, 1.0), alphas=(0.5,), ablations=False)}
MAIN_VARIANTS = ("float", "post-hoc", "quant-loss", "gsl", "gsl+qloss", "gsl-late")


def run(out_dir: Path, options: ReproduceOptions = ReproduceOptions()) -> dict:
    """Run the comparison (``quick``: one seed, 32 bits, short schedules). Returns ``{"table": ...}``."""
    if options.schedule != "default":
        raise InputError(f"reproduce gsl has no schedule {options.schedule!r}")
    if options.methods:
        raise InputError("reproduce gsl has no choice of methods (--method)")
    schedules = QUICK if options.quick else SCHEDULES
    chosen, bits = options.select(tuple(schedules), tuple(sorted({b for s in schedules.values()
                                                                  for _, bl, _ in s.families for b in bl})))
    schedules = {name: s for name, s in schedules.items() if name in chosen}
    out_dir = Path(out_dir)
    runs = out_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records, tuning = [], {}
    # Family by family (classification first); within one, the comparison the targets are about
    # (post hoc, quant-loss, GSL) over every seed before the ablations. The outputs are rewritten
    # after every block, so an interrupted run leaves a table of what finished, marked partial.
    plan = [(family, name, bits_list, seeds) for family in FAMILIES for name, schedule in schedules.items()
            for fam, bits_list, seeds in schedule.families if fam == family and set(bits_list) & set(bits)]
    result = None
    for i, (family, name, bits_list, seeds) in enumerate(plan):
        study = Study(load_protocol(name), schedules[name], family, options.device, runs, options.progress)
        tuning[f"{name}/{family}"] = study.tune()
        seed_list = range(options.n_seeds if seeds is None else min(seeds, options.n_seeds))
        for ablations in (False, True) if schedules[name].ablations else (False,):
            for seed in seed_list:
                records += study.seed_runs(seed, [b for b in bits_list if b in bits], ablations)
                done = i == len(plan) - 1 and ablations == schedules[name].ablations and seed == seed_list[-1]
                result = write_outputs(out_dir, records, tuning, schedules, options.n_seeds,
                                       time.perf_counter() - started, done)
    return result or write_outputs(out_dir, records, tuning, schedules, options.n_seeds, 0.0, True)


def write_outputs(out_dir: Path, records, tuning, schedules, n_seeds: int, seconds: float, done: bool) -> dict:
    """Write ``gsl.md``, ``gsl.json`` and the plots from the records so far (``done``: all of the
    plan; otherwise the table says it is partial). Returns the result dict."""
    summary = summarise(records)
    table = tables(summary, tuning, n_seeds, seconds)
    if not done:
        table = ("**Partial**: the reproduction was still running (or was stopped) when this was written; "
                 "missing cells were not run.\n\n" + table)
    result = {"table": table, "summary": summary, "runs": records, "tuning": tuning, "tie_rule": TIE_RULE,
              "complete": done,
              "settings": {"network": NETWORK, "families": FAMILIES,
                           "schedules": {k: asdict(v) for k, v in schedules.items()}, "seeds": n_seeds},
              "seconds": round(seconds, 1)}
    (out_dir / "gsl.md").write_text(table)
    write_json(out_dir / "gsl.json", result)
    main = [r for r in summary if r["family"] == "classification" and r["variant"] in ("float", "post-hoc",
                                                                                        "quant-loss", "gsl")]
    if main:
        plot_map_vs_bits([{"method": r["variant"], "protocol": r["protocol"], "bits": r["bits"], "map": r["map_mean"]}
                          for r in main], out_dir / "gsl_map_vs_bits.png", "GSL vs its baselines (mean mAP)")
    for name in schedules:
        curves = [{"method": r["variant"], "precision": r["pr_curve"]["precision"], "recall": r["pr_curve"]["recall"]}
                  for r in records if r["protocol"] == name and r["family"] == "classification" and r["bits"] == 32
                  and r["seed"] == 0 and r["variant"] in MAIN_VARIANTS]
        if curves:
            plot_pr_curves(curves, out_dir / f"gsl_pr_{name}_32bits.png", f"{name}, 32 bits, seed 0")
    return result


class Study:
    """The runs of one protocol and loss family: warm-ups, tuning and variants, cached in ``runs``."""

    def __init__(self, protocol, schedule: Schedule, family: str, device: str, runs: Path, progress: bool):
        self.protocol, self.schedule, self.family = protocol, schedule, family
        self.device, self.runs, self.progress = device, runs, progress
        X, y = protocol.train, protocol.train_labels
        if schedule.n_train is not None and schedule.n_train < len(X):
            rows = np.sort(np.random.default_rng(0).choice(len(X), schedule.n_train, replace=False))
            X, y = X[rows], y[rows]
        self.X, self.y = X, y
        self._warm: dict[int, GSLQuantizer] = {}
        self.lam: float | None = None
        self.alpha: float | None = None

    def _key(self, *parts, fine: bool = True) -> str:
        s = self.schedule
        epochs = f"w{s.warm}" + (f"f{s.fine}" if fine else "")
        return "_".join([self.protocol.name, self.family, f"{epochs}n{s.n_train or 'all'}", *map(str, parts)])

    def model(self, bits: int, seed: int, **kw) -> GSLQuantizer:
        """An unfitted GSLQuantizer with the study's network, loss family and device."""
        return GSLQuantizer(n_bits=bits, random_state=seed, device=self.device, augment=self.schedule.augment,
                            **NETWORK, **FAMILIES[self.family], **kw)

    def warm(self, seed: int) -> GSLQuantizer:
        """The seed's warm-up network (trained once, saved, reloaded on later runs)."""
        if seed not in self._warm:
            path = self.runs / f"{self._key('warm', f's{seed}', fine=False)}.dc"
            model = None
            if path.is_file():
                try:
                    model = persist.load(path)
                except FormatError:
                    log.warning("ignoring unreadable warm-up file %s", path)
            if model is None:
                started = time.perf_counter()
                model = self.model(32, 1000 + seed, quantization="none", epochs=self.schedule.warm,
                                    lr=self.schedule.warm_lr, verbose=self.progress).fit(self.X, self.y)
                model.save(path, meta={"fit_seconds": round(time.perf_counter() - started, 1)})
            self._warm[seed] = model
        return self._warm[seed]

    def variant(self, name: str, bits: int, seed: int, **kw) -> dict:
        """Fit (or read back) one variant fine-tuned from the seed's warm-up; its result record."""
        settings = "".join(f"_{k}{v}" for k, v in sorted(kw.items()) if k != "quantization")
        path = self.runs / f"{self._key(name, bits, f's{seed}')}{settings}.json"
        return cached_json(path, lambda: self._fit_variant(name, bits, seed, kw))

    def _fit_variant(self, name: str, bits: int, seed: int, kw: dict) -> dict:
        warm = self.warm(seed)
        started = time.perf_counter()
        model = self.model(bits, 2000 + seed, epochs=self.schedule.fine, lr=self.schedule.fine_lr, init=warm,
                            **kw).fit(self.X, self.y)
        fit_seconds = time.perf_counter() - started
        Zdb, Zq = model.embed(self.protocol.database), model.embed(self.protocol.queries)
        rec = {"protocol": self.protocol.name, "family": self.family, "variant": name, "bits": bits, "seed": seed,
               "settings": kw,
               "fit_seconds": round(fit_seconds, 1), "best_epoch": model.best_epoch_,
               "validation_map": model.validation_score_,
               "quantization_error": float(model.quantizer_.quantization_error(Zdb[:5000]))}
        rec.update(_metrics(adc_search(model, Zdb, Zq), self.protocol, len(Zdb)))
        if name == "post-hoc":
            rec["float"] = _metrics(exact_search(Zdb, Zq), self.protocol, len(Zdb))
        log.info("%s %s %s %d bits seed %d: mAP %.4f (validation %.4f)", self.protocol.name, self.family, name,
                 bits, seed, rec["map"], rec["validation_map"])
        return rec

    def tune(self) -> dict:
        """λ of the quantization loss and α of GSL with the best validation mAP (seed 0, 32 bits)."""
        lam = {x: self.variant("quant-loss", 32, 0, quantization="loss", quant_weight=x)["validation_map"]
               for x in tqdm(self.schedule.lambdas, disable=not self.progress,
                             desc=f"{self.protocol.name} {self.family} λ")}
        alpha = {x: self.variant("gsl", 32, 0, **_gsl(x))["validation_map"]
                 for x in tqdm(self.schedule.alphas, disable=not self.progress,
                               desc=f"{self.protocol.name} {self.family} α")}
        self.lam, self.alpha = max(lam, key=lam.get), max(alpha, key=alpha.get)
        return {"bits": 32, "seed": 0, "lambda": self.lam, "alpha": self.alpha,
                "validation_map_by_lambda": {str(k): v for k, v in lam.items()},
                "validation_map_by_alpha": {str(k): v for k, v in alpha.items()}}

    def seed_runs(self, seed: int, bits_list, ablations: bool = False) -> list[dict]:
        """One seed's post-hoc, quant-loss and GSL runs at each code length, or (``ablations``) its
        GSL + quantization loss, GSL late, GSL-OPQ and GSL-RQ runs (32 bits, classification only)."""
        gsl = _gsl(self.alpha)
        out = []
        for bits in bits_list:
            if not ablations:
                plan = [("post-hoc", dict(quantization="none")),
                        ("quant-loss", dict(quantization="loss", quant_weight=self.lam)),
                        ("gsl", gsl)]
            elif self.family == "classification" and bits == 32:
                plan = [("gsl+qloss", {**gsl, "quant_weight": self.lam / 10}),
                        ("gsl-late", {**gsl, "quant_start": self.schedule.fine // 2}),
                        ("gsl-opq", {**gsl, "quantizer": "opq"}), ("gsl-rq", {**gsl, "quantizer": "rq"})]
            else:
                plan = []
            for name, kw in plan:
                rec = self.variant(name, bits, seed, **kw)
                out.append(rec)
                if name == "post-hoc":
                    out.append({k: rec[k] for k in ("protocol", "family", "bits", "seed")}
                               | {"variant": "float", **rec["float"]})
        return out


def _gsl(alpha: float) -> dict:
    return dict(quantization="gsl", alpha=alpha, n_neighbors=16, snap="direction")


def adc_search(model: GSLQuantizer, Zdb: np.ndarray, Zq: np.ndarray):
    """(search function, queries) of the ADC search over the database codes (as evaluate_coder)."""
    index = ADCIndex(model.quantizer_)
    index.add(Zdb)
    return index.search, Zq


def exact_search(Zdb: np.ndarray, Zq: np.ndarray):
    """(search function, queries) of exact Euclidean search of the float representations."""
    db_norm = np.einsum("nd,nd->n", Zdb, Zdb)

    def search(Q, k):
        d = np.maximum(np.einsum("qd,qd->q", Q, Q)[:, None] - 2 * Q @ Zdb.T + db_norm[None], 0)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, order, axis=1), order

    return search, Zq


def _metrics(search_and_queries, protocol, n_db: int) -> dict:
    search, queries = search_and_queries
    r = evaluate_search(search, queries, relevance_for(protocol), n_db)
    return {"map": r["map"], "precision_at_1000": r["precision_at_k"].get("1000"), "pr_curve": r["pr_curve"]}


def summarise(records) -> list[dict]:
    """Mean and standard deviation (over seeds) of mAP per protocol, family, variant and bits."""
    out = []
    for (protocol, family, variant, bits), rs in group_rows(records, ("protocol", "family", "variant", "bits")).items():
        maps = np.array([r["map"] for r in rs])
        out.append({"protocol": protocol, "family": family, "variant": variant, "bits": bits,
                    "map_mean": float(maps.mean()), "map_std": float(maps.std()), "n_seeds": len(rs),
                    "quantization_error": _mean(r.get("quantization_error") for r in rs),
                    "fit_seconds": _mean(r.get("fit_seconds") for r in rs)})
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def tables(summary, tuning, seeds, seconds) -> str:
    """The markdown tables: mAP of every variant per protocol, family and length; GSL against the
    tuned quantization loss; the tuned λ and α."""
    by = {(r["protocol"], r["family"], r["variant"], r["bits"]): r for r in summary}

    def cell(key):
        r = by.get(key)
        if r is None:
            return None
        # A partial run may have fewer seeds in some cells: say how many.
        fewer = f" (n={r['n_seeds']})" if r["n_seeds"] != seeds else ""
        return f"{r['map_mean']:.4f} ± {r['map_std']:.4f}{fewer}"

    variants = list(dict.fromkeys(r["variant"] for r in summary))
    order = [v for v in (*MAIN_VARIANTS, "gsl-opq", "gsl-rq") if v in variants]
    rows, verdicts = [], []
    for protocol, family, bits in dict.fromkeys((r["protocol"], r["family"], r["bits"]) for r in summary):
        rows.append({"protocol": protocol, "loss": family, "bits": bits,
                     **{v: cell((protocol, family, v, bits)) for v in order}})
        g, q = by.get((protocol, family, "gsl", bits)), by.get((protocol, family, "quant-loss", bits))
        if g and q:
            verdicts.append({"protocol": protocol, "loss": family, "bits": bits, "gsl": g["map_mean"],
                             "quant-loss": q["map_mean"], "difference": g["map_mean"] - q["map_mean"],
                             "gsl >= quant-loss": bool(g["map_mean"] >= q["map_mean"])})
    tune_rows = [{"protocol / loss": k, "λ": v["lambda"], "α": v["alpha"],
                  "validation mAP by λ": ", ".join(f"{x}: {m:.4f}" for x, m in v["validation_map_by_lambda"].items()),
                  "validation mAP by α": ", ".join(f"{x}: {m:.4f}" for x, m in v["validation_map_by_alpha"].items())}
                 for k, v in tuning.items()]
    text = (f"mAP (mean ± std over {seeds} seed(s)) by exhaustive ADC over the whole database (float: exact "
            f"Euclidean search of the post-hoc network); ties: {TIE_RULE}. Same CNN, warm-up and fine-tuning "
            "schedule for every variant; PQ with bits/8 sub-quantizers of 256 codewords.\n\n")
    text += markdown_table(rows, ["protocol", "loss", "bits", *order])
    text += "\nGSL against the tuned quantization loss (mean mAP):\n\n"
    text += markdown_table(verdicts, ["protocol", "loss", "bits", "gsl", "quant-loss", "difference",
                                      "gsl >= quant-loss"])
    text += "\nλ and α chosen on the validation split (seed 0, 32 bits):\n\n"
    text += markdown_table(tune_rows, ["protocol / loss", "λ", "α", "validation mAP by λ", "validation mAP by α"])
    text += f"\nTotal time {seconds / 60:.1f} min.\n"
    return text
