"""The Ray-sharded index: exactly the single index's results, and killed shard actors."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from deepcodes.cluster import ShardedIndex, merge_topk, shard_of
from deepcodes.errors import InputError, UnavailableError


pytestmark = pytest.mark.xdist_group("ray")


def test_merge_of_shard_top_k_is_the_global_top_k():
    rng = np.random.default_rng(0)
    for dtype in (np.int32, np.float32):
        dist = rng.integers(0, 6, size=(20, 300)).astype(dtype)     # many ties
        ids = rng.permutation(10_000)[:300]
        order = np.lexsort((np.broadcast_to(ids, dist.shape), dist), axis=-1)[:, :15]
        want_d, want_i = np.take_along_axis(dist, order, 1), ids[order]
        owner = shard_of(ids, 3)
        parts = []
        for s in range(3):
            cols = np.flatnonzero(owner == s)
            d, i = dist[:, cols], np.broadcast_to(ids[cols], (20, cols.size))
            o = np.lexsort((i, d), axis=-1)[:, :15]
            parts.append((np.take_along_axis(d, o, 1), np.take_along_axis(i, o, 1)))
        got_d, got_i = merge_topk(parts, 15)
        assert np.array_equal(got_i, want_i) and np.array_equal(got_d, want_d)


def test_missing_results_sort_last_and_stay_missing():
    parts = [(np.array([[1.0, np.inf]], np.float32), np.array([[4, -1]])),
             (np.array([[1.0]], np.float32), np.array([[2]]))]
    d, i = merge_topk(parts, 3)
    assert i.tolist() == [[2, 4, -1]] and d[0, 2] == np.inf


def test_routing_spreads_strided_ids():
    counts = np.bincount(shard_of(np.arange(0, 100_000, 10), 4), minlength=4)
    assert counts.min() > 2300


# Session scope: one local Ray and one set of shard actors per worker, even if the scheduler runs
# other modules' tests between these (a module fixture would then start Ray and the actors again).
@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def indexes(digits):
    from deepcodes.coders import ITQ, PQ
    from deepcodes.index import ADCIndex, HammingIndex

    X, y = digits
    ids = np.arange(1500) * 7 + 3
    hamming = HammingIndex(coder=ITQ(n_bits=16, random_state=0).fit(X))
    hamming.add(X[:1500], ids=ids)
    adc = ADCIndex(PQ(M=8, random_state=0).fit(X))
    adc.add(X[:1500], ids=ids)
    # Compile the search kernels here once (small and large k take different kernels), so that the
    # shard actors load them from numba's disk cache instead of each compiling them again.
    for index in (hamming, adc):
        for k in (1, 10, 100):
            index.search(X[:3], k)
    return X, ids, {"hamming": hamming, "adc": adc}


@pytest.fixture(scope="session")
def sharded(ray_session, indexes, tmp_path_factory):
    X, ids, single = indexes
    opened = {}
    for name, index in single.items():
        root = ShardedIndex.split(index, tmp_path_factory.mktemp(name) / "sharded", 2)
        opened[name] = ShardedIndex.open(root, restart_timeout=90)
    yield opened
    for s in opened.values():
        s.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hamming", "adc"])
def test_sharded_results_are_the_single_index_results(sharded, indexes, name):
    X, ids, single = indexes
    index, shards = single[name], sharded[name]
    assert shards.ntotal == index.ntotal == 1500
    for k in (1, 10, 100):
        d1, i1 = index.search(X[1500:1600], k)
        d2, i2 = shards.search(X[1500:1600], k)
        assert np.array_equal(i1, i2) and np.array_equal(d1, d2)
    d1, i1 = index.search_by_id(ids[:50], 10)
    d2, i2 = shards.search_by_id(ids[:50], 10)
    assert np.array_equal(i1, i2) and np.array_equal(d1, d2)
    with pytest.raises(InputError, match="already stored"):
        shards.add(ids[:2], X[:2])
    with pytest.raises(InputError, match="k="):
        shards.search(X[:1], 1501)


@pytest.mark.slow
def test_the_app_serves_a_sharded_index(sharded, indexes):
    from fastapi.testclient import TestClient

    from deepcodes.service.app import create_app

    X, ids, single = indexes
    client = TestClient(create_app(sharded["adc"]))
    reply = client.post("/search", json={"vectors": X[1500:1503].tolist(), "k": 5})
    assert reply.status_code == 200
    d, i = single["adc"].search(X[1500:1503], 5)
    assert [r["ids"] for r in reply.json()["results"]] == i.tolist()
    stats = client.get("/stats").json()
    assert stats["ntotal"] == 1500 and stats["shards"] == 2 and len(stats["shard_stats"]) == 2
    bad = client.post("/items", json={"ids": [int(ids[0])], "vectors": [X[0].tolist()]})
    assert bad.status_code == 400 and "already stored" in bad.json()["error"]
    assert client.get("/items/999999").status_code == 404


@pytest.mark.slow
def test_build_shards_then_serve_them(ray_session, digits, tmp_path):
    from typer.testing import CliRunner

    from deepcodes import load
    from deepcodes.cli import app

    X, _ = digits
    np.save(tmp_path / "digits.npy", X)
    runner = CliRunner()
    for extra, out in (([], "one.dcx"), (["--shards", "2"], "sharded")):
        result = runner.invoke(app, ["build", "ITQ16,Hamming", "--train", str(tmp_path / "digits.npy"),
                                     "--no-progress", "-o", str(tmp_path / out), *extra])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == ["shard-000", "shard-001", "sharded.json"]
    single = load(tmp_path / "one.dcx")
    shards = ShardedIndex.open(tmp_path / "sharded")
    try:
        assert shards.ntotal == single.ntotal == len(X)
        for got, want in zip(shards.search(X[:40], 7), single.search(X[:40], 7)):
            assert np.array_equal(got, want)
    finally:
        shards.close()


@pytest.mark.slow
def test_changes_and_a_killed_actor(ray_session, sharded, indexes):
    X, ids, single = indexes
    index = type(single["hamming"]).from_bytes(single["hamming"].to_bytes())
    shards = sharded["hamming"]
    new = np.array([1, 2, 100_000, 100_001])
    shards.add(new, X[1600:1604])
    index.add(X[1600:1604], ids=new)
    shards.remove(ids[:30])
    index.remove(ids[:30])
    assert shards.ntotal == index.ntotal
    expected = index.search(X[1700:1750], 20)

    pid = ray_session.get(shards.actors[1].info.remote())["pid"]
    os.kill(pid, 9)                      # the shard's process dies
    time.sleep(0.5)
    got = shards.search(X[1700:1750], 20)          # restarted from its folder, nothing lost
    assert np.array_equal(got[1], expected[1]) and np.array_equal(got[0], expected[0])
    info = ray_session.get(shards.actors[1].info.remote())
    assert info["pid"] != pid and any("replayed" in n for n in info["notes"])

    ray_session.kill(shards.actors[0], no_restart=True)   # dead for good: an error, not half an answer
    wait_until_dead(ray_session, shards.actors[0])       # ray.kill only asks: a call may still be served
    with pytest.raises(UnavailableError, match="shard 0"):
        shards.search(X[:3], 5)


def wait_until_dead(ray, actor, timeout: float = 60.0) -> None:
    """Return once ``actor`` refuses calls (RayActorError); fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.info.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the killed actor still answered after {timeout:.0f} s")
