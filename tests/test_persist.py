import json
import os
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
    assert doc["class"] == "LSH" and doc["format_version"] == 1 and doc["params"]["n_bits"] == 16


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
