"""Hostile files: every persistable class's saved file, attacked.

* Raw mutations of the bytes (bit flips anywhere or in the header, truncations, insertions,
  deletions, overwritten ranges, appended bytes, edits of the header JSON): the checksums and the
  header checks must turn every one into a clear one-line FormatError, or, where a mutation changes
  nothing, give identical results.
* Consistent mutations: parameters, class name, format version, meta and arrays changed and the
  file rewritten with valid checksums, as an attacker (or a buggy writer) would. Outcome: a clear
  FormatError from the class's state check, or an object whose every method gives well-formed
  output (or a DeepcodesError): never another exception, a crash or a read out of bounds.
* A fuzz run of the loader on arbitrary bytes, arbitrary safetensors headers and arbitrary
  documents of every coder class with valid checksums.

Every class of ``persist.CLASS_MODULES`` is attacked: its small fitted instance comes from
``tests/fitted.py`` (its own factory, or one built from the class's constructor for a coder-like
class), and the coverage test fails, naming the class, where neither exists. A coder's refusal must
come from its own state check (``_check_state``); an index's may still come from persist's last
resort (a one-line FormatError naming the Python error) until the indexes check all of their state.

Outcome counts are printed at the end of the module (``pytest -s -n 0 tests/test_hostile.py``).
"""
import collections
import copy
import functools
import json
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepcodes import persist
from deepcodes.errors import DeepcodesError, FormatError
from fitted import CODER_NAMES, INDEX_NAMES, coder_factories, index_factories, print_tally, queries, saved

pytestmark = pytest.mark.filterwarnings("ignore::deepcodes.errors.FormatWarning")
TALLY: collections.Counter = collections.Counter()
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# The last resort in persist._build, for classes whose _from_state does not yet check everything.
FALLBACK = re.compile(r"\((KeyError|TypeError|ValueError|AttributeError|IndexError): ")


@pytest.fixture(scope="module", autouse=True)
def _print_tally():
    yield
    print_tally("hostile-file probes (class, attack, outcome)", TALLY)


@functools.lru_cache(maxsize=None)
def reference(name: str) -> list:
    return _outputs(persist.loads(saved(name)))


def test_every_persistable_class_has_a_factory():
    built = set(coder_factories()) | set(index_factories())
    missing = sorted(set(persist.CLASS_MODULES) - built)
    assert not missing, f"no small instance of {missing}: add a factory to tests/fitted.py"


# ---- what a loaded object is asked, and what a well-formed answer is ---------------------------
def _probes(obj):
    """(name, call) pairs exercising every kernel a loaded object has, on valid input."""
    Q = queries()
    if not hasattr(obj, "encode") and hasattr(obj, "transform"):     # a front
        yield "transform", lambda: obj.transform(Q)
    elif hasattr(obj, "encode"):
        yield "encode", lambda: obj.encode(Q)
        if obj.code_kind == "quantizer":
            K = 2 ** int(obj.n_bits_per_code)
            codes = (np.arange(len(Q) * obj.code_size).reshape(len(Q), obj.code_size) % K).astype(np.uint8)
            yield "decode", lambda: obj.decode(codes)
            yield "adc_tables", lambda: obj.adc_tables(Q[:4])
            yield "db_bias", lambda: obj.db_bias(codes)
            yield "query_bias", lambda: obj.query_bias(Q[:4])
    else:
        k = min(5, len(obj))
        if k:
            yield "search", lambda: obj.search(Q[:4], k)


def _well_formed(obj, name: str, out) -> None:
    n = len(queries())
    if name == "encode":
        assert out.dtype == np.uint8 and out.shape == (n, obj.code_size)
        if obj.code_kind == "quantizer":
            assert int(out.max()) < 2 ** int(obj.n_bits_per_code)
    elif name == "transform":
        assert out.dtype == np.float32 and out.ndim == 2 and out.shape[0] == n and np.isfinite(out).all()
    elif name == "decode":
        assert out.dtype == np.float32 and out.ndim == 2 and out.shape[0] == n
    elif name == "adc_tables":
        assert out.dtype == np.float32 and out.shape == (4, obj.code_size, 2 ** int(obj.n_bits_per_code))
    elif name in ("db_bias", "query_bias"):
        assert out.shape == ((n,) if name == "db_bias" else (4,))
    elif name == "search":
        dist, ids = out[:2]
        assert dist.shape == ids.shape and ids.dtype == np.int64 and dist.shape[0] == 4
        assert ((ids >= -1) & (ids < 2**62)).all()


def _outputs(obj) -> list:
    return [np.asarray(a) for _, call in _probes(obj) for a in np.atleast_1d(_as_tuple(call()))]


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _refused(name: str, attack: str, exc: FormatError, claimed=None) -> None:
    """Tally a refusal; it must be one line, and for a file that names a coder class (``claimed``,
    default ``name``) it must come from that class's state check, not persist's last resort."""
    message = str(exc)
    assert "\n" not in message and message, f"not a one-line error: {message!r}"
    if (name if claimed is None else claimed) in CODER_NAMES:
        assert not FALLBACK.search(message), f"{name}'s state check let this through to the fallback: {message}"
    TALLY[name, attack, "FormatError"] += 1


# ---- raw mutations -------------------------------------------------------------------------------
def _header_length(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


def _json_paths(tree, prefix=()):
    """Every path (tuple of keys/indices) to a node of a JSON tree, the root excluded."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from _json_paths(value, prefix + (key,))


def _set_path(tree, path, value):
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


JSON_VALUES = st.sampled_from([
    0, -1, 1, 3, 7, 8, 9, 17, 255, 256, 2**31, 2**63 - 1, -2**63, 10**30, 0.5, -0.0, float("nan"),
    float("inf"), 1e300, "", "x", "F32", "U8", "pq", "cnn", "LSH", True, False, None, [], [1], [0, -1],
    [10**12], [[1]], {}, {"a": {"b": 1}}, [{"a": 1}],
]) | st.integers(-3, 300)


@st.composite
def raw_mutations(draw, data: bytes):
    n, head = len(data), _header_length(data)
    kind = draw(st.sampled_from(["flip", "flip-header", "truncate", "insert", "delete", "overwrite",
                                 "append", "header-edit", "document-edit"]))
    out = bytearray(data)
    if kind == "flip":
        bit = draw(st.integers(0, n * 8 - 1))
        out[bit // 8] ^= 1 << (bit % 8)
    elif kind == "flip-header":
        bit = draw(st.integers(0, head * 8 - 1))
        out[bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncate":
        del out[draw(st.integers(0, n - 1)):]
    elif kind == "insert":
        at = draw(st.integers(0, n))
        out[at:at] = draw(st.binary(min_size=1, max_size=8))
    elif kind == "delete":
        at = draw(st.integers(0, n - 1))
        del out[at:at + draw(st.integers(1, 16))]
    elif kind == "overwrite":
        at = draw(st.integers(0, n - 1))
        patch = draw(st.binary(min_size=1, max_size=32))
        out[at:at + len(patch)] = patch
    elif kind == "append":
        out += draw(st.binary(min_size=1, max_size=16))
    else:
        header = json.loads(data[8:head])
        if kind == "document-edit":      # inside the deepcodes document: its checksum is now stale
            target = json.loads(header["__metadata__"]["deepcodes"])
        else:
            target = header
        path = draw(st.sampled_from(list(_json_paths(target))))
        _set_path(target, path, draw(JSON_VALUES))
        if kind == "document-edit":
            header["__metadata__"]["deepcodes"] = json.dumps(target, sort_keys=True)
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        out = bytearray(struct.pack("<Q", len(text)) + text + data[head:])
    return kind, bytes(out)


def _check_raw(name: str, kind: str, mutated: bytes, load) -> None:
    try:
        obj = load(mutated)
    except FormatError as exc:
        _refused(name, f"raw:{kind}", exc)
        return
    for got, want in zip(_outputs(obj), reference(name), strict=True):
        np.testing.assert_array_equal(got, want)
    TALLY[name, f"raw:{kind}", "identical"] += 1


@pytest.mark.parametrize("name", CODER_NAMES + INDEX_NAMES)
@settings(max_examples=45, **SETTINGS)
@given(data=st.data())
def test_raw_mutations_are_refused_or_harmless(name, data):
    original = saved(name)
    kind, mutated = data.draw(raw_mutations(original))
    if mutated == original:
        return
    _check_raw(name, kind, mutated, persist.loads)


@pytest.mark.parametrize("name", ["ITQ", "OPQ", "GSLQuantizer", "ADCIndex", "IVFADCIndex"])
@settings(max_examples=12, **SETTINGS)
@given(data=st.data())
def test_raw_mutations_of_files_loaded_with_mmap(name, data, tmp_path_factory):
    """Memory-mapped loads: with ``verify=True`` every defect is caught; without it, array bytes are
    not hashed (that is the point of mapping), so a flipped code may give other results, but
    never a crash: a FormatError, a DeepcodesError or well-formed output."""
    original = saved(name)
    kind, mutated = data.draw(raw_mutations(original))
    if mutated == original:
        return
    path = tmp_path_factory.mktemp("mmap") / "m.deepcodes"
    path.write_bytes(mutated)
    _check_raw(name, f"mmap-verify:{kind}", mutated, lambda _: persist.load(path, mmap=True, verify=True))
    try:
        obj = persist.load(path, mmap=True)
    except FormatError as exc:
        _refused(name, f"mmap:{kind}", exc)
        return
    _exercise(name, f"mmap:{kind}", obj)


def _exercise(name: str, attack: str, obj) -> None:
    """Every probe gives well-formed output or a DeepcodesError (tallied)."""
    outcome = "loaded, well-formed"
    for probe, call in _probes(obj):
        try:
            out = call()
        except DeepcodesError:
            outcome = "loaded, DeepcodesError on use"
            continue
        _well_formed(obj, probe, out)
    TALLY[name, attack, outcome] += 1


# ---- consistent mutations (valid checksums) ----------------------------------------------------
ARRAY_VALUES = [np.nan, np.inf, -np.inf, 1e30, -1e30, 3e19, 1e19, 0.0, 255, -1, 2**31, 7]


@st.composite
def consistent_mutations(draw, arrays: dict, document: dict):
    arrays = {k: np.array(v) for k, v in arrays.items()}
    document = copy.deepcopy(document)
    kind = draw(st.sampled_from(["param-set", "param-del", "param-add", "class", "meta", "version",
                                 "array-shape", "array-dtype", "array-value", "array-del", "array-add",
                                 "array-swap", "array-roll"]))
    names = sorted(arrays)
    name = draw(st.sampled_from(names))
    arr = arrays[name]
    if kind == "param-set":
        path = draw(st.sampled_from(list(_json_paths(document["params"]))))
        _set_path(document["params"], path, draw(JSON_VALUES))
    elif kind in ("param-del", "param-add"):
        dicts = [()] + [p for p in _json_paths(document["params"]) if isinstance(_get(document["params"], p), dict)]
        where = _get(document["params"], draw(st.sampled_from(dicts)))
        if kind == "param-del" and where:
            del where[draw(st.sampled_from(sorted(where)))]
        else:
            where["bogus"] = draw(JSON_VALUES)
    elif kind == "class":
        document["class"] = draw(st.sampled_from([["LSH"], {"LSH": 1}, 3, None, "os.system", *CODER_NAMES,
                                                  *INDEX_NAMES]))
    elif kind == "meta":
        document["meta"] = draw(st.sampled_from([["x"], "s", 5, None, {"a": {"b": [1, {"c": 2}]}}]))
    elif kind == "version":
        document["format_version"] = draw(st.sampled_from([0, 1, 3, "2", 2.0, True, None, [2]]))
    elif kind == "array-shape":
        arrays[name] = draw(st.sampled_from([
            lambda a: a[:-1] if a.ndim else a[None], lambda a: a[..., :-1] if a.ndim else a,
            lambda a: a[None], lambda a: a.reshape(-1), lambda a: a.T, lambda a: a[:0],
            lambda a: np.concatenate([a, a]) if a.ndim else a,
        ]))(arr)
    elif kind == "array-dtype":
        with np.errstate(invalid="ignore", over="ignore"):
            arrays[name] = arr.astype(draw(st.sampled_from([np.float64, np.float16, np.int64, np.int32, np.uint8,
                                                            np.bool_, np.float32])))
    elif kind == "array-value" and arr.size:
        flat = arr.reshape(-1).copy()
        value = draw(st.sampled_from(ARRAY_VALUES))
        with np.errstate(invalid="ignore", over="ignore"):
            flat[draw(st.integers(0, flat.size - 1))] = (
                value if arr.dtype.kind == "f" else np.array(value if np.isfinite(value) else 0).astype(arr.dtype))
        arrays[name] = flat.reshape(arr.shape)
    elif kind == "array-del":
        del arrays[name]
    elif kind == "array-add":
        arrays[draw(st.sampled_from(["bogus_", "coder.bogus", "network.bogus", name + "x"]))] = arr
    elif kind == "array-swap" and len(names) > 1:
        other = draw(st.sampled_from([n for n in names if n != name]))
        arrays[name], arrays[other] = arrays[other], arrays[name]
    elif kind == "array-roll" and arr.ndim:
        arrays[name] = np.roll(arr, 1, axis=0)
    return kind, arrays, document


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


@pytest.mark.parametrize("name", CODER_NAMES)
@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_consistent_mutations_are_refused_or_safe(name, data):
    _check_consistent_mutation(name, data)


@pytest.mark.parametrize("name", INDEX_NAMES)
@settings(max_examples=30, **SETTINGS)      # each load rebuilds an index's search structures
@given(data=st.data())
def test_consistent_mutations_of_indexes_are_refused_or_safe(name, data):
    _check_consistent_mutation(name, data)


def _check_consistent_mutation(name: str, data) -> None:
    arrays, document = persist.unpack_arrays(saved(name))
    kind, arrays, document = data.draw(consistent_mutations(arrays, document))
    mutated = persist.pack_arrays(arrays, document)
    try:
        obj = persist.loads(mutated)
    except FormatError as exc:
        _refused(name, f"consistent:{kind}", exc, claimed=document.get("class"))
        return
    if kind == "meta":    # meta is free-form: the object and its results are unchanged
        for got, want in zip(_outputs(obj), reference(name), strict=True):
            np.testing.assert_array_equal(got, want)
    _exercise(name, f"consistent:{kind}", obj)


# ---- loader fuzz -------------------------------------------------------------------------------
json_trees = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, **SETTINGS)
@given(blob=st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(blob):
    with pytest.raises(FormatError):
        persist.loads(blob)
    TALLY["-", "fuzz:bytes", "FormatError"] += 1


@settings(max_examples=150, **SETTINGS)
@given(header=st.dictionaries(st.text(max_size=12), json_trees, max_size=4),
       meta=st.one_of(json_trees, st.dictionaries(st.sampled_from(["deepcodes", "deepcodes.sha256", "x"]),
                                                   json_trees.map(json.dumps) | json_trees, max_size=3)),
       tail=st.binary(max_size=64))
def test_fuzz_arbitrary_headers(header, meta, tail):
    header = dict(header, __metadata__=meta)
    text = json.dumps(header).encode()
    with pytest.raises(FormatError):
        persist.loads(struct.pack("<Q", len(text)) + text + tail)
    TALLY["-", "fuzz:header", "FormatError"] += 1


DTYPES = [np.float32, np.float64, np.int64, np.uint8, np.bool_]


@st.composite
def fuzz_documents(draw):
    """A well-formed file (valid checksums) of a coder class with arbitrary params and arrays named
    like the class's own."""
    name = draw(st.sampled_from(CODER_NAMES))
    true_arrays, document = persist.unpack_arrays(saved(name))
    params = draw(st.dictionaries(st.sampled_from(sorted(document["params"]) + ["bogus"]), json_trees, max_size=6))
    if draw(st.booleans()):
        params = {**document["params"], **params}
    arrays = {}
    for array_name in draw(st.lists(st.sampled_from(sorted(true_arrays)), unique=True, max_size=8)):
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        arrays[array_name] = (np.arange(int(np.prod(shape))).reshape(shape) % 7).astype(draw(st.sampled_from(DTYPES)))
    return name, persist.pack_arrays(arrays, dict(document, params=params))


@settings(max_examples=150, **SETTINGS)
@given(case=fuzz_documents())
def test_fuzz_arbitrary_documents(case):
    name, blob = case
    try:
        obj = persist.loads(blob)
    except FormatError as exc:
        _refused(name, "fuzz:document", exc)
        return
    _exercise(name, "fuzz:document", obj)


def test_a_file_describing_a_network_that_cannot_exist_is_a_one_line_format_error():
    import torch

    from deepcodes.nn.loading import load_checked_weights

    for width in (2**70, -3):
        with pytest.raises(FormatError, match="cannot be built") as info:
            load_checked_weights(lambda: torch.nn.Linear(width, 3), {}, "a network coder")
        assert "\n" not in str(info.value)
    TALLY["-", "network of impossible size", "FormatError"] += 2
