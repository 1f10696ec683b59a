"""Report writers: markdown tables, atomic JSON, figures."""
import json

import numpy as np
import pytest

from deepcodes.errors import InputError
from deepcodes.eval.report import markdown_table, plot_map_vs_bits, plot_pr_curves, write_json


def test_markdown_table():
    rows = [{"method": "ITQ", "bits": 32, "map": 0.123456}, {"method": "a|b", "map": np.float32(0.5), "bits": None}]
    text = markdown_table(rows, ["method", "bits", "map", "note"])
    lines = text.splitlines()
    assert lines[0] == "| method | bits | map | note |"
    assert lines[1] == "| --- | --- | --- | --- |"
    assert lines[2] == "| ITQ | 32 | 0.1235 |  |"
    assert lines[3] == "| a\\|b |  | 0.5000 |  |"
    assert markdown_table(rows[:1], ["map"], floatfmt=".2f").splitlines()[2] == "| 0.12 |"
    assert markdown_table([], ["map"]).splitlines() == ["| map |", "| --- |"]
    for call in (lambda: markdown_table(rows, []), lambda: markdown_table(rows[0], ["map"]),
                 lambda: markdown_table([1, 2], ["map"]), lambda: markdown_table(rows, ["map"], floatfmt="x")):
        with pytest.raises(InputError):
            call()


def test_write_json(tmp_path):
    path = tmp_path / "sub" / "result.json"
    write_json(path, {"map": np.float64(0.25), 10: [np.int64(3), float("nan")], "curve": np.arange(3)})
    assert json.loads(path.read_text()) == {"map": 0.25, "10": [3, None], "curve": [0, 1, 2]}
    with pytest.raises(InputError):
        write_json(path, {"bad": object()})
    # A failed write leaves the previous file and no temporary files behind.
    assert json.loads(path.read_text())["map"] == 0.25
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_plot_map_vs_bits(tmp_path):
    results = [{"method": m, "protocol": p, "bits": b, "map": 0.1 * i + b / 1000}
               for i, m in enumerate(["LSH", "ITQ"]) for p in ["cifar10", "mnist"] for b in (16, 32, 64)]
    path = tmp_path / "map.png"
    plot_map_vs_bits(results, path, "mAP vs bits")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    plot_map_vs_bits(results[:2], tmp_path / "map.svg", "one protocol")
    assert b"<svg" in (tmp_path / "map.svg").read_bytes()
    for bad in ([], [{"method": "LSH", "bits": 16, "map": 0.1}], results + results[:1], results[0]):
        with pytest.raises(InputError):
            plot_map_vs_bits(bad, tmp_path / "bad.png", "bad")
    assert not (tmp_path / "bad.png").exists()


def test_plot_pr_curves(tmp_path):
    curves = [{"method": "ITQ", "precision": [None, 0.9, 0.5, 0.2], "recall": [0.0, 0.1, 0.6, 1.0]},
              {"method": "LSH", "precision": np.array([0.8, 0.4, 0.1]), "recall": np.array([0.05, 0.5, 1.0])}]
    path = tmp_path / "pr.png"
    plot_pr_curves(curves, path, "PR")
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1000
    for bad in ([], [{"method": "x", "precision": [0.5]}], [{"method": "x", "precision": [0.5], "recall": [0.1, 1]}],
                [{"method": "x", "precision": ["a"], "recall": [1]}]):
        with pytest.raises(InputError):
            plot_pr_curves(bad, tmp_path / "bad.png", "bad")


def test_plot_recall_qps(tmp_path):
    from deepcodes.eval import plot_recall_qps

    plot_recall_qps([{"method": "a", "recall": [0.2, 0.5], "qps": [900, 300]},
                     {"method": "b", "recall": [0.3], "qps": [500]}], tmp_path / "p.png", "t", xlabel="R@10")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="1 qps values for 2 recall values"):
        plot_recall_qps([{"method": "a", "recall": [0.2, 0.5], "qps": [900]}], tmp_path / "q.png", "t")
