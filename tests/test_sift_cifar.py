import json
import os

import numpy as np
import pytest

from deepcodes import persist
from deepcodes.data import sift_cifar
from deepcodes.data.datasets import data_dir, load_cifar10
from deepcodes.data.formats import read_bvecs, read_ivecs
from deepcodes.data.sift_cifar import build, extract_descriptors, load_sift_cifar
from deepcodes.errors import InputError

# A tiny recipe: 40 images, 13 keypoints each, 6 held-out query images.
SMALL = {"n_images": 40, "n_queries": 6, "grids": ((3, 16), (2, 32)), "k": 20, "n_jobs": 2}
N_KP = 13


@pytest.fixture(autouse=True)
def _bundled_data(monkeypatch):
    monkeypatch.delenv("DEEPCODES_DATA", raising=False)
    if not (data_dir() / "cifar10" / "cifar10_test_png.npz").is_file():
        pytest.skip(f"bundled CIFAR-10 not found at {data_dir()}")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("sift_cifar")
    return out, build(out, progress=False, **SMALL)


def test_small_build_shapes_and_manifest(small):
    out, manifest = small
    base, queries, gt = load_sift_cifar(out, **SMALL)
    n_base = (40 - 6) * N_KP
    assert base.shape == (n_base, 128) and base.dtype == np.uint8
    assert queries.shape == (6, 128) and queries.dtype == np.uint8
    assert gt.shape == (6, 20) and gt.dtype == np.int32
    assert manifest["n_base"] == n_base and manifest["recipe"]["keypoints_per_image"] == N_KP
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for name, entry in manifest["files"].items():
        assert (out / name).stat().st_size == entry["bytes"]
        assert persist.file_sha256(out / name) == entry["sha256"]
    # real descriptors, not saturated nor empty
    assert base.max() <= 255 and 0 < base.mean() < 100 and (base.max(axis=1) > 0).all()
    assert not any(p.name.startswith(".parts") for p in out.iterdir())


def test_query_images_are_held_out(small):
    out, manifest = small
    base, queries, _ = load_sift_cifar(out, **SMALL)
    q_img = np.array(manifest["query_images"])
    assert len(set(q_img.tolist())) == 6 and q_img.min() >= 0 and q_img.max() < 40
    images, _ = load_cifar10()
    base_img = np.setdiff1d(np.arange(40), q_img)
    desc = extract_descriptors(images[:40], SMALL["grids"])
    np.testing.assert_array_equal(base, desc[base_img].reshape(-1, 128))
    np.testing.assert_array_equal(queries, desc[q_img, manifest["query_keypoints"]])
    # no query descriptor comes from a base image (they could only coincide by accident)
    base_rows = {row.tobytes() for row in base}
    assert not any(q.tobytes() in base_rows for q in queries)


def test_groundtruth_is_exact_with_ties_by_id(small):
    out, _ = small
    base, queries, gt = load_sift_cifar(out, **SMALL)
    dist = ((queries[:, None, :].astype(np.float64) - np.asarray(base)[None].astype(np.float64)) ** 2).sum(-1)
    ref = np.argsort(dist, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(gt, ref)


def test_build_is_deterministic(small, tmp_path):
    out, manifest = small
    again = build(tmp_path, progress=False, **{**SMALL, "n_jobs": 1})
    assert {k: v["sha256"] for k, v in again["files"].items()} == {k: v["sha256"] for k, v in manifest["files"].items()}
    assert again["query_images"] == manifest["query_images"]


def test_second_build_reuses_files_and_rebuilds_damaged_ones(small, tmp_path, monkeypatch):
    out, manifest = small
    stamps = {name: (out / name).stat().st_mtime_ns for name in manifest["files"]}
    assert build(out, progress=False, **SMALL, verify=True) == manifest
    assert {name: (out / name).stat().st_mtime_ns for name in manifest["files"]} == stamps
    # A truncated file is noticed by its size and the dataset is made again.
    work = tmp_path / "copy"
    work.mkdir()
    for name in [*manifest["files"], "manifest.json"]:
        (work / name).write_bytes((out / name).read_bytes())
    with open(work / "base.bvecs", "r+b") as f:
        f.truncate(132 * 5)
    rebuilt = build(work, progress=False, **SMALL)
    assert rebuilt["files"] == manifest["files"]
    assert read_bvecs(work / "base.bvecs").shape == (manifest["n_base"], 128)
    # A different recipe in the same folder is a rebuild, not a stale answer.
    other = build(work, progress=False, **{**SMALL, "k": 5})
    assert other["k"] == 5 and read_ivecs(work / "groundtruth.ivecs").shape == (6, 5)


def test_interrupted_build_resumes_from_saved_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(sift_cifar, "_CHUNK", 10)
    real = sift_cifar.extract_descriptors
    calls = []
    failed = []

    def flaky(images, grids):
        calls.append(len(images))
        if len(calls) == 3 and not failed:
            failed.append(True)
            raise RuntimeError("interrupted")
        return real(images, grids)

    monkeypatch.setattr(sift_cifar, "extract_descriptors", flaky)
    with pytest.raises(RuntimeError, match="interrupted"):
        build(tmp_path, progress=False, **{**SMALL, "n_jobs": 1})
    assert not (tmp_path / "manifest.json").exists()
    done = len(list(tmp_path.glob(".parts-*/chunk*.npy")))
    assert 2 <= done <= 3
    calls.clear()
    manifest = build(tmp_path, progress=False, **{**SMALL, "n_jobs": 1})
    assert len(calls) == 4 - done and manifest["n_base"] == 34 * N_KP
    ref = build(tmp_path / "ref", progress=False, **SMALL)
    assert manifest["files"] == ref["files"]


def test_bad_recipes_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="n_queries"):
        build(tmp_path, progress=False, n_images=10, n_queries=10)
    with pytest.raises(InputError, match="n_images"):
        build(tmp_path, progress=False, n_images=20000)
    with pytest.raises(InputError, match="grids"):
        build(tmp_path, progress=False, n_images=10, n_queries=2, grids=((0, 16),))
    with pytest.raises(InputError, match="grids"):
        build(tmp_path, progress=False, n_images=10, n_queries=2, grids="abc")
    with pytest.raises(InputError, match="k must be <="):
        build(tmp_path, progress=False, n_images=10, n_queries=2, grids=((1, 16),), k=9)
    with pytest.raises(InputError, match="images must be uint8"):
        extract_descriptors(np.zeros((2, 32, 32), np.uint8))
    assert not (tmp_path / "manifest.json").exists()


def test_default_folder_is_under_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPCODES_CACHE", str(tmp_path))
    assert sift_cifar.default_dir() == tmp_path / "sift1m-cifar"
    assert os.fspath(sift_cifar.default_dir()).startswith(os.fspath(tmp_path))
