import gzip
import os

import h5py
import numpy as np
import pytest

from deepcodes.data.formats import (read_ann_hdf5, read_bvecs, read_fvecs, read_idx, read_ivecs, read_npy,
                                    read_npz, write_ann_hdf5, write_bvecs, write_fvecs, write_idx,
                                    write_ivecs)
from deepcodes.data.vectors import open_vectors
from deepcodes.errors import FormatError, InputError

VECS = [
    (write_fvecs, read_fvecs, np.float32, ".fvecs"),
    (write_ivecs, read_ivecs, np.int32, ".ivecs"),
    (write_bvecs, read_bvecs, np.uint8, ".bvecs"),
]


def _data(dtype, n=37, d=5, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.normal(size=(n, d)).astype(np.float32)
    if dtype == np.uint8:
        return rng.integers(0, 256, size=(n, d), dtype=np.uint8)
    return rng.integers(-2**31, 2**31 - 1, size=(n, d), dtype=np.int64).astype(np.int32)


def _only_file(folder, name):
    assert sorted(os.listdir(folder)) == [name], "a temporary file was left behind"


@pytest.mark.parametrize("write, read, dtype, suffix", VECS)
def test_vecs_round_trip_mmap_and_copy(tmp_path, write, read, dtype, suffix):
    X = _data(dtype)
    path = tmp_path / f"x{suffix}"
    write(path, X)
    _only_file(tmp_path, path.name)
    assert path.stat().st_size == X.shape[0] * (4 + X.shape[1] * np.dtype(dtype).itemsize)
    mapped = read(path)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    assert mapped.dtype == dtype and mapped.shape == X.shape
    np.testing.assert_array_equal(mapped, X)
    loaded = read(path, mmap=False)
    assert not isinstance(loaded, np.memmap) and loaded.flags.c_contiguous and loaded.dtype == dtype
    np.testing.assert_array_equal(loaded, X)


def test_vecs_layout_is_texmex(tmp_path):
    write_fvecs(tmp_path / "a.fvecs", np.array([[1.5, -2.0, 3.0]], dtype=np.float32))
    raw = (tmp_path / "a.fvecs").read_bytes()
    assert raw == np.array([3], "<i4").tobytes() + np.array([1.5, -2.0, 3.0], "<f4").tobytes()


def test_vecs_writers_check_values(tmp_path):
    write_bvecs(tmp_path / "ok.bvecs", np.array([[0.0, 255.0]]))
    np.testing.assert_array_equal(read_bvecs(tmp_path / "ok.bvecs"), [[0, 255]])
    with pytest.raises(InputError, match="outside"):
        write_bvecs(tmp_path / "b.bvecs", np.array([[0, 256]]))
    with pytest.raises(InputError, match="integer"):
        write_ivecs(tmp_path / "i.ivecs", np.array([[0.5, 1.0]]))
    with pytest.raises(InputError, match="NaN"):
        write_fvecs(tmp_path / "f.fvecs", np.array([[np.nan, 1.0]]))
    with pytest.raises(InputError, match="2-D"):
        write_fvecs(tmp_path / "f.fvecs", np.zeros(3))
    with pytest.raises(InputError, match="2-D"):
        write_fvecs(tmp_path / "f.fvecs", np.zeros((0, 3)))
    assert sorted(os.listdir(tmp_path)) == ["ok.bvecs"]


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "x.fvecs"
    write_fvecs(path, np.ones((2, 3)))
    with pytest.raises(InputError):
        write_fvecs(path, np.full((2, 3), np.inf))
    np.testing.assert_array_equal(read_fvecs(path), np.ones((2, 3)))
    _only_file(tmp_path, "x.fvecs")


@pytest.mark.parametrize("write, read, dtype, suffix", VECS)
def test_vecs_truncated_file(tmp_path, write, read, dtype, suffix):
    path = tmp_path / f"x{suffix}"
    write(path, _data(dtype))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 1)
    with pytest.raises(FormatError, match=f"x{suffix}.*truncated"):
        read(path)


def test_vecs_inconsistent_row_dimension(tmp_path):
    path = tmp_path / "x.fvecs"
    write_fvecs(path, np.zeros((4, 3), dtype=np.float32))
    raw = bytearray(path.read_bytes())
    raw[2 * 16:2 * 16 + 4] = np.array([7], "<i4").tobytes()  # row 2 claims d=7, file size still consistent
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="x.fvecs: row 2 declares dimension 7"):
        read_fvecs(path)
    with pytest.raises(FormatError, match="row 2"):
        read_fvecs(path, mmap=False)


def test_vecs_foreign_empty_and_missing(tmp_path):
    foreign = tmp_path / "notes.fvecs"
    foreign.write_bytes(b"hello world, this is not a vector file\n")
    with pytest.raises(FormatError, match="notes.fvecs"):
        read_fvecs(foreign)
    empty = tmp_path / "empty.bvecs"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        read_bvecs(empty)
    with pytest.raises(FormatError, match="no such file"):
        read_ivecs(tmp_path / "absent.ivecs")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["-idx3-ubyte", "-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    arr = (rng.normal(size=(6, 4, 3)) * 50).astype(dtype)
    path = tmp_path / f"images{suffix}"
    write_idx(path, arr)
    _only_file(tmp_path, path.name)
    out = read_idx(path)
    assert out.shape == arr.shape and out.dtype.newbyteorder("=") == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)
    assert read_idx(path, mmap=False).dtype == np.dtype(dtype)


def test_idx_layout_gzip_and_mmap(tmp_path):
    arr = np.arange(2 * 3 * 2, dtype=np.int32).reshape(2, 3, 2)
    write_idx(tmp_path / "a.idx", arr)
    raw = (tmp_path / "a.idx").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0C, 3])
    assert raw[4:16] == np.array([2, 3, 2], ">u4").tobytes()
    assert raw[16:] == arr.astype(">i4").tobytes()
    mapped = read_idx(tmp_path / "a.idx")
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    write_idx(tmp_path / "a.idx.gz", arr)
    assert gzip.decompress((tmp_path / "a.idx.gz").read_bytes()) == raw
    from_gz = read_idx(tmp_path / "a.idx.gz")
    assert not isinstance(from_gz, np.memmap) and from_gz.dtype == np.int32
    # gzip is recognised by content, not by the name.
    (tmp_path / "renamed.idx").write_bytes((tmp_path / "a.idx.gz").read_bytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "renamed.idx"), arr)


def test_idx_truncated_foreign_and_bad_dtype(tmp_path):
    arr = np.arange(60, dtype=np.uint8).reshape(3, 20)
    path = tmp_path / "t-ubyte"
    write_idx(path, arr)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(FormatError, match="t-ubyte.*truncated"):
        read_idx(path)
    path.write_bytes(path.read_bytes() + b"123456")
    with pytest.raises(FormatError, match="trailing"):
        read_idx(path)
    gz = tmp_path / "t-ubyte.gz"
    write_idx(gz, arr)
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(FormatError, match="t-ubyte.gz"):
        read_idx(gz)
    foreign = tmp_path / "f-ubyte"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(FormatError, match="not an idx file"):
        read_idx(foreign)
    short = tmp_path / "s-ubyte"
    short.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(FormatError, match="header truncated"):
        read_idx(short)
    with pytest.raises(InputError, match="dtype"):
        write_idx(tmp_path / "x.idx", np.zeros((2, 2), dtype=np.int64))


def test_npy_round_trip_and_mmap(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", arr)
    np.testing.assert_array_equal(read_npy(tmp_path / "a.npy"), arr)
    mapped = read_npy(tmp_path / "a.npy", mmap=True)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, arr)


def test_npy_npz_refuse_pickles_and_foreign_files(tmp_path):
    # an object-dtype .npy written by hand: its payload would need unpickling, which must never happen
    with open(tmp_path / "obj.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        f.write(b"\x80\x04N.")
    with pytest.raises(FormatError, match="obj.npy"):
        read_npy(tmp_path / "obj.npy")
    np.savez(tmp_path / "obj.npz", good=np.zeros(2), bad=np.array([[1], "x"], dtype=object))
    with pytest.raises(FormatError, match="obj.npz"):
        read_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "ok.npz", a=np.arange(3), b=np.eye(2, dtype=np.float32))
    out = read_npz(tmp_path / "ok.npz")
    assert sorted(out) == ["a", "b"] and out["b"].dtype == np.float32
    with pytest.raises(FormatError, match="archive, not a single"):
        read_npy(tmp_path / "ok.npz")
    np.save(tmp_path / "one.npy", np.arange(3))
    with pytest.raises(FormatError, match="single .npy"):
        read_npz(tmp_path / "one.npy")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:100])
    with pytest.raises(FormatError, match="cut.npz"):
        read_npz(tmp_path / "cut.npz")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "one.npy").read_bytes()[:-4])
    with pytest.raises(FormatError, match="cut.npy"):
        read_npy(tmp_path / "cut.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(FormatError):
        read_npy(tmp_path / "text.npy")
    with pytest.raises(FormatError, match="no such file"):
        read_npz(tmp_path / "absent.npz")


def _ann(seed=0):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(50, 8)).astype(np.float32)
    test = rng.normal(size=(5, 8)).astype(np.float32)
    d2 = ((test[:, None] - train[None]) ** 2).sum(-1)
    nn = np.argsort(d2, axis=1, kind="stable")[:, :10]
    return train, test, nn, np.sqrt(np.take_along_axis(d2, nn, 1))


def test_ann_hdf5_round_trip(tmp_path):
    train, test, nn, dist = _ann()
    path = tmp_path / "toy.hdf5"
    write_ann_hdf5(path, train, test, nn, dist, distance="angular")
    _only_file(tmp_path, "toy.hdf5")
    out = read_ann_hdf5(path)
    assert out["distance"] == "angular"
    for key, ref, dtype in [("train", train, np.float32), ("test", test, np.float32),
                            ("neighbors", nn, np.int32), ("distances", dist, np.float32)]:
        assert out[key].dtype == dtype
        np.testing.assert_array_equal(out[key], ref.astype(dtype))
    with h5py.File(path, "r") as f:
        assert f.attrs["distance"] == "angular" and f["neighbors"].dtype == np.int32
    np.testing.assert_array_equal(open_vectors(path).rows, train)


def test_ann_hdf5_errors(tmp_path):
    train, test, nn, dist = _ann()
    with h5py.File(tmp_path / "partial.hdf5", "w") as f:
        f["train"], f["test"], f["neighbors"] = train, test, nn
    with pytest.raises(FormatError, match="partial.hdf5.*distances"):
        read_ann_hdf5(tmp_path / "partial.hdf5")
    (tmp_path / "junk.h5").write_bytes(b"\x00" * 64)
    with pytest.raises(FormatError, match="junk.h5"):
        read_ann_hdf5(tmp_path / "junk.h5")
    with pytest.raises(InputError, match="distance"):
        write_ann_hdf5(tmp_path / "x.hdf5", train, test, nn, dist, distance="manhattan")
    with pytest.raises(InputError, match="dimension"):
        write_ann_hdf5(tmp_path / "x.hdf5", train, test[:, :4], nn, dist)
    with pytest.raises(InputError, match="neighbors"):
        write_ann_hdf5(tmp_path / "x.hdf5", train, test, nn[:, :5], dist)
    assert not (tmp_path / "x.hdf5").exists()


def test_ann_hdf5_failed_write_leaves_no_temp(tmp_path, monkeypatch):
    train, test, nn, dist = _ann()
    write_ann_hdf5(tmp_path / "a.hdf5", train, test, nn, dist)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_ann_hdf5(tmp_path / "a.hdf5", train * 2, test, nn, dist)
    _only_file(tmp_path, "a.hdf5")
    np.testing.assert_array_equal(read_ann_hdf5(tmp_path / "a.hdf5")["train"], train)


def test_open_vectors_dispatch(tmp_path):
    X = np.arange(24, dtype=np.uint8).reshape(4, 6)
    write_fvecs(tmp_path / "a.fvecs", X)
    write_ivecs(tmp_path / "a.ivecs", X)
    write_bvecs(tmp_path / "a.bvecs", X)
    np.save(tmp_path / "a.npy", X)
    write_idx(tmp_path / "a-idx3-ubyte", X.reshape(4, 2, 3))
    write_idx(tmp_path / "a-idx3-ubyte.gz", X.reshape(4, 2, 3))
    write_idx(tmp_path / "a.idx", X)
    expected = {"a.fvecs": np.float32, "a.ivecs": np.int32, "a.bvecs": np.uint8, "a.npy": np.uint8,
                "a-idx3-ubyte": np.uint8, "a-idx3-ubyte.gz": np.uint8, "a.idx": np.uint8}
    for name, dtype in expected.items():
        with open_vectors(tmp_path / name) as v:
            assert v.shape == (4, 6) and v.dtype == dtype, name
            np.testing.assert_array_equal(v.rows, X)
            assert v.read().dtype == np.float32
    (tmp_path / "a.bin").write_text("1 2 3")
    with pytest.raises(FormatError, match="unknown vector file type"):
        open_vectors(tmp_path / "a.bin")
    np.save(tmp_path / "flat.npy", np.arange(3))
    with pytest.raises(FormatError, match="not vectors"):
        open_vectors(tmp_path / "flat.npy")
