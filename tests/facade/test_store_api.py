"""The public façade: the Store's written-out methods, StoreInfo, and the test helpers."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

import lardon_store as ls
from lardon_store.testing import empty_store, store_from_arrays, write_sources


@pytest.fixture
def small(tmp_path) -> ls.Store:
    items = [(f"k{i}", np.arange(i + 1, dtype=np.float32), {"i": i, "even": i % 2 == 0}) for i in range(5)]
    return store_from_arrays(tmp_path / "s", items)


def test_a_typo_is_an_attribute_error_naming_store(small):
    with pytest.raises(AttributeError, match="'Store' object has no attribute 'kyes'"):
        small.kyes  # noqa: B018


def test_store_methods_give_what_the_selection_of_all_entries_gives(small):
    sel = small.all()
    assert small.keys == sel.keys == ["k0", "k1", "k2", "k3", "k4"]
    assert small.ids.tolist() == sel.ids.tolist()
    assert small.shape == sel.shape == (5, (1, 5))
    assert small.ndim == 2 and small.dtype == np.float32 and small.nbytes == 60
    assert small.shape_of(2) == (3,) and small.dtype_of(2) == np.float32
    assert small.metadata(3) == {"i": 3, "even": False}
    np.testing.assert_array_equal(small.entry(4)[1:3], [1, 2])
    np.testing.assert_array_equal(small.by_key("k2").read(), [0, 1, 2])
    assert small.take([4, 0]).keys == ["k4", "k0"]
    assert small.order_by("i", descending=True).keys[0] == "k4"
    assert small.limit(2).keys == ["k0", "k1"]
    assert small.metadata_columns(["even"])["even"].tolist() == [True, False, True, False, True]
    assert small.rows()[1] == {"key": "k1", "shape": [2], "dtype": "<f4", "metadata": {"even": False, "i": 1}}


def test_store_signatures_match_selection_ones():
    """Each method a Store forwards takes the same parameters as the Selection method it calls."""
    for name in ("shape_of", "dtype_of", "metadata", "entry", "by_key", "take", "order_by", "limit",
                 "metadata_columns", "rows"):  # fmt: skip
        store_params = list(inspect.signature(getattr(ls.Store, name)).parameters)
        sel_params = list(inspect.signature(getattr(ls.Selection, name)).parameters)
        assert store_params == sel_params, name


def test_info_is_a_dataclass_that_formats_itself(small):
    info = small.info()
    assert isinstance(info, ls.StoreInfo)
    assert (info.entries, info.bytes, info.shards, info.metadata_keys) == (5, 60, 1, ["even", "i"])
    assert info.dtypes == {"<f4": 5} and info.shape_ranges == {1: ([1], [5])} and info.failed_sources == []
    text = str(info)
    assert text.splitlines()[0].startswith(f"store      {small.root} (catalog revision ")
    assert "entries    5 (0.0 MB in 1 shard(s))" in text and "shapes     1-d: (1..5)" in text
    assert json.loads(json.dumps(info.to_dict()))["entries"] == 5


def test_empty_store_and_write_sources_feed_compile(tmp_path):
    root = empty_store(tmp_path / "s")
    assert len(ls.open(root)) == 0
    src = write_sources(tmp_path / "src", {"a/b": np.arange(4), "c": np.zeros((2, 2))})
    store = ls.compile(src, root)
    assert store.keys == ["a/b", "c"] and store.last_compile.new == 2


def test_store_from_arrays_checks_what_it_writes(tmp_path):
    with pytest.raises(ls.InvalidDataError, match="bad"):
        store_from_arrays(tmp_path / "s", [("bad", np.array(["x"]), {})])
    with pytest.raises(ls.InvalidDataError, match="not an identifier"):
        store_from_arrays(tmp_path / "s", [("k", np.arange(2), {"a-b": 1})])
    assert len(ls.open(tmp_path / "s")) == 0  # nothing of a failed batch was committed


def test_compile_takes_the_parameters_of_the_compiler_pipeline():
    from lardon_store.compiler.pipeline import compile_store

    def shape(function):
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

    assert shape(ls.compile) == shape(compile_store)
