import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from deepcodes.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def sift_hdf5(tmp_path_factory):
    """An ann-benchmarks file from the bundled SIFT10K: 2,000 train rows, 20 test queries, exact top-100."""
    from deepcodes.data import exact_knn, load_sift10k, write_ann_hdf5

    base, queries, _ = load_sift10k()
    train, test = base[:2000].astype(np.float32), queries[:20].astype(np.float32)
    dist, ids = exact_knn(train, test, 100)
    path = tmp_path_factory.mktemp("data") / "sift.hdf5"
    write_ann_hdf5(path, train, test, ids, np.sqrt(dist))
    return path


def test_datasets_lists_bundled_data_and_protocols():
    result = run("datasets", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    names = {d["name"] for d in info["datasets"]}
    assert {"mnist", "cifar10", "sift10k", "digits"} <= names
    assert all(d["present"] for d in info["datasets"])
    assert {"mnist-unsup", "mnist-sup", "cifar10-sup", "sift10k", "digits-sup"} <= set(info["protocols"])


def test_methods_lists_shallow_coders():
    info = json.loads(run("methods", "--json").output)
    assert {"lsh", "itq", "pq", "opq", "rq"} <= set(info)


def _fit_and_evaluate(tmp_path, method, bits, protocol="digits-sup"):
    model = tmp_path / f"{method}.safetensors"
    result = run("fit", method, "--bits", bits, "--protocol", protocol, "-o", model, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["method"] == method
    result = run("evaluate", model, "--protocol", protocol, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_fit_then_evaluate_json(tmp_path):
    itq = _fit_and_evaluate(tmp_path, "itq", 16)
    lsh = _fit_and_evaluate(tmp_path, "lsh", 16)
    for key in ("map", "precision_at_k", "protocol", "bits", "n_database", "n_queries", "tie_rule"):
        assert key in itq
    assert itq["protocol"] == "digits-sup" and itq["bits"] == 16
    assert itq["n_database"] == 1597 and itq["n_queries"] == 200
    assert itq["map"] > lsh["map"]
    pq = _fit_and_evaluate(tmp_path, "pq", 16)
    assert pq["bits"] == 16 and "precision_radius2" not in pq


def test_evaluate_prints_a_table(tmp_path):
    model = tmp_path / "m"
    assert run("fit", "itq", "--bits", 8, "--protocol", "digits-sup", "-o", model).exit_code == 0
    result = run("evaluate", model, "--protocol", "digits-sup", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "mAP" in result.output and "precision@10" in result.output


@pytest.mark.parametrize("args, message", [
    (("fit", "nonsense", "--bits", 16, "--protocol", "digits-sup", "-o", "x"), "unknown method"),
    (("fit", "itq", "--bits", 16, "--protocol", "nope", "-o", "x"), "unknown protocol"),
    (("fit", "itq", "--bits", 12, "--protocol", "digits-sup", "-o", "x"), "multiple of 8"),
    (("fit", "itq", "--bits", 128, "--protocol", "digits-sup", "-o", "x"), "64-dimensional"),
    (("fit", "itq", "--bits", 16, "--protocol", "digits-sup", "-o", "x", "--option", "bogus"), "key=value"),
    (("reproduce", "nothing"), "unknown reproduction"),
])
def test_cli_bad_input_is_a_clear_error(tmp_path, args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")


def test_evaluate_missing_corrupt_and_mismatched_models(tmp_path):
    result = run("evaluate", tmp_path / "absent", "--protocol", "digits-sup")
    assert result.exit_code == 2 and "no such" in result.output
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00" * 64)
    result = run("evaluate", junk, "--protocol", "digits-sup")
    assert result.exit_code == 2 and "not a deepcodes file" in result.output
    model = tmp_path / "digits-itq"
    assert run("fit", "itq", "--bits", 16, "--protocol", "digits-sup", "-o", model).exit_code == 0
    result = run("evaluate", model, "--protocol", "sift10k")
    assert result.exit_code == 2 and "64-dimensional" in result.output.replace("\n", " ")


def test_demo_writes_results_table_and_plot(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--out", out, "--methods", "lsh,itq", "--bits", "16")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["protocol"]): r["map"] for r in data["results"]}
    assert set(rows) == {(m, p) for m in ("lsh", "itq") for p in ("mnist-unsup", "mnist-sup")}
    for protocol in ("mnist-unsup", "mnist-sup"):
        assert rows[("itq", protocol)] > rows[("lsh", protocol)]
    assert (out / "map_vs_bits.png").stat().st_size > 1000
    assert "| itq |" in (out / "results.md").read_text()


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_verify_reports_an_intact_file_and_refuses_a_corrupt_one(tmp_path):
    model = tmp_path / "m.dcx"
    assert run("fit", "lsh", "--bits", 16, "--protocol", "digits-sup", "-o", model).exit_code == 0
    result = run("verify", model)
    assert result.exit_code == 0 and "ok (LSH, format version 2" in result.output
    report = json.loads(run("verify", model, "--json").output)
    assert report["verified"] is True and report["class"] == "LSH"
    raw = bytearray(model.read_bytes())
    raw[-3] ^= 0x40
    model.write_bytes(bytes(raw))
    _one_line_error(run("verify", model), "does not match its checksum")
    _one_line_error(run("evaluate", model, "--protocol", "digits-sup"), "checksum")
    _one_line_error(run("verify", tmp_path), "is a folder")


def test_output_targets_that_are_not_regular_files_fail_before_fitting(tmp_path, monkeypatch):
    import deepcodes.pipeline

    monkeypatch.setattr(deepcodes.pipeline, "fit_method", lambda *a, **k: pytest.fail("fitted before checking -o"))
    real = tmp_path / "real"
    real.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(real)
    os.mkfifo(tmp_path / "fifo")
    for target, message in ((tmp_path, "is a folder"), (tmp_path / "link", "symbolic link"),
                            (tmp_path / "fifo", "not a regular file"), ("/dev/full", "not a regular file"),
                            (real / "below-a-file", "not a folder")):
        _one_line_error(run("fit", "lsh", "--bits", 16, "--protocol", "digits-sup", "-o", target), message)
    assert real.read_bytes() == b"keep"


def test_demo_refuses_code_lengths_that_are_not_integers(tmp_path):
    _one_line_error(run("demo", "--out", tmp_path / "d", "--bits", "16,x"), "comma-separated integers")


def test_os_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch):
    from deepcodes import persist

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(persist, "verify", denied)
    _one_line_error(run("verify", tmp_path / "x"), "Permission denied", str(tmp_path / "x"))

    def bug(path):
        raise TypeError("a genuine bug")

    monkeypatch.setattr(persist, "verify", bug)
    result = run("verify", tmp_path / "x")
    assert result.exit_code == 1 and isinstance(result.exception, TypeError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_model_file(tmp_path):
    model = tmp_path / "m"
    assert run("fit", "lsh", "--bits", 16, "--protocol", "digits-sup", "-o", model).exit_code == 0
    os.chmod(model, 0)
    _one_line_error(run("evaluate", model, "--protocol", "digits-sup"), "permission denied")


# ------------------------------------------------------------------------------------ mends


def test_fit_records_the_rows_it_trained_on(tmp_path):
    for method, args, n_train in (("pq", (), 1597), ("pq", ("--max-train", 500), 500),
                                  ("itq", ("--max-train", 400), 400)):
        result = run("fit", method, "--bits", 16, "--protocol", "digits-sup", "-o", tmp_path / "m", "--json", *args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["n_train"] == n_train


def test_fit_quantizer_caps_its_sample_and_says_so():
    from deepcodes.methods import QUANTIZER_MAX_TRAIN
    from deepcodes.pipeline import fit_coder

    X = np.random.default_rng(0).normal(size=(QUANTIZER_MAX_TRAIN + 10, 4)).astype(np.float32)
    coder = fit_coder("pq", 8, X, trained_on="x", max_train=None, n_iter=1)
    assert coder.meta_["n_train"] == QUANTIZER_MAX_TRAIN


def test_option_M_sets_the_code_shape(tmp_path):
    from deepcodes import persist

    for options, M, per_code in ((("M=2",), 2, 8), (("M=4",), 4, 4), (("n_bits_per_code=4",), 4, 4)):
        args = [a for o in options for a in ("--option", o)]
        result = run("fit", "pq", "--bits", 16, "--protocol", "digits-sup", "-o", tmp_path / "m", *args)
        assert result.exit_code == 0, result.output
        coder = persist.load(tmp_path / "m")
        assert (coder.M, coder.n_bits_per_code) == (M, per_code)


@pytest.mark.parametrize("option, message", [
    ("M=3", "--bits 16 must equal M x n_bits_per_code"),
    ("bogus=1", "pq has no parameter 'bogus'; valid: M, max_train, n_bits_per_code, n_iter"),
    ("random_state=3", "random_state is set by --seed"),
    ("M=-1", "M must be a positive integer"),
])
def test_bad_options_name_no_internal_class(tmp_path, option, message):
    result = run("fit", "pq", "--bits", 16, "--protocol", "digits-sup", "-o", tmp_path / "m", "--option", option)
    assert result.exit_code == 2
    out = result.output.replace("\n", " ")
    assert message in out and "__init__" not in out and "Quantizer" not in out


def test_evaluate_table_prints_each_row_once(tmp_path, sift_hdf5):
    model = tmp_path / "pq"
    assert run("fit", "pq", "--bits", 32, "--data", sift_hdf5, "--max-train", 2000, "-o", model).exit_code == 0
    result = run("evaluate", model, "--data", sift_hdf5, "--no-progress")
    assert result.exit_code == 0, result.output
    rows = [line.split("│")[1].strip() for line in result.output.splitlines() if line.count("│") >= 2]
    assert rows.count("1-recall@1") == 1 and "10-recall@10" in rows
    assert len(rows) == len(set(rows))


def test_fit_and_evaluate_on_files(tmp_path, sift_hdf5):
    model = tmp_path / "itq"
    result = run("fit", "itq", "--bits", 32, "--data", sift_hdf5, "--max-train", 1500, "-o", model, "--json")
    assert result.exit_code == 0, result.output
    meta = json.loads(result.output)
    assert meta["n_train"] == 1500 and meta["n_available"] == 2000 and meta["protocol"] == "sift.hdf5:train"
    result = run("evaluate", model, "--data", sift_hdf5, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["n_database"] == 2000 and info["n_queries"] == 20 and 0.1 < info["one_recall_at_R"]["100"] <= 1
    assert info["n_train"] == 1500
    same = run("evaluate", model, "--data", f"{sift_hdf5}:train", "--queries", f"{sift_hdf5}:test",
               "--gt", f"{sift_hdf5}:neighbors", "--json")
    assert json.loads(same.output)["map"] == info["map"]


@pytest.mark.parametrize("args, message", [
    (("fit", "itq", "--bits", 16, "-o", "x"), "exactly one of --protocol and --data"),
    (("fit", "sh-bdnn", "--bits", 16, "--data", "{h5}", "-o", "x"), "no training labels"),
    (("evaluate", "{model}", "--protocol", "sift10k", "--gt", "{h5}"), "go with --data"),
    (("evaluate", "{model}", "--data", "{h5}:test", "--queries", "{h5}:nope"), "no dataset 'nope'"),
])
def test_file_commands_bad_input(tmp_path, sift_hdf5, args, message):
    model = tmp_path / "itq"
    assert run("fit", "itq", "--bits", 16, "--data", sift_hdf5, "-o", model).exit_code == 0
    result = run(*[str(a).format(h5=sift_hdf5, model=model) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ")
