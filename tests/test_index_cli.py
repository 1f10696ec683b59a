"""The index commands end to end on small files: build, add, remove, search, info, bench, export."""
import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import deepcodes
from deepcodes.cli import app
from deepcodes.data.formats import write_ann_hdf5, write_fvecs

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def fails(*args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " "), result.output
    return result


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exact_neighbors(base, queries, k):
    d = ((queries[:, None, :].astype(np.float64) - base[None]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """600 clustered 16-d vectors and 20 queries as .npy, .fvecs and an ann-benchmarks .hdf5."""
    root = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4, size=(12, 16))
    X = (centres[rng.integers(0, 12, 600)] + rng.normal(size=(600, 16))).astype(np.float32)
    Q = (centres[rng.integers(0, 12, 20)] + rng.normal(size=(20, 16))).astype(np.float32)
    np.save(root / "x.npy", X)
    np.save(root / "q.npy", Q)
    write_fvecs(root / "x.fvecs", X)
    gt = exact_neighbors(X, Q, 100)
    write_ann_hdf5(root / "ann.hdf5", X, Q, gt, np.zeros(gt.shape))
    return {"root": root, "X": X, "Q": Q, "gt": gt}


def test_build_info_search_roundtrip(tmp_path, files):
    out = tmp_path / "pq.idx"
    ok("build", "PQ4,ADC", "--train", files["root"] / "ann.hdf5", "--max-train", 400, "-o", out, "--no-progress")
    info = json.loads(ok("info", out, "--json").output)
    for key in ("spec", "ntotal", "d", "bytes_per_vector", "trained_on"):
        assert key in info
    assert info["spec"] == "PQ4,ADC" and info["ntotal"] == 600 and info["d"] == 16
    assert info["trained_on"]["n_train"] == 400 and info["trained_on"]["n_available"] == 600
    assert info["trained_on"]["file"].endswith("ann.hdf5:train")
    ok("search", out, "--queries", files["root"] / "ann.hdf5", "-k", 7, "-o", tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz", allow_pickle=False) as r:
        assert r["ids"].dtype == np.int64 and r["ids"].shape == (20, 7)
        assert r["distances"].dtype == np.float32 and r["distances"].shape == (20, 7)
        ids, dist = r["ids"], r["distances"]
    index = deepcodes.load(out)
    want_d, want_i = index.search(files["Q"], 7)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_array_equal(dist, want_d)
    printed = json.loads(ok("search", out, "--queries", files["root"] / "q.npy", "-k", 3, "--json").output)
    assert set(printed) == {"ids", "distances"}
    assert printed["ids"] == want_i[:, :3].tolist()
    assert "queries/s" in ok("search", out, "--queries", files["root"] / "q.npy", "-k", 3).output
    assert "ntotal" in ok("info", out).output


def test_build_with_base_ids_then_add_and_remove(tmp_path, files):
    root = files["root"]
    ids = np.arange(600, dtype=np.int64) * 10 + 5
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "flat.idx"
    ok("build", "PQ8,ADC", "--train", root / "x.fvecs", "--base", root / "x.npy", "--ids", tmp_path / "ids.npy",
       "-o", out, "--no-progress")
    index = deepcodes.load(out)
    _, found = index.search(files["X"][:5], 1)
    assert found[:, 0].tolist() == ids[:5].tolist()
    # add the queries with ids of our own, then remove them again
    (tmp_path / "qids.txt").write_text("".join(f"{7 + 10 * i}\n" for i in range(20)))
    ok("add", out, "--base", root / "q.npy", "--ids", tmp_path / "qids.txt", "--no-progress")
    assert json.loads(ok("info", out, "--json").output)["ntotal"] == 620
    r = json.loads(ok("search", out, "--queries", root / "q.npy", "-k", 1, "--json").output)
    assert [row[0] for row in r["ids"]] == [7 + 10 * i for i in range(20)]
    ok("remove", out, "--ids", tmp_path / "qids.txt")
    after = deepcodes.load(out)
    assert after.ntotal == 600
    # removal from an exact index gives exactly the index built without the items
    d1, i1 = after.search(files["Q"], 10)
    d0, i0 = index.search(files["Q"], 10)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)
    # default ids continue after the largest stored one
    ok("add", out, "--base", root / "q.npy", "--no-progress")
    r = json.loads(ok("search", out, "--queries", root / "q.npy", "-k", 1, "--json").output)
    assert [row[0] for row in r["ids"]] == list(range(ids.max() + 1, ids.max() + 21))


def test_failed_add_or_remove_leaves_the_file_unchanged(tmp_path, files):
    root = files["root"]
    out = tmp_path / "pq.idx"
    ok("build", "PQ4,ADC", "--train", root / "x.npy", "-o", out, "--no-progress")
    before = digest(out)
    (tmp_path / "dup.txt").write_text("".join(f"{1000 + i}\n" for i in range(19)) + "1000\n")
    fails("add", out, "--base", root / "q.npy", "--ids", tmp_path / "dup.txt", message="id 1000 appears more than once")
    (tmp_path / "taken.txt").write_text("".join(f"{590 + i}\n" for i in range(20)))
    fails("add", out, "--base", root / "q.npy", "--ids", tmp_path / "taken.txt", message="id 590 is already in the index")
    (tmp_path / "few.txt").write_text("1\n2\n")
    fails("add", out, "--base", root / "q.npy", "--ids", tmp_path / "few.txt", message="2 ids for 20 vectors")
    (tmp_path / "words.txt").write_text("1\nx\n")
    fails("remove", out, "--ids", tmp_path / "words.txt", message="must be integers")
    (tmp_path / "absent.txt").write_text("3\n4000\n")
    fails("remove", out, "--ids", tmp_path / "absent.txt", message="id 4000 is not in the index")
    np.save(tmp_path / "wide.npy", np.zeros((3, 17), np.float32))
    fails("add", out, "--base", tmp_path / "wide.npy", message="dimension 17")
    assert digest(out) == before
    assert deepcodes.load(out).ntotal == 600


@pytest.mark.parametrize("args, message", [
    (("build", "PQ4,ADC", "--train", "{x}", "--base", "{wide}", "-o", "{out}"), "dimension 17"),
    (("build", "PQ99,ADC", "--train", "{x}", "-o", "{out}"), "PQ"),
    (("build", "NOPE12", "--train", "{x}", "-o", "{out}"), "NOPE12"),
    (("build", "PQ4,ADC", "--train", "{x}", "--labels", "{labels}", "-o", "{out}"), "3 labels for 600"),
    (("build", "PQ4,ADC", "--train", "{x}", "--ids", "{labels}", "-o", "{out}"), "3 ids for 600"),
    (("build", "PQ4,ADC", "--train", "{root}/ann.hdf5:learn", "-o", "{out}"), "no dataset 'learn'"),
    (("build", "PQ4,ADC", "--train", "{root}/missing.npy", "-o", "{out}"), "no such file"),
    (("build", "PQ4,ADC", "--train", "{x}", "--max-train", 0, "-o", "{out}"), "--max-train"),
])
def test_build_bad_input(tmp_path, files, args, message):
    np.save(tmp_path / "wide.npy", np.zeros((3, 17), np.float32))
    (tmp_path / "labels.txt").write_text("1\n2\n3\n")
    fill = {"x": files["root"] / "x.npy", "wide": tmp_path / "wide.npy", "out": tmp_path / "o.idx",
            "labels": tmp_path / "labels.txt", "root": files["root"]}
    fails(*[str(a).format(**fill) for a in args], message=message)
    assert not (tmp_path / "o.idx").exists()


def test_search_bad_input(tmp_path, files):
    root = files["root"]
    out = tmp_path / "pq.idx"
    ok("build", "PQ4,ADC", "--train", root / "x.npy", "-o", out, "--no-progress")
    fails("search", out, "--queries", root / "q.npy", "-k", 601, message="k=601 is larger")
    np.save(tmp_path / "wide.npy", np.zeros((3, 17), np.float32))
    fails("search", out, "--queries", tmp_path / "wide.npy", "-k", 5, message="dimension 17")
    fails("search", out, "--queries", root / "q.npy", "-k", 5, "--param", "nprobe", message="name=value")
    fails("search", out, "--queries", root / "q.npy", "-k", 5, "--param", "bogus=3", message="bogus")
    fails("search", tmp_path / "none.idx", "--queries", root / "q.npy", "-k", 5, message="no such")
    ok("fit", "itq", "--bits", 8, "--data", root / "x.npy", "-o", tmp_path / "itq.model")
    fails("search", tmp_path / "itq.model", "--queries", root / "q.npy", "-k", 5, message="not an index")


def test_keyed_text_returns_keys(tmp_path, files):
    X = files["X"][:300]
    text = "".join(f"w{i} " + " ".join(f"{v:.6f}" for v in row) + "\n" for i, row in enumerate(X))
    (tmp_path / "words.txt").write_text(text)
    out = tmp_path / "words.idx"
    ok("build", "PQ8,ADC", "--train", tmp_path / "words.txt", "-o", out, "--no-progress")
    r = json.loads(ok("search", out, "--queries", tmp_path / "words.txt", "-k", 2, "--json").output)
    assert r["keys"][3][0] == "w3" and r["ids"][3][0] == 3
    ok("search", out, "--queries", tmp_path / "words.txt", "-k", 2, "-o", tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz", allow_pickle=False) as z:
        assert z["keys"][5, 0] == "w5"
    (tmp_path / "gone.txt").write_text("3\n")
    ok("remove", out, "--ids", tmp_path / "gone.txt")
    r = json.loads(ok("search", out, "--queries", tmp_path / "words.txt", "-k", 2, "--json").output)
    assert "w3" not in {k for row in r["keys"] for k in row}


def test_ivf_search_params_and_bench_against_faiss(tmp_path, files):
    root = files["root"]
    out = tmp_path / "ivf.idx"
    ok("build", "IVF8,PQ4", "--train", root / "ann.hdf5", "-o", out, "--no-progress")
    one = json.loads(ok("search", out, "--queries", root / "ann.hdf5", "-k", 200, "--param", "nprobe=1",
                        "--json").output)
    every = json.loads(ok("search", out, "--queries", root / "ann.hdf5", "-k", 200, "--param", "nprobe=8",
                          "--json").output)
    # one list of ~75 vectors cannot fill 200 results: the rest are (inf, -1); all 8 lists can
    assert -1 in np.array(one["ids"]) and -1 not in np.array(every["ids"])
    bench = tmp_path / "bench"
    result = ok("bench", out, "--queries", root / "ann.hdf5", "--gt", root / "ann.hdf5", "--sweep", "nprobe=1,8",
                "--against-faiss", "IVF8,PQ4", "--out", bench, "--threads", 1, "--repeats", 1, "--no-progress")
    for word in ("R@1", "R@10", "R@100", "queries/s", "faiss", "load average", "OMP_WAIT_POLICY"):
        assert word in result.output
    report = json.loads((bench / "bench.json").read_text())
    rows = {(r["index"], r["params"]): r for r in report["rows"]}
    assert set(rows) == {("deepcodes", "nprobe=1"), ("deepcodes", "nprobe=8"), ("faiss", "nprobe=1"),
                         ("faiss", "nprobe=8")}
    assert rows[("deepcodes", "nprobe=8")]["R@100"] >= rows[("deepcodes", "nprobe=1")]["R@100"]
    # at nprobe = nlist both scan everything: the same codes give (nearly) the same recall
    assert abs(rows[("deepcodes", "nprobe=8")]["R@10"] - rows[("faiss", "nprobe=8")]["R@10"]) <= 0.15
    assert report["environment"]["threads"] == 1 and len(report["environment"]["load_average_before"]) == 3
    assert (bench / "recall_qps.png").stat().st_size > 1000 and "| deepcodes |" in (bench / "bench.md").read_text()
    fails("bench", out, "--queries", root / "ann.hdf5", "--gt", root / "ann.hdf5", "--against-faiss", "IVF8,PQ8",
          "--out", bench, message="8 bytes per vector, the index 4")
    fails("bench", out, "--queries", root / "q.npy", "--gt", root / "x.npy", "--out", bench, message="neighbour ids must be integers")
    np.save(tmp_path / "gt.npy", files["gt"][:7])
    fails("bench", out, "--queries", root / "q.npy", "--gt", tmp_path / "gt.npy", "--out", bench,
          message="ground truth for 7 queries, the queries file has 20")
    np.save(tmp_path / "wide.npy", np.zeros((20, 17), np.float32))
    fails("bench", out, "--queries", tmp_path / "wide.npy", "--gt", root / "ann.hdf5", "--out", bench,
          message="dimension 17, the index 16")
    fails("bench", out, "--queries", root / "q.npy", "--gt", root / "ann.hdf5", "--sweep", "nprobe=a", "--out", bench,
          message="values must be integers")


def test_export_to_faiss_returns_the_same_neighbours(tmp_path, files):
    import faiss

    root = files["root"]
    out = tmp_path / "pq.idx"
    ok("build", "PQ4,ADC", "--train", root / "x.npy", "-o", out, "--no-progress")
    ok("export", out, "--faiss", tmp_path / "pq.faiss")
    fi = faiss.read_index(str(tmp_path / "pq.faiss"))
    _, theirs = fi.search(files["Q"], 1)
    _, ours = deepcodes.load(out).search(files["Q"], 1)
    assert (theirs == ours).mean() >= 0.95
