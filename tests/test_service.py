"""The HTTP service against a real `deepcodes serve` process on loopback."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from deepcodes import load

from servers import Server, mnist_files

pytestmark = pytest.mark.xdist_group("service-http")

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return mnist_files(tmp_path_factory.mktemp("svc"))


@pytest.fixture(scope="module")
def server(files, tmp_path_factory):
    index_path, vectors, labels, _, _ = files
    data = tmp_path_factory.mktemp("svc-data") / "data"
    srv = Server(index_path, data, "--gallery", str(vectors), "--labels", str(labels),
                 "--max-batch", "500", "--max-k", "200", "--max-body-mb", "2", token=TOKEN)
    yield srv
    srv.stop()


def test_search_matches_the_index_file(server, files):
    index_path, _, _, X, _ = files
    index = load(index_path)
    queries = X[[3, 500, 1999]] * 0.9
    reply = server.client.post("/search", json={"vectors": queries.tolist(), "k": 10})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    dist, ids = index.search(queries.astype(np.float32), 10)
    assert [r["ids"] for r in results] == ids.tolist()
    assert [r["distances"] for r in results] == dist.tolist()
    by_id = server.client.post("/search", json={"ids": [7, 8], "k": 5, "include": ["labels"]}).json()
    d2, i2 = index.search_by_id([7, 8], 5)
    assert [r["ids"] for r in by_id["results"]] == i2.tolist()
    assert by_id["results"][0]["ids"][0] == 7 and by_id["results"][0]["labels"][0] is not None


def test_add_get_delete_over_http(server, files):
    _, _, _, X, _ = files
    c = server.client
    before = c.get("/stats").json()["ntotal"]
    new = (1 - X[:3]).tolist()
    reply = c.post("/items", json={"ids": [10_000_001, 10_000_002, 10_000_003], "vectors": new})
    assert reply.status_code == 200, reply.text
    assert reply.json()["ntotal"] == before + 3
    hit = c.post("/search", json={"vectors": [new[1]], "k": 1}).json()["results"][0]
    assert hit["distances"][0] == 0
    item = c.get("/items/10000002").json()
    assert item["id"] == 10_000_002 and len(item["code"]) == 4 and len(item["vector"]) == 784
    dup = c.post("/items", json={"ids": [10_000_002], "vectors": [new[0]]})
    assert dup.status_code == 400 and "10000002" in dup.json()["error"]
    assert c.delete("/items/10000002").status_code == 200
    assert c.get("/items/10000002").status_code == 404
    gone = c.delete("/items/10000002")
    assert gone.status_code == 404 and "not stored" in gone.json()["error"]
    assert c.get("/stats").json()["ntotal"] == before + 2
    png = c.get("/items/10000001/image.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


@pytest.mark.parametrize("body, status, words", [
    ({"vectors": [[0.5] * 783], "k": 5}, 400, "dimension 783"),
    ({"vectors": [[0.5] * 784, [0.5] * 10], "k": 5}, 400, "different lengths"),
    ({"vectors": [[1e39] + [0.0] * 783], "k": 5}, 400, "float32"),
    ({"vectors": [[0.5] * 784], "k": 0}, 400, "k=0"),
    ({"vectors": [[0.5] * 784], "k": 201}, 400, "k=201"),
    ({"vectors": [[0.5] * 784], "k": 5, "params": {"nprobe": 3}}, 400, "nprobe"),
    ({"k": 5}, 400, "exactly one"),
    ({"ids": [2**70], "k": 5}, 400, "int64"),
    ({"ids": [-3], "k": 5}, 400, "negative"),
    ({"ids": [123456789], "k": 5}, 400, "123456789"),
    ({"vectors": "nope", "k": 5}, 422, "malformed"),
    ({"ids": [True], "k": 5}, 422, "integer"),
    ({"ids": [5], "k": 5.5}, 422, "integer"),
    ({"vectors": [[0.5] * 784], "k": 5, "params": {"return_scanned": True}}, 400, "return_scanned"),
])
def test_bad_search_requests_get_a_4xx_with_a_message(server, body, status, words):
    reply = server.client.post("/search", json=body)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"]


def test_bad_bodies_nan_and_limits(server):
    c = server.client
    headers = {"Content-Type": "application/json"}
    nan = '{"ids": [50000], "vectors": [[NaN' + ", 0.0" * 783 + "]]}"
    reply = c.post("/items", content=nan, headers=headers)
    assert reply.status_code == 400 and "NaN" in reply.json()["error"]
    reply = c.post("/search", content='{"vectors": [[0.1, 0.2', headers=headers)
    assert reply.status_code == 422 and "malformed" in reply.json()["error"]
    too_many = {"ids": list(range(60_000, 60_501)), "vectors": [[0.0] * 784] * 501}
    reply = c.post("/items", content=json.dumps(too_many, separators=(",", ":")), headers=headers)
    assert reply.status_code in (400, 413) and "limit" in reply.json()["error"]
    big = c.post("/items", content=b"{" + b" " * (3 << 20) + b"}", headers=headers)
    assert big.status_code == 413 and "limit" in big.json()["error"]
    chunked = c.post("/items", content=iter([b"{", b" " * (3 << 20), b"}"]), headers=headers)
    assert chunked.status_code == 413 and "limit" in chunked.json()["error"]
    small_chunks = c.post("/search", content=iter([b'{"ids": [5],', b' "k": 2}']), headers=headers)
    assert small_chunks.status_code == 200 and small_chunks.json()["results"][0]["ids"][0] == 5
    wrong_count = c.post("/items", json={"ids": [1, 2], "vectors": [[0.0] * 784]})
    assert wrong_count.status_code == 400 and "2 ids for 1 vectors" in wrong_count.json()["error"]


def test_token_metrics_and_docs(server):
    import httpx

    assert httpx.get(server.url + "/healthz").status_code == 200
    assert httpx.get(server.url + "/stats").status_code == 401
    assert httpx.get(server.url + "/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
    stats = server.client.get("/stats").json()
    assert stats["ntotal"] >= 2000 and stats["index"]["d"] == 784
    assert stats["gallery"]["image_shape"] == [28, 28, 1] and stats["gallery"]["labels"]
    assert httpx.get(server.url + "/openapi.json").json()["paths"]["/search"]
    metrics = server.client.get("/metrics").text
    assert 'deepcodes_requests_total{endpoint="/search",method="POST",status="200"}' in metrics
    assert "deepcodes_index_items" in metrics and "deepcodes_request_seconds_bucket" in metrics
    assert httpx.get(server.url + "/metrics").status_code == 401


def _stream_adds(server, X, start_id, n_clients, acked, sent, stop):
    """Clients adding one or two vectors per request until ``stop``; acknowledged ids go in ``acked``."""
    import httpx

    def client(c):
        with httpx.Client(base_url=server.url, timeout=30.0) as http:
            i = c
            while not stop.is_set():
                ids = [start_id + 2 * i, start_id + 2 * i + 1][: 1 + i % 2]
                rows = [(j * 7919) % len(X) for j in ids]
                sent.update(ids)
                try:
                    reply = http.post("/items", json={"ids": ids, "vectors": X[rows].tolist()})
                except httpx.TransportError:
                    return
                if reply.status_code == 200:
                    acked.update(ids)
                i += n_clients

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    return threads


def _present(client, ids) -> set[int]:
    reply = client.post("/search", json={"ids": sorted(ids), "k": 1})
    if reply.status_code == 200:
        return set(ids)
    return {i for i in ids if client.get(f"/items/{i}").status_code == 200}


@pytest.mark.slow
def test_sigkill_during_adds_then_a_corrupt_snapshot_and_a_torn_log_lose_nothing(files, tmp_path):
    index_path, vectors, labels, X, _ = files
    data = tmp_path / "data"
    server = Server(index_path, data, "--snapshot-every", "25", "--gallery", str(vectors))
    acked, sent, stop = set(), set(), threading.Event()
    threads = _stream_adds(server, X, 1_000_000, 4, acked, sent, stop)
    deadline = time.monotonic() + 180   # generous for a loaded machine; the loop ends as soon as it can
    snaps = lambda: sorted(p.name for p in (data / "snapshots").glob("snap-*"))  # noqa: E731
    while (len(acked) < 150 or snaps()[0] == "snap-0000000000000000") and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()            # in the middle of the stream: requests are in flight
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 150, "the server acknowledged too few adds before the deadline"
    # Snapshots were taken during the stream and older ones dropped (a third may be left when the
    # kill came between writing a snapshot and deleting the oldest).
    snapshots = sorted((data / "snapshots").glob("snap-*"))
    assert 2 <= len(snapshots) <= 3 and snapshots[0].name != "snap-0000000000000000"

    # Worse than a crash: the newest snapshot's index file is damaged, and the log ends in a torn record.
    newest = snapshots[-1]
    blob = bytearray((newest / "index.dcx").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (newest / "index.dcx").write_bytes(bytes(blob))
    segment = sorted((data / "wal").glob("wal-*.log"))[-1]
    with open(segment, "ab") as f:
        f.write((5000).to_bytes(4, "little") + b"\x00" * 20)

    again = Server(index_path, data)
    try:
        out = again.output()
        assert f"skipped snapshot {newest.name}" in out and "checksum" in out
        assert "skipped a torn final log record" in out
        present = _present(again.client, acked)
        assert present == acked, f"acknowledged adds lost: {sorted(acked - present)[:10]}"
        stats = again.client.get("/stats").json()
        ntotal, again_last_seq = stats["ntotal"], stats["last_seq"]
        unacked_present = {i for i in (sent - acked) if again.client.get(f"/items/{i}").status_code == 200}
        # Nothing else: only adds in flight at the kill (4 clients, up to 2 ids each) may be there too.
        assert ntotal == 2000 + len(acked) + len(unacked_present) and len(unacked_present) <= 8
        row = (min(acked) * 7919) % len(X)
        item = again.client.get(f"/items/{min(acked)}").json()
        assert np.allclose(item["vector"], X[row])
        assert item["code"] == load(index_path).coder.encode(X[row:row + 1])[0].tolist()
    finally:
        again.stop()
    assert "stopped (last snapshot written)" in again.output()     # SIGTERM: a clean stop
    last = sorted((data / "snapshots").glob("snap-*"))[-1]
    assert int(last.name.split("-")[1]) == again_last_seq
