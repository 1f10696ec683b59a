"""The write-ahead log and the durable index, in-process: recovery rules and concurrency."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from deepcodes.coders import ITQ
from deepcodes.errors import FormatError, InputError
from deepcodes.index import HammingIndex
from deepcodes.service.durable import DurableIndex, check_vectors
from deepcodes.service.gallery import Gallery
from deepcodes.service.rwlock import ReadWriteLock
from deepcodes.service.wal import MAGIC, LogRecord, WriteAheadLog


def _records(n, d=4):
    rng = np.random.default_rng(1)
    return [LogRecord(s, "add", np.array([10 * s, 10 * s + 1]), rng.standard_normal((2, d)).astype(np.float32))
            if s % 3 else LogRecord(s, "remove", np.array([10 * (s - 1)])) for s in range(1, n + 1)]


def test_log_round_trip_and_torn_tails(tmp_path):
    wal = WriteAheadLog(tmp_path)
    assert list(wal.open(next_seq=1)) == []
    written = _records(7)
    for r in written:
        wal.append(r)
    wal.close()
    segment = wal.segments()[-1][1]
    full = segment.read_bytes()
    for cut in (len(full) - 1, len(full) - 30, len(full) - 60):   # torn in the body or header
        segment.write_bytes(full[:cut])
        again = WriteAheadLog(tmp_path)
        got = list(again.open(next_seq=1))
        assert [r.seq for r in got] == [1, 2, 3, 4, 5, 6]
        assert again.notes and "torn" in again.notes[0] and "never acknowledged" in again.notes[0]
        for a, b in zip(got, written):
            assert a.op == b.op and np.array_equal(a.ids, b.ids)
            assert (a.vectors is None and b.vectors is None) or np.array_equal(a.vectors, b.vectors)
        again.append(written[6])      # appends go after the last good record
        again.close()
        assert [r.seq for r in WriteAheadLog(tmp_path).open(next_seq=1)] == list(range(1, 8))
        segment.write_bytes(full)


def test_a_bad_record_before_good_ones_refuses_to_start(tmp_path):
    wal = WriteAheadLog(tmp_path)
    list(wal.open(next_seq=1))
    for r in _records(4):
        wal.append(r)
    wal.close()
    segment = wal.segments()[-1][1]
    data = bytearray(segment.read_bytes())
    data[len(MAGIC) + 30] ^= 0x01          # a flipped bit in the first record
    segment.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="acknowledged writes follow it"):
        list(WriteAheadLog(tmp_path).open(next_seq=1))


@pytest.fixture(scope="module")
def small_index(digits):
    X, y = digits
    index = HammingIndex(coder=ITQ(n_bits=16, random_state=0).fit(X))
    index.add(X[:1000], ids=np.arange(1000))
    return index, X, y


def _open(path, small_index, **kw):
    index, X, y = small_index
    gallery = Gallery(X.shape[1])
    gallery.add(np.arange(1000), X[:1000], y[:1000])
    copy = type(index).from_bytes(index.to_bytes())
    return DurableIndex.open(path, copy, gallery, background=False, **kw)


def test_recovery_from_older_snapshot_plus_log(tmp_path, small_index):
    _, X, _ = small_index
    store = _open(tmp_path, small_index)
    store.add([5000, 5001], X[1000:1002])
    assert store.snapshot() == 1
    store.remove([3])
    store.add([5002], X[1002:1003])
    assert store.snapshot() == 3
    store.add([5003], X[1003:1004])
    store.wal.close()                   # a crash: no last snapshot
    newest = tmp_path / "snapshots" / "snap-0000000000000003" / "index.dcx"
    newest.write_bytes(newest.read_bytes()[:-7])
    again = DurableIndex.open(tmp_path, background=False)
    assert any("skipped snapshot snap-0000000000000003" in n for n in again.notes)
    assert any("replayed 3" in n for n in again.notes)
    assert again.ntotal == 1003 and 3 not in again.index and 5003 in again.index
    assert again.gallery.label(5) is not None and np.array_equal(again.gallery.vector(5003), X[1003])


def test_errors_leave_the_store_unchanged(tmp_path, small_index):
    _, X, _ = small_index
    store = _open(tmp_path, small_index)
    size = store.wal.size_bytes()
    for bad in (lambda: store.add([7], X[:1]),                     # already stored
                lambda: store.add([7000, 7000], X[:2]),            # twice in the batch
                lambda: store.add([-1], X[:1]),
                lambda: store.add([7001], X[:1, :10]),             # wrong dimension
                lambda: store.add([7001], np.full((1, X.shape[1]), 1e300)),
                lambda: store.add([7001], np.full((1, X.shape[1]), np.nan)),
                lambda: store.remove([123456])):
        with pytest.raises(InputError):
            bad()
    assert store.ntotal == 1000 and store.wal.size_bytes() == size and store.last_seq == 0


def test_check_vectors_names_the_problem():
    with pytest.raises(InputError, match="float32"):
        check_vectors([[1e39, 0.0]], 2)
    with pytest.raises(InputError, match="NaN or inf"):
        check_vectors([[float("inf"), 0.0]], 2)
    assert check_vectors([[1, 2]], 2).dtype == np.float32


def test_readers_never_see_half_a_batch(tmp_path, small_index):
    _, X, _ = small_index
    store = _open(tmp_path, small_index)
    batches = [np.arange(10_000 + 5 * b, 10_005 + 5 * b) for b in range(20)]
    seen_partial, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            for ids in batches:
                found = store.contains(ids)
                if found.any() and not found.all():
                    seen_partial.append(ids[0])
            d, i = store.search(X[:2], 5)
            assert i.shape == (2, 5)
            time.sleep(0.001)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for ids in batches:
        store.add(ids, X[:5])
    stop.set()
    for t in threads:
        t.join()
    assert not seen_partial and store.ntotal == 1100


def test_rwlock_excludes_writers_from_readers():
    lock, events = ReadWriteLock(), []
    with lock.read():
        t = threading.Thread(target=lambda: lock.write().__enter__() or events.append("w"))
        t.start()
        t.join(0.2)
        assert events == []            # the writer waits for the reader
    t.join(2)
    assert events == ["w"]
