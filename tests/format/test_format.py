"""The pure format layer: layout names, dtype and shape codecs, the one row validator, metadata keys."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lardon_store.errors import CorruptStoreError, InvalidDataError
from lardon_store.format.codecs import (
    checksum,
    checksum_matches,
    checksum_of_chunks,
    descr_to_dtype,
    dtype_to_descr,
    parse_ints,
    shape_to_text,
)
from lardon_store.format.columns import build_columns, check_row, columns_from_texts, parse_shape
from lardon_store.format.layout import (
    ALIGNMENT,
    MAX_NBYTES,
    MAX_NDIM,
    is_safe_relpath,
    packed_size,
    shard_name,
    shard_number,
)
from lardon_store.format.metadata import from_json, is_key, normalize

NUMERIC = st.sampled_from(["?", "b", "B", "<i2", ">i2", "<u4", "<i8", ">f4", "<f8", "<c8", ">c16", "<f2"])


@given(st.integers(0, 999_999))
def test_shard_names_and_numbers_round_trip(n):
    assert shard_number(shard_name(n)) == n


@pytest.mark.parametrize("path", ["blobs/shard-1.bin", "shard-000001.bin", "blobs/shard-000001.bin.tmp", None, 3])
def test_shard_number_refuses_other_names(path):
    assert shard_number(path) is None


@pytest.mark.parametrize("path", ["", "/abs", "a/../b", "a//b", "./a", "a\\b", "a\x00b", None])
def test_unsafe_relative_paths_are_refused(path):
    assert not is_safe_relpath(path)


@given(st.lists(st.integers(0, 10_000), max_size=20))
def test_packed_size_places_each_array_at_an_aligned_offset(sizes):
    end = 0
    for n in sizes:
        end = end + (-end % ALIGNMENT) + n
    assert packed_size(sizes) == end


@given(NUMERIC)
def test_dtype_descr_round_trip(code):
    dtype = np.dtype(code)
    assert descr_to_dtype(dtype_to_descr(dtype, "x"), "x") == dtype


@pytest.mark.parametrize("dtype", [object, "U3", "S2", "M8[s]", [("a", "<i4")], ("<i4", (2,))])
def test_unstorable_dtypes_are_refused_at_write_and_read(dtype):
    with pytest.raises(InvalidDataError, match="src.npy"):
        dtype_to_descr(np.dtype(dtype), "src.npy")
    with pytest.raises(CorruptStoreError):
        descr_to_dtype(np.dtype(dtype).str, "row")


@given(st.lists(st.integers(0, 2**40), max_size=6))
def test_shape_text_is_json(shape):
    assert json.loads(shape_to_text(tuple(shape))) == shape


@given(st.lists(st.integers(-(10**17), 10**17), max_size=50))
def test_parse_ints_reads_what_group_concat_writes(values):
    assert parse_ints(",".join(map(str, values)), len(values)).tolist() == values


@pytest.mark.parametrize("text", ["1,2,x", "1, 2", "+1,2", "1,2,3", "99999999999999999999,1", None])
def test_parse_ints_refuses_anything_else(text):
    assert parse_ints(text, 2) is None


def test_checksums_name_their_algorithm_and_old_ones_still_verify():
    assert checksum(b"") == "xxh3:2d06800538d394c2"  # XXH3-64 of nothing
    assert checksum(b"abc") == "xxh3:78af5f94892f3950"
    assert checksum_matches(b"abc", checksum(b"abc")) and not checksum_matches(b"abd", checksum(b"abc"))
    assert checksum_matches(b"abc", "crc32:352441c2")  # written by lardon_store 0.1
    assert not checksum_matches(b"abd", "crc32:352441c2") and not checksum_matches(b"abc", "md5:x")
    assert checksum_of_chunks([b"a", b"", b"bc"]) == checksum(b"abc")


def row(shape_text="[2,3]", descr="<f4", offset=0, nbytes=24, size=100):
    dtype = descr_to_dtype(descr, "w")
    return check_row("w", "k", dtype, parse_shape(shape_text), shape_text, offset, nbytes, "blobs/s", size)


def test_check_row_accepts_a_valid_row():
    assert row() == (2, 3)
    assert row("[]", "<f8", 64, 8) == ()
    assert row("[0,5]", "<f4", 64, 0) == (0, 5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shape_text": "[2,-3]"}, "invalid shape"),
        ({"shape_text": "[2,3.0]"}, "invalid shape"),
        ({"shape_text": "not json"}, "invalid shape"),
        ({"shape_text": json.dumps([1] * (MAX_NDIM + 1)), "nbytes": 4}, "invalid shape"),
        ({"offset": -1}, "invalid offset"),
        ({"offset": MAX_NBYTES}, "invalid offset"),
        ({"offset": 1.0}, "invalid offset"),
        ({"nbytes": 20}, "needs 24"),
        ({"shape_text": "[2,0]", "nbytes": 24}, "needs 0"),
        ({"offset": 128}, "past its committed size"),
        ({"shape_text": f"[{2**62},0]", "nbytes": 0}, "impossible shape"),
        ({"shape_text": f"[0,{2**63}]", "nbytes": 0}, "impossible shape"),
        ({"shape_text": f"[{2**64},0]", "nbytes": 0}, "impossible shape"),
        ({"offset": 8}, "not a multiple of 64"),
        ({"shape_text": "[0,5]", "nbytes": 0, "offset": 64}, None),
    ],
)
def test_check_row_refuses_impossible_rows_naming_the_entry(kwargs, message):
    if message is None:
        assert row(**kwargs) == (0, 5)
        return
    with pytest.raises(CorruptStoreError, match="entry 'k'") as info:
        row(**kwargs)
    assert message in str(info.value)


@given(
    st.lists(
        st.tuples(NUMERIC, st.lists(st.integers(0, 5), max_size=3)),
        min_size=1,
        max_size=8,
    )
)
def test_whole_column_reading_equals_row_by_row_reading(items):
    """columns_from_texts (whole columns) and build_columns (row by row) agree on valid rows."""
    rows, offset = [], 0
    for i, (code, shape) in enumerate(items):
        dtype = np.dtype(code)
        nbytes = math.prod(shape) * dtype.itemsize
        rows.append((i + 1, f"k{i}", 7, offset, nbytes, dtype.str, shape_to_text(tuple(shape))))
        offset += nbytes + (-nbytes % ALIGNMENT)
    shards = {7: ("blobs/shard-000001.bin", offset)}
    by_row = build_columns(rows, shards, "w")
    texts = (
        len(rows),
        *(",".join(str(r[j]) for r in rows) for j in (0, 2, 3, 4)),
        *("\0".join(r[j] for r in rows) for j in (5, 6)),
    )
    whole = columns_from_texts(texts, shards)
    assert whole is not None
    for name in ("ids", "shard", "offset", "nbytes", "ndim"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(by_row, name))
    assert [whole.dtypes[c] for c in whole.dtype] == [by_row.dtypes[c] for c in by_row.dtype]
    for i in range(len(rows)):
        assert whole.dims[i, : whole.ndim[i]].tolist() == by_row.dims[i, : by_row.ndim[i]].tolist()


@pytest.mark.parametrize("key", ["a", "_x", "pitch_2", "A9"])
def test_metadata_keys_are_ascii_identifiers(key):
    assert is_key(key)


@pytest.mark.parametrize("key", ["", "9a", "a-b", "a.b", "a\n", "ｓize", "é", None, 1])
def test_other_metadata_keys_are_refused(key):
    assert not is_key(key)
    if isinstance(key, str):
        with pytest.raises(InvalidDataError, match="not an identifier"):
            normalize({key: 1}, "src")


@pytest.mark.parametrize("raw", ["[1]", "nope", None, "1", '"s"', "[" * 100_000])
def test_metadata_json_must_be_an_object(raw):
    with pytest.raises(CorruptStoreError, match="entry 'k' has malformed metadata"):
        from_json(raw, "root: entry 'k'")
    assert from_json('{"a": 1}', "x") == {"a": 1}
