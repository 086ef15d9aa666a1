"""Round trip: what a callback returns is what a store gives back (arrays, dtypes, shapes, metadata, key order),
and bad input at compile time is refused with an error naming the source file and key, leaving the store intact."""

from __future__ import annotations

import math
import os
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from conftest import write_sources
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lardon_store as ls

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(endianness="?"),
)
ARRAYS = DTYPES.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
LAYOUTS = st.sampled_from(["contiguous", "reversed", "transposed", "strided", "fortran"])

KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
INT64 = st.integers(-(2**63), 2**63 - 1)  # wider ints are refused (test below)
TEXT = st.characters(
    exclude_categories=["Cs"], exclude_characters="\x00"
)  # (NUL is refused: tests in test_query_snapshot.py)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    FINITE,
    st.text(TEXT, max_size=10),
    INT64.map(np.int64),
    st.integers(-(2**31), 2**31 - 1).map(np.int32),
    st.integers(0, 255).map(np.uint8),
    FINITE.map(np.float64),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(np.float32),
    st.booleans().map(np.bool_),
    st.text(TEXT, max_size=5).map(np.str_),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.text(TEXT, max_size=5), inner, max_size=3),
    ),
    max_leaves=8,
)
METADATA = st.dictionaries(KEYS, VALUES, max_size=4)


def plain(value):
    """What a metadata value must come back as: numpy scalars as Python numbers, tuples as lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def same_json(a, b) -> bool:
    """Equal and of the same JSON types all the way down (so np.int64 vs int, or 1 vs 1.0 vs True, differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return a == b


def layout(array: np.ndarray, how: str) -> np.ndarray:
    """``array``'s values, held in memory the way ``how`` says (the values compared are those of the result)."""
    if how == "reversed" and array.ndim:
        return array[::-1]
    if how == "transposed":
        return array.T
    if how == "strided" and array.ndim:
        return np.repeat(array, 2, axis=0)[::2]
    if how == "fortran":
        return np.asfortranarray(array)
    return array


def callback_from(table: dict[str, object]):
    """A callback returning ``table[file name without extension]``."""

    def callback(path: str):
        return table[Path(path).stem]

    return callback


def touch_sources(folder: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.dat").write_text(name)
    return folder


@SETTINGS
@given(items=st.lists(st.tuples(ARRAYS, LAYOUTS, METADATA), min_size=1, max_size=4))
def test_arrays_and_metadata_round_trip(tmp_path_factory, items):
    tmp = tmp_path_factory.mktemp("rt")
    names = [f"s{i:02d}" for i in range(len(items))]
    table = {name: (layout(arr, how), md) for name, (arr, how, md) in zip(names, items)}
    store = ls.compile(touch_sources(tmp / "raw", names), tmp / "store", callback=callback_from(table))
    assert len(store) == len(items)
    assert store.keys == names
    for i, name in enumerate(names):
        source, md = table[name]
        out = store[i]
        assert isinstance(out, np.ndarray)
        assert out.dtype == source.dtype  # byte order included
        assert out.shape == source.shape
        assert out.tobytes() == np.ascontiguousarray(source).tobytes()
        entry = store.entry(i)
        assert entry.key == name
        assert entry.shape == source.shape and entry.dtype == source.dtype
        assert entry.nbytes == source.nbytes
        assert same_json(entry.metadata, plain(md))
        assert same_json(store.metadata(i), plain(md))
    # Reopening gives the same.
    again = ls.open(tmp / "store")
    for i, name in enumerate(names):
        assert again[i].tobytes() == np.ascontiguousarray(table[name][0]).tobytes()


def test_stored_arrays_are_aligned_and_c_contiguous(store, arrays):
    for i, key in enumerate(store.keys):
        assert store.all().columns.offset[i] % 64 == 0
        out = store[i]
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, arrays[key])


def test_numpy_scalar_metadata_become_python_numbers(tmp_path):
    md = {"i": np.int64(3), "u": np.uint16(7), "f": np.float32(0.5), "b": np.bool_(True), "s": np.str_("x"),
          "nested": {"l": [np.int8(-1), (np.float64(2.0), None)]}}  # fmt: skip
    store = ls.compile(touch_sources(tmp_path / "raw", ["a"]), tmp_path / "store",
                       callback=lambda p: (np.zeros(2), md))  # fmt: skip
    got = store.entry(0).metadata
    assert same_json(got, {"i": 3, "u": 7, "f": 0.5, "b": True, "s": "x", "nested": {"l": [-1, [2.0, None]]}})


def test_keys_are_relative_paths_sorted(tmp_path):
    names = ["b", "a/x", "a0", "A", "a_b", "a/y/z", "é", "Z9"]
    write_sources(tmp_path / "raw", {n: np.array([i]) for i, n in enumerate(names)})
    store = ls.compile(tmp_path / "raw", tmp_path / "store", valid_exts=[".npy"])
    assert store.keys == sorted(names)
    for i, key in enumerate(store.keys):
        assert store[i].tolist() == [names.index(key)]
    assert ls.open(tmp_path / "store").keys == sorted(names)


def test_callback_returning_a_list_gives_one_entry_per_item(tmp_path):
    table = {
        "multi": [(np.full(i + 1, i), {"part": i}) for i in range(3)],
        "one": (np.arange(2), {"part": -1}),
        "empty": [],
    }
    store = ls.compile(touch_sources(tmp_path / "raw", table), tmp_path / "store", callback=callback_from(table))
    assert store.keys == ["multi#0", "multi#1", "multi#2", "one"]
    for i in range(3):
        np.testing.assert_array_equal(store[i], np.full(i + 1, i))
        assert store.entry(i).metadata == {"part": i}
    np.testing.assert_array_equal(store[3], np.arange(2))


# --- bad input ---------------------------------------------------------------------------------------------------

GOOD = {"a": (np.arange(6).reshape(2, 3), {"label": "ok"}), "b": (np.ones(4, np.float32), {"label": "fine"})}

BAD_ARRAYS = {
    "object": np.array([1, "x", None], dtype=object),
    "structured": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
    "structured_object": np.zeros(2, dtype=[("a", "<i4"), ("o", "O")]),
    "unicode": np.array(["ab", "c"]),
    "bytes": np.array([b"ab"]),
    "datetime": np.array(["2020-01-01"], dtype="datetime64[D]"),
    "void": np.zeros(2, dtype="V8"),
    "timedelta": np.array([1, 2], dtype="timedelta64[s]"),
}

BAD_METADATA = {
    "int_key": ({1: "x"}, "1"),
    "none_key": ({None: "x"}, "None"),
    "dash_key": ({"a-b": 1}, "a-b"),
    "empty_key": ({"": 1}, "''"),
    "digit_key": ({"1abc": 1}, "1abc"),
    "json_path_key": ({'a"."b': 1}, 'a"."b'),
    "space_key": ({"a b": 1}, "a b"),
    "nan": ({"pitch": float("nan")}, "pitch"),
    "inf": ({"pitch": float("inf")}, "pitch"),
    "np_nan": ({"pitch": np.float32("nan")}, "pitch"),
    "neg_inf_nested": ({"curve": [1.0, -math.inf]}, "curve"),
    "nan_in_dict": ({"stats": {"mean": math.nan}}, "stats"),
    "bytes_value": ({"raw": b"abc"}, "raw"),
    "np_bytes_value": ({"raw": np.bytes_(b"abc")}, "raw"),
    "ndarray_value": ({"curve": np.arange(3)}, "curve"),
    "complex_value": ({"z": 1 + 2j}, "z"),
    "np_complex_value": ({"z": np.complex64(1j)}, "z"),
    "set_value": ({"tags": {"a", "b"}}, "tags"),
    "object_value": ({"thing": object()}, "thing"),
    "nested_int_key": ({"d": {3: "x"}}, "d"),
    "huge_int": ({"n": 10**400}, "n"),
    "int_past_64_bits": ({"n": 2**63}, "n"),
    "nested_huge_int": ({"n": [-(2**70)]}, "n"),
    "not_a_dict": (["label", "x"], None),
}


def _snapshot(path: Path) -> tuple[list[str], list[bytes], list[dict]]:
    s = ls.open(path)
    return s.keys, [s[i].tobytes() for i in range(len(s))], [s.metadata(i) for i in range(len(s))]


@pytest.fixture
def good_store(tmp_path):
    """A store compiled from GOOD, and a callback table the tests spoil."""
    raw = touch_sources(tmp_path / "raw", GOOD)
    ls.compile(raw, tmp_path / "store", callback=callback_from(GOOD), callback_version="v1")
    return raw, tmp_path / "store", _snapshot(tmp_path / "store")


def _compile_bad(raw: Path, dst: Path, name: str, result) -> ls.InvalidDataError:
    """Add source ``name`` (and change 'a') so that the failing compile had good work pending too."""
    touch_sources(raw, [name])
    (raw / "a.dat").write_text("changed")
    table = dict(GOOD, **{name: result})
    table["a"] = (np.full((2, 3), 7), {"label": "changed"})
    with pytest.raises(ls.InvalidDataError) as info:
        ls.compile(raw, dst, callback=callback_from(table), callback_version="v1")
    return info.value


def _committed_before_failure(before):
    """The snapshot expected after _compile_bad: sources sorted before the bad one ('a') were committed whole, the
    bad source left nothing, everything else is as it was."""
    keys, data, metadata = before[0], list(before[1]), list(before[2])
    data[keys.index("a")] = np.full((2, 3), 7).tobytes()
    metadata[keys.index("a")] = {"label": "changed"}
    return keys, data, metadata


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_bad_array_is_refused_naming_the_source(good_store, case):
    raw, dst, before = good_store
    err = _compile_bad(raw, dst, f"zz_{case}", (BAD_ARRAYS[case], {}))
    assert f"zz_{case}.dat" in str(err)
    assert _snapshot(dst) == _committed_before_failure(before)


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_metadata_is_refused_naming_the_source_and_key(good_store, case):
    raw, dst, before = good_store
    md, key = BAD_METADATA[case]
    err = _compile_bad(raw, dst, f"zz_{case}", (np.zeros(2), md))
    assert f"zz_{case}.dat" in str(err)
    if key is not None:
        assert key in str(err)
    assert _snapshot(dst) == _committed_before_failure(before)


def test_bad_item_in_a_list_names_the_item(good_store):
    raw, dst, before = good_store
    err = _compile_bad(raw, dst, "zz_list", [(np.zeros(2), {}), (np.zeros(2), {"bad key": 1})])
    assert "zz_list.dat" in str(err) and "bad key" in str(err) and "1" in str(err)
    assert _snapshot(dst) == _committed_before_failure(before)


def test_callback_returning_garbage_is_refused(good_store):
    raw, dst, before = good_store
    err = _compile_bad(raw, dst, "zz_garbage", "not an array")
    assert "zz_garbage.dat" in str(err)
    assert _snapshot(dst) == _committed_before_failure(before)


def test_callback_returning_a_non_array_is_refused(good_store):
    raw, dst, before = good_store
    err = _compile_bad(raw, dst, "zz_garbage", ("not an array", {}))
    assert "zz_garbage.dat" in str(err)
    assert _snapshot(dst) == _committed_before_failure(before)


def test_two_sources_for_one_key_are_refused(good_store):
    raw, dst, before = good_store
    (raw / "b.npy").write_bytes(b"")
    with pytest.raises(ls.InvalidDataError) as info:
        ls.compile(raw, dst, callback=callback_from(GOOD), callback_version="v1")
    assert "b.dat" in str(info.value) and "b.npy" in str(info.value) and "'b'" in str(info.value)
    assert _snapshot(dst) == before


def test_list_item_key_colliding_with_a_source_is_refused(good_store):
    raw, dst, before = good_store
    touch_sources(raw, ["m", "m#1"])
    table = dict(GOOD, m=[(np.zeros(1), {}), (np.ones(1), {})], **{"m#1": (np.zeros(3), {})})
    with pytest.raises(ls.InvalidDataError) as info:
        ls.compile(raw, dst, callback=callback_from(table), callback_version="v1")
    assert "m#1" in str(info.value)
    assert _snapshot(dst) == before


def test_skip_records_the_failure_and_keeps_the_rest(good_store):
    raw, dst, before = good_store
    touch_sources(raw, ["c"])
    table = dict(GOOD, c=(np.zeros(1), {"x": math.nan}))
    store = ls.compile(raw, dst, callback=callback_from(table), callback_version="v1", on_error="skip")
    assert store.last_compile.failed == 1
    assert _snapshot(dst) == before
    assert [f["path"] for f in store.info().failed_sources] == ["c.dat"]


def test_source_name_that_is_not_utf8_is_refused(good_store):
    raw, dst, before = good_store
    os.rename(raw / "b.dat", os.fsencode(raw) + b"/b\xff.dat")
    with pytest.raises(ls.InvalidDataError) as info:
        ls.compile(raw, dst, callback=callback_from(GOOD), callback_version="v1")
    assert "b\\udcff.dat" in str(info.value)
    assert _snapshot(dst) == before


def test_entries_by_key(store, arrays):
    for key, array in arrays.items():
        view = store.by_key(key)
        assert view.key == key
        np.testing.assert_array_equal(np.asarray(view), array)
        assert isinstance(store[key], (np.ndarray, np.generic))  # a key reads, like a position
        np.testing.assert_array_equal(store[key], array)
    np.testing.assert_array_equal(store["b", 1:, ::2], arrays["b"][1:, ::2])
    with pytest.raises(ls.EntryNotFoundError) as info:
        store.by_key("nope")
    assert isinstance(info.value, KeyError) and "nope" in str(info.value)
    sub = store.all().take([0])
    with pytest.raises(KeyError):
        sub.by_key("b")  # in the store, not in this selection


def test_callback_raising_is_reported_with_its_cause(good_store):
    raw, dst, before = good_store
    touch_sources(raw, ["zz_raises"])

    def callback(path: str):
        if "zz_raises" in path:
            raise RuntimeError("decoder exploded")
        return GOOD[Path(path).stem]

    with pytest.raises(ls.CallbackError) as info:
        ls.compile(raw, dst, callback=callback, callback_version="v1")
    assert "zz_raises.dat" in str(info.value) and "decoder exploded" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert _snapshot(dst) == before


def test_one_extension_given_as_a_string_is_one_extension(tmp_path):
    src = write_sources(tmp_path / "raw", {"a": np.arange(3), "b": np.arange(2)})
    (src / "notes.txt").write_text("not an array")
    store = ls.compile(src, tmp_path / "store", valid_exts=".npy")
    assert store.keys == ["a", "b"]
    assert ls.compile(src, tmp_path / "store2", valid_exts="npy").keys == ["a", "b"]


def _hostile(path: str):
    name = os.path.basename(path)
    x = np.load(path)
    if name == "surrogate.npy":
        return x, {"title": "caf\udce9"}
    if name == "deep.npy":
        deep: list = []
        inner = deep
        for _ in range(5000):
            inner.append([])
            inner = inner[0]
        return x, {"deep": deep}
    if name == "loop.npy":
        loop: dict = {}
        loop["self"] = loop
        return x, {"loop": loop}
    if name == "masked.npy":
        return np.ma.masked_array(x, mask=x > 1), {}
    return x, {"ok": True}


def test_every_hostile_callback_result_is_a_skippable_failure_naming_the_source(tmp_path):
    names = ["surrogate", "deep", "loop", "masked", "fine"]
    src = write_sources(tmp_path / "raw", {n: np.arange(3) for n in names})
    store = ls.compile(src, tmp_path / "store", _hostile, on_error="skip")
    assert store.keys == ["fine"]
    reasons = dict(store.last_compile.failures)
    assert set(reasons) == {f"{n}.npy" for n in names if n != "fine"}
    assert "lone surrogate" in reasons["surrogate.npy"] and "masked array" in reasons["masked.npy"]
    assert "nested more than" in reasons["deep.npy"] and "nested more than" in reasons["loop.npy"]
    with pytest.raises(ls.InvalidDataError, match="deep.npy"):
        ls.compile(src, tmp_path / "store2", _hostile)
