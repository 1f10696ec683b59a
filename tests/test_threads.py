"""deepcodes.threads: one setting caps numba, faiss (OpenMP) and BLAS; bad settings are InputErrors."""
import subprocess
import sys

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import deepcodes
from deepcodes.errors import InputError
from deepcodes.threads import get_num_threads, matmul_rows, set_num_threads, single_blas


def test_set_num_threads_caps_every_pool():
    import faiss

    before = get_num_threads()
    try:
        assert set_num_threads(1) == 1
        assert get_num_threads() == 1
        assert numba.get_num_threads() == 1
        assert faiss.omp_get_max_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    finally:
        set_num_threads(before)
    assert get_num_threads() == before


def test_single_blas_limits_blas_inside_the_block_only():
    with single_blas():
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")


def _blas_threads():
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def test_overlapping_single_blas_blocks_restore_the_count_only_when_the_last_leaves():
    # blocks that overlap without nesting, as concurrent searches do: the first to leave must not
    # restore the count under the second
    with threadpool_limits(2, user_api="blas"):
        first, second = single_blas(), single_blas()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert _blas_threads() == {1}
        second.__exit__(None, None, None)
        assert _blas_threads() == {2}


def test_a_search_runs_its_blas_products_on_one_thread(monkeypatch):
    X = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    index = deepcodes.index_factory(16, "IVF16,PQ4")
    index.train(X)
    index.add(X)
    inside = {}
    search = type(index)._search

    def probe(self, *args, **kwargs):
        inside["blas"] = _blas_threads()
        return search(self, *args, **kwargs)

    monkeypatch.setattr(type(index), "_search", probe)
    with threadpool_limits(2, user_api="blas"):
        index.search(X[:5], 3)
        assert inside["blas"] == {1}
        assert _blas_threads() == {2}


@pytest.mark.parametrize("bad", [0, -2, 1.5, "two"])
def test_bad_thread_counts_are_input_errors(bad):
    with pytest.raises(InputError):
        set_num_threads(bad)


def test_environment_setting_is_applied_and_checked():
    code = "import deepcodes, numba; print(deepcodes.get_num_threads(), numba.get_num_threads())"
    env = {"DEEPCODES_NUM_THREADS": "1", "PYTHONPATH": deepcodes.__path__[0].rsplit("/", 1)[0]}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
    env["DEEPCODES_NUM_THREADS"] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "DEEPCODES_NUM_THREADS must be a positive integer" in out.stderr


@pytest.mark.parametrize("shape", [(1, 3, 5), (127, 16, 7), (128, 8, 9), (300, 24, 1024), (513, 5, 3)])
def test_matmul_rows_is_the_product_and_the_same_on_any_thread_count(shape):
    n, k, m = shape
    rng = np.random.default_rng(n)
    A = rng.standard_normal((n, k)).astype(np.float32)
    B = rng.standard_normal((k, m)).astype(np.float32)
    before = get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            set_num_threads(threads)
            with single_blas():
                results.append(matmul_rows(A, B))
    finally:
        set_num_threads(before)
    for r in results:
        assert r.shape == (n, m) and r.dtype == np.float32
        np.testing.assert_array_equal(r, results[0])
    np.testing.assert_allclose(results[0], A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)


def test_matmul_rows_off_the_main_thread_runs_its_parts_in_turn():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    A = rng.standard_normal((400, 12)).astype(np.float32)
    B = rng.standard_normal((12, 50)).astype(np.float32)
    with ThreadPoolExecutor(1) as pool:
        off_main = pool.submit(matmul_rows, A, B).result()
    np.testing.assert_array_equal(off_main, matmul_rows(A, B))
