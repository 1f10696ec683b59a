import hashlib
import json
import os
import socket
import stat
import struct

import numpy as np
import pytest

import deepcodes
from deepcodes import persist
from deepcodes.coders import ITQ, LSH, OPQ, PQ, RQ
from deepcodes.errors import FormatError
from deepcodes.index import ADCIndex, HammingIndex
from deepcodes.persist import read_arrays, write_arrays


def _fitted(cls, X):
    if cls in (LSH, ITQ):
        return cls(n_bits=16, random_state=0).fit(X)
    return cls(M=4, n_bits_per_code=4, n_iter=5, random_state=0).fit(X)


@pytest.mark.parametrize("cls", [LSH, ITQ, PQ, OPQ, RQ])
def test_coder_roundtrip(cls, digits, tmp_path):
    X, _ = digits
    coder = _fitted(cls, X)
    path = tmp_path / "model.safetensors"
    coder.save(path, meta={"protocol": "digits-sup"})
    loaded = deepcodes.load(path)
    assert type(loaded) is cls
    assert loaded.get_params() == coder.get_params()
    assert loaded.meta_ == {"protocol": "digits-sup"}
    np.testing.assert_array_equal(loaded.encode(X), coder.encode(X))


@pytest.mark.parametrize("mmap", [False, True])
def test_index_roundtrip_with_coder(digits, tmp_path, mmap):
    X, _ = digits
    for index in (HammingIndex(coder=_fitted(ITQ, X)), ADCIndex(_fitted(OPQ, X))):
        index.add(X)
        path = tmp_path / f"{type(index).__name__}.idx"
        index.save(path)
        loaded = deepcodes.load(path, mmap=mmap)
        assert persist.is_file_mapped(loaded.codes) == mmap
        for a, b in zip(index.search(X[:20], 10), loaded.search(X[:20], 10)):
            np.testing.assert_array_equal(a, b)


def test_loading_never_needs_pickle(digits, tmp_path):
    path = tmp_path / "m.safetensors"
    _fitted(ITQ, digits[0]).save(path)
    raw = path.read_bytes()
    assert b"pickle" not in raw and b"\x80\x04" not in raw[:16]


def test_unfitted_coder_cannot_be_saved(tmp_path):
    with pytest.raises(deepcodes.NotFittedError):
        ITQ(16).save(tmp_path / "x")


def test_missing_truncated_foreign_and_corrupt_files(digits, tmp_path):
    with pytest.raises(FormatError, match="no such"):
        deepcodes.load(tmp_path / "absent.safetensors")
    good = tmp_path / "good.safetensors"
    _fitted(PQ, digits[0]).save(good)
    raw = good.read_bytes()
    truncated = tmp_path / "truncated"
    truncated.write_bytes(raw[: len(raw) - 10])
    with pytest.raises(FormatError, match="truncated"):
        deepcodes.load(truncated)
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    with pytest.raises(FormatError, match="not a deepcodes file"):
        deepcodes.load(foreign)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"abc")
    with pytest.raises(FormatError, match="too short"):
        deepcodes.load(tiny)
    # a genuine safetensors file that deepcodes did not write
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(FormatError, match="not one written by deepcodes"):
        deepcodes.load(other)
    # header bytes garbled
    garbled = bytearray(raw)
    garbled[12:20] = b"\xff" * 8
    (tmp_path / "garbled").write_bytes(bytes(garbled))
    with pytest.raises(FormatError):
        deepcodes.load(tmp_path / "garbled")


def _rewrite_document(path, change):
    arrays, document = read_arrays(path)
    change(document)
    write_arrays(path, arrays, document)


def test_unknown_version_and_class_are_refused(digits, tmp_path):
    path = tmp_path / "m"
    _fitted(ITQ, digits[0]).save(path)
    _rewrite_document(path, lambda d: d.update(format_version=99))
    with pytest.raises(FormatError, match="format version 99"):
        deepcodes.load(path)
    _fitted(ITQ, digits[0]).save(path)
    _rewrite_document(path, lambda d: d.update({"class": "os.system"}))
    with pytest.raises(FormatError, match="unknown class"):
        deepcodes.load(path)


def test_missing_array_is_refused(digits, tmp_path):
    path = tmp_path / "m"
    _fitted(ITQ, digits[0]).save(path)
    arrays, document = read_arrays(path)
    del arrays["rotation_"]
    write_arrays(path, arrays, document)
    with pytest.raises(FormatError, match="missing"):
        deepcodes.load(path)


def test_failed_write_leaves_previous_file_intact(digits, tmp_path, monkeypatch):
    X, _ = digits
    path = tmp_path / "m.safetensors"
    first = _fitted(ITQ, X)
    first.save(path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        ITQ(n_bits=32, random_state=1).fit(X).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    np.testing.assert_array_equal(deepcodes.load(path).encode(X), first.encode(X))


def test_header_is_plain_json(digits, tmp_path):
    path = tmp_path / "m"
    _fitted(LSH, digits[0]).save(path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    doc = json.loads(header["__metadata__"]["deepcodes"])
    assert doc["class"] == "LSH" and doc["format_version"] == persist.FORMAT_VERSION and doc["params"]["n_bits"] == 16


def test_bytes_round_trip_and_lazy_class_table(digits):
    from deepcodes import persist

    coder = _fitted(ITQ, digits[0])
    data = persist.dumps(coder, meta={"k": 1})
    loaded = persist.loads(data)
    np.testing.assert_array_equal(loaded.encode(digits[0]), coder.encode(digits[0]))
    assert loaded.meta_ == {"k": 1}
    with pytest.raises(FormatError):
        persist.loads(data[:-3])
    with pytest.raises(FormatError):
        persist.loads("not bytes")
    for name, module in persist.CLASS_MODULES.items():
        assert persist.class_named(name).__module__ == module
    with pytest.raises(FormatError):
        persist.class_named(["ITQ"])


def test_loading_a_shallow_coder_does_not_import_torch(digits, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "itq.safetensors"
    _fitted(ITQ, digits[0]).save(path)
    code = ("import sys, deepcodes; deepcodes.load(sys.argv[1]); "
            "print('torch' in sys.modules, 'deepcodes.index' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---- checksums and format versions ---------------------------------------------------------------
def _flip_array_byte(path, array_bytes: bytes):
    raw = bytearray(path.read_bytes())
    at = bytes(raw).index(array_bytes) + len(array_bytes) // 2
    raw[at] ^= 0x10
    path.write_bytes(bytes(raw))


def test_checksums_catch_a_flipped_bit_in_an_array(digits, tmp_path):
    X, _ = digits
    coder = _fitted(ITQ, X)
    path = tmp_path / "m.safetensors"
    coder.save(path)
    assert persist.verify(path) == {"path": str(path), "class": "ITQ", "format_version": persist.FORMAT_VERSION,
                                    "arrays": 4, "bytes": path.stat().st_size, "verified": True}
    _flip_array_byte(path, coder.rotation_.tobytes())
    with pytest.raises(FormatError, match="'rotation_' does not match its checksum"):
        deepcodes.load(path)
    with pytest.raises(FormatError, match="checksum"):
        deepcodes.load(path, mmap=True, verify=True)
    with pytest.raises(FormatError, match="checksum"):
        persist.verify(path)
    with pytest.raises(FormatError, match="checksum"):
        persist.loads(path.read_bytes())
    # mmap=True leaves the arrays on disk unhashed (that is what mapping is for): it loads
    assert isinstance(deepcodes.load(path, mmap=True), ITQ)


def test_edited_metadata_is_refused(digits, tmp_path):
    path = tmp_path / "m"
    _fitted(LSH, digits[0]).save(path)
    raw = path.read_bytes()
    edited = raw.replace(b'\\"n_bits\\": 16', b'\\"n_bits\\": 24')
    assert edited != raw
    path.write_bytes(edited)
    with pytest.raises(FormatError, match="does not match its checksum"):
        deepcodes.load(path)


def _write_version_1(path, arrays: dict, document: dict):
    """A file as deepcodes 0.1 wrote it: no checksums, ``arrays`` a list of names."""
    header = {"__metadata__": {"deepcodes": json.dumps(dict(document, format_version=1, arrays=sorted(arrays)))}}
    offset, blobs = 0, []
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        code = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}[arr.dtype]
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        blobs.append(arr.tobytes())
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_version_1_files_load_with_a_warning_and_cannot_be_verified(digits, tmp_path):
    X, _ = digits
    coder = _fitted(ITQ, X)
    arrays, document = persist.unpack_arrays(persist.dumps(coder))
    old = tmp_path / "old.safetensors"
    _write_version_1(old, arrays, document)
    with pytest.warns(deepcodes.errors.FormatWarning, match="no checksums"):
        loaded = deepcodes.load(old)
    np.testing.assert_array_equal(loaded.encode(X), coder.encode(X))
    with pytest.raises(FormatError, match="version 1, which has no checksums"):
        persist.verify(old)
    loaded.save(old)                       # saving again upgrades it
    assert persist.verify(old)["format_version"] == persist.FORMAT_VERSION


@pytest.mark.parametrize("document_text", [
    "[" * 100_000 + "]" * 100_000,                                   # nesting deeper than the parser's stack
    '{"format": "deepcodes", "format_version": 2, "params": ' + "1" * 5000 + "}",   # an int too long to parse
    '{"format": "deepcodes", "format_version": 2',                   # malformed
    '{"format": "deepcodes", "format_version": 2.0}',                # a float version
    '"just a string"',
])
def test_malformed_or_hostile_metadata_is_a_format_error(document_text):
    head = json.dumps({"__metadata__": {"deepcodes": document_text}}).encode()
    with pytest.raises(FormatError):
        persist.loads(struct.pack("<Q", len(head)) + head)


def test_class_name_that_is_not_a_string_and_nested_params(digits):
    arrays, document = persist.unpack_arrays(persist.dumps(_fitted(LSH, digits[0])))
    for change, message in ((dict(document, **{"class": ["LSH"]}), "unknown class"),
                            (dict(document, params=dict(document["params"], n_bits={"a": {"b": 16}})), "nested"),
                            (dict(document, params=[1, 2]), "params and meta must be JSON objects"),
                            (dict(document, meta="x"), "params and meta must be JSON objects")):
        with pytest.raises(FormatError, match=message):
            persist.loads(persist.pack_arrays(arrays, change))


def test_arrays_must_tile_the_data_exactly(digits):
    data = persist.dumps(_fitted(LSH, digits[0]))
    with pytest.raises(FormatError, match="longer than its arrays"):
        persist.loads(data + b"\0" * 8)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    first, second = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])
    header[second]["data_offsets"] = [0, header[second]["data_offsets"][1] - header[second]["data_offsets"][0]]
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with pytest.raises(FormatError, match="overlaps|gap"):
        persist.loads(struct.pack("<Q", len(head)) + head + data[8 + n:])


def test_loads_and_dumps_apply_the_same_checks(digits):
    data = bytearray(persist.dumps(_fitted(PQ, digits[0])))
    data[-1] ^= 1
    with pytest.raises(FormatError, match="checksum"):
        persist.loads(bytes(data))


# ---- save targets ----------------------------------------------------------------------------------
def test_save_refuses_targets_that_are_not_regular_files(digits, tmp_path):
    coder = _fitted(LSH, digits[0])
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    real = tmp_path / "real.safetensors"
    real.write_bytes(b"precious")
    link = tmp_path / "link.safetensors"
    link.symlink_to(real)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    for target, message in ((folder, "it is a folder"), (fifo, "not a regular file"),
                            (link, "symbolic link"), (dangling, "symbolic link"),
                            ("/dev/null", "not a regular file"), (blocker / "m", "not a folder")):
        with pytest.raises(deepcodes.InputError, match=message):
            coder.save(target)
    assert real.read_bytes() == b"precious" and link.is_symlink() and fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "dangling", "fifo", "folder", "link.safetensors",
                                                          "real.safetensors"]


def test_loading_a_fifo_or_folder_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        deepcodes.load(fifo)
    with pytest.raises(FormatError, match="is a folder"):
        deepcodes.load(tmp_path)


def test_save_keeps_an_existing_files_mode(digits, tmp_path):
    coder = _fitted(LSH, digits[0])
    path = tmp_path / "m"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    coder.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o640)
    coder.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    fresh = tmp_path / "fresh"
    coder.save(fresh)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644 & ~umask


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_stale_temp_files_of_killed_saves_are_removed_by_the_next_save(digits, tmp_path):
    path = tmp_path / "m.safetensors"
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]   # the documented naming
    dead, ours, live = (tmp_path / f".m.safetensors.deepcodes-{host}-{pid}-abc.tmp"
                        for pid in (_dead_pid(), os.getpid(), os.getppid()))
    other_host = tmp_path / f".m.safetensors.deepcodes-00000000-{_dead_pid()}-abc.tmp"
    other_file = tmp_path / f".n.safetensors.deepcodes-{host}-{_dead_pid()}-abc.tmp"
    unrelated = tmp_path / ".m.safetensors.mine.tmp"
    for p in (dead, ours, live, other_host, other_file, unrelated):
        p.write_bytes(b"partial")
    _fitted(LSH, digits[0]).save(path)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {path.name, live.name, other_host.name, other_file.name, unrelated.name}


# ---- kill during save, read during save ------------------------------------------------------------
def _two_big_coders():
    """Two LSH coders with 4 MB projections: a save takes long enough to be interrupted."""
    X = np.random.default_rng(0).standard_normal((16, 2048)).astype(np.float32)
    return [LSH(n_bits=512, random_state=seed).fit(X) for seed in (1, 2)]


def _start_writer(path, coders) -> int:
    """A child process that saves the two coders to ``path`` in turn, forever."""
    pid = os.fork()
    if pid == 0:
        try:
            i = 0
            while True:
                coders[i % 2].save(path)
                i += 1
        finally:
            os._exit(1)
    return pid


def _which(loaded, coders) -> int:
    (match,) = [i for i, c in enumerate(coders) if np.array_equal(loaded.projection_, c.projection_)]
    return match


def test_sigkill_during_saves_always_leaves_the_old_or_the_new_file(tmp_path):
    import random
    import signal
    import time

    coders = _two_big_coders()
    path = tmp_path / "m.safetensors"
    rng = random.Random(0)
    interrupted = 0
    for _ in range(30):
        pid = _start_writer(path, coders)
        while not path.exists():
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        interrupted += bool(list(tmp_path.glob(".m.safetensors.deepcodes-*.tmp")))
        _which(deepcodes.load(path), coders)          # verified: exactly one of the two versions
    assert interrupted >= 3, "the kills never landed inside a save: the test did not test anything"
    coders[0].save(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "temp files of killed saves were left behind"


def test_readers_racing_a_writer_always_get_one_whole_version(tmp_path):
    import collections
    import signal

    coders = _two_big_coders()
    path = tmp_path / "m.safetensors"
    coders[0].save(path)
    pid = _start_writer(path, coders)
    seen = collections.Counter()
    try:
        for i in range(400):
            seen[_which(deepcodes.load(path, mmap=bool(i % 2), verify=True), coders)] += 1
            if i >= 40 and min(seen[0], seen[1]) >= 5:
                break
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert min(seen[0], seen[1]) >= 5, f"the writer never raced the readers: {dict(seen)}"
