import json

import numpy as np
import pytest

from deepcodes.errors import InputError
from deepcodes.reproduce import ReproduceOptions
from deepcodes.reproduce import bdnn as rep
from deepcodes.reproduce import gsl, supervised


def _row(protocol, method, bits, seed, m, trained_on=None):
    return {"protocol": protocol, "trained_on": trained_on or protocol, "method": method, "bits": bits,
            "seed": seed, "map": m, "fit_seconds": 10.0 + seed, "fit_peak_mb": 100.0,
            "load_average": [0.5 + seed, 1.0 + seed], "torch_threads": 1}


def test_summary_tables_and_claims_over_seeds():
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.02), (2, 0.04)):
        for protocol, trained_on in (("sift10k", None), ("mnist-unsup-10k", "mnist-unsup")):
            for method, m in (("uh-bdnn", 0.40), ("dh", 0.30), ("itq", 0.35)):
                rows.append(_row(protocol, method, 32, seed, m + shift, trained_on))
    summary = rep._summary(rows)
    uh = next(s for s in summary if s["protocol"] == "sift10k" and s["method"] == "uh-bdnn")
    assert uh["map"] == pytest.approx(0.42) and uh["map_std"] == pytest.approx(np.std([0.40, 0.42, 0.44]))
    assert uh["fit_seconds"] == pytest.approx(11.0) and uh["n_seeds"] == 3
    tables = rep._protocol_tables(summary)
    sift, mnist10k = tables.split("**mnist-unsup-10k**")
    assert "| method | 32 bits | fit s (32) | peak MB (32) |" in sift
    assert "| uh-bdnn | 0.4200 ± 0.0163 | 11.0 ± 0.8 | 100 |" in sift
    assert "seeds per cell: 3" in sift and "0.50–3.00" in sift and "torch threads: 1" in sift
    # Costs once per training set: the evaluation-only protocol has mAP columns only.
    assert "| method | 32 bits |\n" in mnist10k and "fitted on mnist-unsup" in mnist10k
    one_seed = rep._protocol_tables(rep._summary([r for r in rows if r["seed"] == 0]))
    assert "| uh-bdnn | 0.4000 | 10.0 | 100 |" in one_seed     # no ± over a single seed
    claims = {c["claim"]: c for c in rep._claims(summary, (32,))}
    assert claims["sift10k 32 bits: UH-BDNN > ITQ"]["holds"]
    assert not claims["sift10k 32 bits: UH-BDNN > DH > ITQ"]["holds"]
    assert not claims["mnist-unsup-10k 32 bits: DH > ITQ"]["holds"]
    without_dh = {c["claim"] for c in rep._claims([s for s in summary if s["method"] != "dh"], (32,))}
    assert without_dh == {"sift10k 32 bits: UH-BDNN > ITQ", "mnist-unsup-10k 32 bits: UH-BDNN > ITQ"}


def test_peak_memory_measures_the_block():
    with rep.PeakMemory() as peak:
        block = np.ones(20_000_000)
    del block
    assert peak.mb is None or peak.mb > 150


def test_run_fits_once_evaluates_every_protocol_of_the_training_set_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(rep, "UNSUPERVISED", ())
    monkeypatch.setattr(rep, "SUPERVISED", ("digits-sup",))
    monkeypatch.setattr(rep, "SUP_METHODS", ("sh-bdnn", "itq"))
    monkeypatch.setattr(rep, "QUICK_BITS", (16,))
    monkeypatch.setattr(rep, "QUICK_OPTIONS", {"n_outer": 1, "n_inner": 5})
    fitted = []
    real_fit = rep.fit_method

    def recording_fit(method, *args, **kwargs):
        fitted.append(method)
        return real_fit(method, *args, **kwargs)

    monkeypatch.setattr(rep, "fit_method", recording_fit)
    out = rep.run(tmp_path, ReproduceOptions(quick=True))
    assert fitted == ["itq", "sh-bdnn"]      # the baseline first; the table keeps the plan's order
    assert "**digits-sup**" in out["table"] and out["table"].index("| sh-bdnn |") < out["table"].index("| itq |") and "SH-BDNN > SDH, ITQ" in out["table"]
    saved = json.loads((tmp_path / "bdnn.json").read_text())
    sh = next(r for r in saved["runs"] if r["method"] == "sh-bdnn")
    assert sh["options"] == {"n_outer": 1, "n_inner": 5} and len(sh["history"]) == 2
    assert sh["fit_peak_mb"] is None or sh["fit_peak_mb"] > 0
    assert (tmp_path / "map_vs_bits.png").is_file() and (tmp_path / "pr_16bits.png").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("a measured configuration was fitted again")

    monkeypatch.setattr(rep, "fit_method", refuse)
    again = rep.run(tmp_path, ReproduceOptions(quick=True))
    assert again["table"] == out["table"]
    only = rep.run(tmp_path, ReproduceOptions(quick=True, methods=("itq",)))["table"]
    assert "| itq |" in only and "| sh-bdnn |" not in only


def test_schedules_and_methods(tmp_path):
    assert rep._options("uh-bdnn", ReproduceOptions(schedule="paper")) == {"schedule": "paper"}
    assert rep._options("itq", ReproduceOptions(schedule="paper")) == {}
    assert rep._options("dh", ReproduceOptions(quick=True)) == rep.QUICK_OPTIONS
    with pytest.raises(InputError, match="schedule"):
        rep.run("unused", ReproduceOptions(schedule="slow"))
    with pytest.raises(InputError, match="no method 'pca'"):
        rep.run(tmp_path, ReproduceOptions(methods=("pca",)))
    for other in (gsl, supervised):
        with pytest.raises(InputError, match="choice of methods"):
            other.run(tmp_path, ReproduceOptions(methods=("itq",)))
