"""index_factory: every token builds, trains on real data, searches and round-trips; bad specs are refused."""
import re
from pathlib import Path

import numpy as np
import pytest

import deepcodes
from deepcodes.errors import InputError
from deepcodes.factory import TOKENS

# spec -> code bytes per vector
SPECS = {
    "LSH64,Hamming": 8, "ITQ64,Hamming": 8, "ITQ64,MIH": 8, "UHBDNN32,MIH": 4, "SHBDNN32,Hamming": 4,
    "PQ16,ADC": 16, "PQ32x4,ADC": 32, "OPQ16,ADC": 16, "RQ8,ADC": 8, "IVF1024,PQ16": 16,
    "OPQ16,IVF1024,PQ16": 16, "VLQ1024x64,PQ15": 16, "PCA64,VLQ1024x64,PQ16": 17, "GSL-PQ16,ADC": 16,
    "GSL64,VLQ256x32,PQ8": 9, "ITQ32,MIH4": 4, "DH32,Hamming": 4, "UHBDNN32,IVF64,PQ8": 8, "PCA32,IVF64,PQ8x4": 8,
}
# Short schedules: the tests check wiring and persistence, not the learned codes' quality.
QUICK = {"n_outer": 2, "n_inner": 3, "n_iter": 4, "epochs": 1, "validation_size": 0}


@pytest.fixture(scope="module")
def digits_sup():
    from deepcodes.data import load_protocol

    return load_protocol("digits-sup")


def quick(index):
    """The index with short training schedules for its coder, front and first level."""
    if hasattr(index, "n_iter"):
        index.n_iter = 4
    for part in (getattr(index, "coder", None), getattr(index, "front", None)):
        model = getattr(part, "model", part)
        if model is not None:
            model.set_params(**{k: v for k, v in QUICK.items() if k in model.get_params()})
    return index


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_every_token_builds_trains_searches_and_round_trips(spec, digits_sup, tmp_path):
    p = digits_sup
    index = quick(deepcodes.index_factory(64, spec, random_state=0))
    assert index.spec == spec and not index.is_trained and f"spec={spec!r}" in repr(index)
    index.train(p.train, p.train_labels)
    ids = np.arange(len(p.database), dtype=np.int64) * 7 + 3
    index.add(p.database, ids)
    assert index.code_size == SPECS[spec] and index.describe()["bytes_per_vector"] == SPECS[spec] + 8
    d, i = index.search(p.queries[:20], 10)
    assert set(i.ravel()) <= set(ids) | {-1} and (i[:, 0] >= 0).all()
    path = tmp_path / "index.dc"
    index.save(path, meta={"trained_on": "digits-sup"})
    for loaded in (deepcodes.load(path), deepcodes.load(path, mmap=True), type(index).from_bytes(index.to_bytes())):
        assert loaded.spec == spec and loaded.describe()["spec"] == spec
        np.testing.assert_array_equal(loaded.search(p.queries[:20], 10)[1], i)
        np.testing.assert_array_equal(loaded.search(p.queries[:20], 10)[0], d)
    assert deepcodes.load(path).describe()["trained_on"] == "digits-sup"


@pytest.mark.parametrize("spec", ["SHBDNN32,Hamming", "GSL-PQ16,ADC", "GSL64,VLQ256x32,PQ8", "SHBDNN32,IVF64,PQ8"])
def test_supervised_parts_need_labels(spec, digits_sup):
    index = quick(deepcodes.index_factory(64, spec))
    with pytest.raises(InputError, match="label"):
        index.train(digits_sup.train)
    assert not index.is_trained


@pytest.mark.parametrize("spec, message", [
    ("PQ100,ADC", "more sub-quantizers than the 64 dimensions"),
    ("IVF64,PQ100", "M=100 sub-quantizers exceed the dimension 64"),
    ("PCA32,IVF64,PQ48", "exceed the dimension 32 of the front's output"),
    ("ITQ8,MIH", "MIH needs codes of at least 16 bits"),
    ("ITQ128,Hamming", "at most one bit per dimension"),
    ("ITQ12,Hamming", "multiple of 8"),
    ("PQ8x9,ADC", "bits per sub-code must be >= 1 and <= 8"),
    ("PQ0,ADC", "must be >= 1"),
    ("VLQ64x64,PQ8", "neighbours per centroid must be >= 1 and <= 63"),
    ("PCA100,IVF64,PQ8", "PCA dimension must be >= 1 and <= 64"),
    ("GSL-PQ16x4,ADC", "8 bits per sub-code"),
    ("HNSW32,Flat", "'Flat' cannot end a spec"),
    ("FOO64,Hamming", "'FOO64' is not a binary coder"),
    ("ITQ64,Hamming,MIH", "expected the form"),
    ("PQ16", "at least two tokens"),
    ("PQ16,,ADC", "empty token"),
    ("XYZ,IVF64,PQ8", "'XYZ' is not a front"),
    ("PQ8,PQ8", "'PQ8' is not an inverted file"),
    ("ITQ64,MIH40", "substrings must be >= 1 and <= 32"),
])
def test_bad_specs_are_refused_listing_what_is_valid(spec, message):
    with pytest.raises(InputError, match=re.escape(message)) as err:
        deepcodes.index_factory(64, spec)
    assert f"bad index spec {spec!r}" in str(err.value) and "valid specs:" in str(err.value)
    with pytest.raises(InputError, match="d \\(dimension\\) must be >= 1"):
        deepcodes.index_factory(0, "PQ8,ADC")
    with pytest.raises(InputError, match="a string"):
        deepcodes.index_factory(64, 8)


def test_the_readme_table_lists_every_token():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Indexes and factory strings", 1)[1].split("\n## ", 1)[0]
    for token, _, _ in TOKENS:
        assert f"`{token}`" in section, token
