import numpy as np
import pytest

from deepcodes.data.gist import cifar10_gist, gabor_bank, gist
from deepcodes.errors import InputError


@pytest.fixture(scope="module")
def images():
    from deepcodes.data.datasets import load_cifar10

    X, _ = load_cifar10()
    return X[::500][:20]                      # 20 images across the classes


@pytest.fixture(scope="module")
def features(images):
    return gist(images)


def test_shape_dtype_and_determinism(images, features):
    assert features.shape == (20, 512) and features.dtype == np.float32
    assert np.isfinite(features).all() and (features >= 0).all()
    np.testing.assert_array_equal(gist(images), features)


def test_each_image_is_independent_of_its_batch(images, features):
    np.testing.assert_allclose(gist(images[7:8]), features[7:8], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gist(images, chunk_size=3), features, rtol=1e-5, atol=1e-7)


def test_colour_is_read_as_grey_levels(images):
    grey = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(gist(grey[:4]), gist(images[:4]), rtol=1e-5, atol=1e-7)
    same = np.repeat(grey[:2, :, :, None], 3, axis=3)
    np.testing.assert_allclose(gist(same), gist(grey[:2]), rtol=1e-5, atol=1e-7)


def test_flat_image_has_no_energy():
    np.testing.assert_allclose(gist(np.full((2, 32, 32), 77.0)), 0.0, atol=1e-6)


def test_mirror_image_permutes_orientations_and_grid_columns(images, features):
    # A left-right flip maps orientation angle t to pi - t, i.e. orientation o to (8 - o) mod 8, and
    # reverses the grid's columns; equal up to the sampling asymmetry of the even-sized FFT.
    mirrored = gist(images[:, :, ::-1])
    perm = [(8 - o) % 8 for o in range(8)]
    expected = features.reshape(20, 4, 8, 4, 4)[:, :, perm][..., ::-1].reshape(20, 512)
    assert np.abs(mirrored - expected).max() < 0.01 * np.abs(features).max()


def test_filters_cover_scales_and_orientations():
    bank = gabor_bank(64)
    assert bank.shape == (32, 64, 64) and bank.max() <= 1.0 and bank.min() >= 0.0
    # coarser scales put their peak at lower frequencies
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(64) * 64, np.fft.fftfreq(64) * 64, indexing="ij"))
    peaks = [radius.flat[np.argmax(bank[8 * s])] for s in range(4)]
    assert peaks == sorted(peaks, reverse=True)


def test_bad_images_are_clear_errors():
    with pytest.raises(InputError, match="square"):
        gist(np.zeros((2, 32, 16)))
    with pytest.raises(InputError, match="NaN"):
        gist(np.full((1, 32, 32), np.nan))
    with pytest.raises(InputError, match="shape"):
        gist(np.zeros((32, 32)))
    with pytest.raises(InputError, match="empty"):
        gist(np.zeros((0, 32, 32)))


def test_cifar10_gist_is_cached_atomically(images, features, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPCODES_CACHE", str(tmp_path))
    first = cifar10_gist(images)
    np.testing.assert_array_equal(first, features)
    files = list((tmp_path / "gist").glob("*.npy"))
    assert len(files) == 1
    np.save(files[0], np.zeros((20, 512), np.float32) + 1)     # a planted value proves the cache is read
    assert cifar10_gist(images)[0, 0] == 1
    files[0].write_bytes(b"garbage")                            # an unreadable file is recomputed
    np.testing.assert_array_equal(cifar10_gist(images), features)


def test_cifar10_gist_protocols_share_cifar10_sups_split():
    from deepcodes.data.protocols import _cifar10_split

    q, db, tr = _cifar10_split()
    assert len(q) == 1000 and len(db) == 9000 and len(tr) == 5000
    assert not set(q) & set(db) and set(tr) <= set(db)


def test_gist_protocols_sizes_relevance_and_split(monkeypatch, tmp_path):
    # The real descriptors take tens of seconds; a cheap stand-in (8x8 mean-pooled grey levels of the
    # 32x32 images, repeated to 512 values) exercises the protocols' construction.
    from deepcodes.data import gist as gist_module
    from deepcodes.data import protocols

    def fake(images, progress=False):
        grey = images.astype(np.float32).mean(axis=3).reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4))
        return np.tile(grey.reshape(len(images), 64), 8)

    monkeypatch.setenv("DEEPCODES_CACHE", str(tmp_path))
    monkeypatch.setattr(gist_module, "cifar10_gist", fake)
    protocols._cifar10_gist.cache_clear()
    protocols._load.cache_clear()
    try:
        unsup = protocols.load_protocol("cifar10-unsup")
        sup = protocols.load_protocol("cifar10-gist-sup")
        pixels = protocols.load_protocol("cifar10-sup")
        assert (unsup.train.shape, unsup.database.shape, unsup.queries.shape) == ((9000, 512), (9000, 512), (1000, 512))
        assert unsup.relevance == "knn" and unsup.n_neighbors == 100 and unsup.ground_truth().shape == (1000, 100)
        assert (sup.train.shape, sup.database.shape, sup.queries.shape) == ((5000, 512), (9000, 512), (1000, 512))
        assert sup.relevance == "class"
        for a, b in ((sup.train_labels, pixels.train_labels), (sup.database_labels, pixels.database_labels),
                     (sup.query_labels, pixels.query_labels), (unsup.query_labels, pixels.query_labels)):
            np.testing.assert_array_equal(a, b)
        # the stand-in is a function of the pixels, so equal rows prove the same split
        np.testing.assert_allclose(fake(np.round(pixels.queries[:5].reshape(5, 32, 32, 3) * 255)), sup.queries[:5],
                                   rtol=1e-5)
        assert not sup.train.flags.writeable and not unsup.database.flags.writeable
    finally:
        protocols._cifar10_gist.cache_clear()
        protocols._load.cache_clear()
