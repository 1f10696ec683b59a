import json
import os

import pytest
from typer.testing import CliRunner

from deepcodes.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


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
    model = tmp_path / "m.safetensors"
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


def test_unknown_coder_options_are_input_errors_not_type_errors(tmp_path):
    out = tmp_path / "m"
    _one_line_error(run("fit", "pq", "--bits", 16, "--protocol", "digits-sup", "-o", out, "--option", "bogus=1"),
                    "no option 'bogus'", "max_train")
    _one_line_error(run("fit", "lsh", "--bits", 16, "--protocol", "digits-sup", "-o", out, "--option", "n_bits=8"),
                    "set by the command")
    _one_line_error(run("fit", "pq", "--bits", 16, "--protocol", "digits-sup", "-o", out, "--option", "max_train=-5"),
                    "max_train must be >= 1")
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
