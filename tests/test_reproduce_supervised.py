"""`reproduce supervised` and `reproduce gsl` end to end on a tiny slice of MNIST (the real runs are
far longer; here every step runs once, and a rerun reads the cached results back)."""
import dataclasses
import json

import numpy as np
import pytest

from deepcodes.data import load_protocol
from deepcodes.errors import InputError
from deepcodes.reproduce import ReproduceOptions
from deepcodes.reproduce import gsl as rep_gsl
from deepcodes.reproduce import supervised as rep_sup


@pytest.fixture(scope="module")
def tiny_mnist():
    p = load_protocol("mnist-sup")
    rows = np.arange(0, 60000, 100)                   # 600 training = database rows
    return dataclasses.replace(p, name="tiny-mnist", train=p.train[rows], train_labels=p.train_labels[rows],
                               database=p.train[rows], database_labels=p.train_labels[rows],
                               queries=p.queries[:40], query_labels=p.query_labels[:40])


def test_reproduce_supervised_end_to_end(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(rep_sup, "PROTOCOLS", ("tiny-mnist",))
    monkeypatch.setattr(rep_sup, "load_protocol", lambda name: tiny_mnist)
    monkeypatch.setitem(rep_sup.NETWORKS, "tiny-mnist", dict(backbone="mlp", hidden=(64,), epochs=2))
    monkeypatch.setitem(rep_sup.QUICK_EPOCHS, "tiny-mnist", 2)
    out = rep_sup.run(tmp_path, ReproduceOptions(quick=True))
    data = json.loads((tmp_path / "supervised.json").read_text())
    methods = {r["method"] for r in data["runs"]}
    assert methods == {"sh-bdnn", "dsh", "dnnh", "subic", "subic-hamming", "sdh", "gsl", "itq"}
    for r in data["runs"]:
        assert 0 < r["map"] <= 1 and r["fit_seconds"] >= 0
        assert (r["precision_radius2"] is None) == (r["method"] in ("subic", "gsl"))
    assert "| tiny-mnist | dsh |" in out["table"] and "SH-BDNN's place" in out["table"]
    assert (tmp_path / "supervised_map_vs_bits.png").stat().st_size > 0
    again = rep_sup.run(tmp_path, ReproduceOptions(quick=True))      # every run read back from runs/
    assert again["summary"] == out["summary"]
    # SuBiC's run file names its block count (the default changed once: old files must not match).
    assert [r["options"]["n_blocks"] for r in data["runs"] if r["method"] == "subic"] == [16]
    assert any("_n_blocks16" in f.name for f in (tmp_path / "runs").glob("*subic*.json"))
    narrowed = rep_sup.run(tmp_path, ReproduceOptions(quick=True, protocols=("tiny-mnist",), bits=(32,)))
    assert narrowed["summary"] == out["summary"]


def test_reproduce_gsl_end_to_end(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(rep_gsl, "QUICK", {"tiny-mnist": rep_gsl.Schedule(
        warm=1, fine=2, families=(("classification", (32,), None),), lambdas=(0.1, 1.0), alphas=(0.5,))})
    monkeypatch.setattr(rep_gsl, "load_protocol", lambda name: tiny_mnist)
    monkeypatch.setitem(rep_gsl.NETWORK, "max_train", 300)
    out = rep_gsl.run(tmp_path, ReproduceOptions(quick=True))
    data = json.loads((tmp_path / "gsl.json").read_text())
    got = {(r["family"], r["variant"]) for r in data["summary"]}
    assert {("classification", v) for v in rep_gsl.MAIN_VARIANTS + ("gsl-opq", "gsl-rq")} <= got
    runs = [r for r in data["runs"] if r["variant"] != "float"]
    assert all(1 <= r["best_epoch"] <= 2 and 0 < r["map"] <= 1 for r in runs)
    late = next(r for r in runs if r["variant"] == "gsl-late")
    assert late["best_epoch"] == 2            # the only epoch trained with the layer on
    assert data["tuning"]["tiny-mnist/classification"]["lambda"] in (0.1, 1.0)
    assert "gsl >= quant-loss" in out["table"]
    assert data["complete"] and "Partial" not in out["table"]
    assert (tmp_path / "gsl_map_vs_bits.png").stat().st_size > 0
    again = rep_gsl.run(tmp_path, ReproduceOptions(quick=True))
    assert again["summary"] == out["summary"]


def test_quick_gsl_is_sized_for_minutes():
    # --quick trains post hoc, quant-loss and GSL once at one length: at most 200,000 training rows
    # passed through the CNN in all (its measured time under load: docs/gsl.md).
    total = 0
    for name, s in rep_gsl.QUICK.items():
        assert [bits for _, bits, _ in s.families] == [(32,)]
        runs = len(s.lambdas) + len(s.alphas) + 1 + 4 * s.ablations     # tuning, post hoc, ablations
        total += (s.warm + s.fine * runs) * (s.n_train or len(load_protocol(name).train))
    assert total <= 200_000


@pytest.mark.parametrize("name", ["gsl", "supervised"])
def test_reproductions_take_the_device(name, tmp_path):
    import torch
    from typer.testing import CliRunner

    from deepcodes.cli import app

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this checks the clear error without one")
    result = CliRunner().invoke(app, ["reproduce", name, "--quick", "--device", "cuda", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "cuda" in result.output


def test_options_select_narrows_in_the_reproductions_order():
    options = ReproduceOptions(protocols=("b", "a"), bits=(64,))
    assert options.select(("a", "b", "c"), (16, 32, 64)) == (("a", "b"), (64,))
    assert ReproduceOptions().select(("a", "b"), (16, 32)) == (("a", "b"), (16, 32))
    with pytest.raises(InputError, match="no code length 48; it has: 16, 32"):
        ReproduceOptions(bits=(48,)).select(("a",), (16, 32))


@pytest.mark.parametrize("name", ["gsl", "supervised", "bdnn"])
def test_reproductions_refuse_a_protocol_they_do_not_have(name, tmp_path):
    from typer.testing import CliRunner

    from deepcodes.cli import app

    result = CliRunner().invoke(app, ["reproduce", name, "--protocol", "no-such", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no protocol 'no-such'" in result.output and "mnist-sup" in result.output
    assert not (tmp_path / "o").exists()
