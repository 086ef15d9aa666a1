"""One writer at a time; readers never blocked and always consistent; an open Store holds no lock."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from incremental_helpers import assert_entries_match_sources, expected, load, make_tree, start_child
from pg_helpers import catalog_sql

import lardon_store as ls
from lardon_store.io.lock import store_lock


def _wait_for_first_commit(dst, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(ls.open(dst)) > 0:
                return
        except ls.LardonStoreError:
            pass
        assert proc.poll() is None, "the child finished before it could be observed"
        time.sleep(0.01)
    raise AssertionError("the child never committed")


def _snapshot(dst):
    """Every entry's key and array, from one read transaction of the catalog (what a reader process sees)."""
    rows = catalog_sql(
        dst,
        'SELECT e.key, s.path, a."offset", a.nbytes, a.dtype, a.shape FROM entries e '
        "JOIN arrays a ON a.entry_id = e.id JOIN shards s ON s.id = a.shard_id WHERE e.died IS NULL ORDER BY e.key",
    )
    arrays = []
    for _, path, offset, nbytes, dtype, shape in rows:
        with open(dst / path, "rb") as f:
            f.seek(offset)
            arrays.append(np.frombuffer(f.read(nbytes), dtype=dtype).reshape(json.loads(shape)))
    return [row[0] for row in rows], arrays


def test_second_compile_fails_at_once(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 60)
    proc = start_child("compile", src, dst, LARDON_TEST_SLEEP="0.05", LARDON_TEST_BATCH="2")
    try:
        _wait_for_first_commit(dst, proc)
        started = time.monotonic()
        with pytest.raises(ls.StoreLockedError, match="another process is writing"):
            ls.compile(src, dst, load)
        with pytest.raises(ls.StoreLockedError):
            ls.gc_store(dst)
        assert time.monotonic() - started < 2.0
    finally:
        proc.kill()
        proc.wait()


def test_store_returned_by_compile_holds_no_lock(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 5)
    store = ls.compile(src, dst, load)
    with store_lock(dst):  # would raise StoreLockedError if the returned store held the lock
        pass
    assert len(store) == 5
    again = ls.compile(src, dst, load)
    assert again.last_compile.unchanged == 5
    assert ls.gc_store(store.root) >= 0
    assert len(store) == 5


def test_reader_sees_consistent_snapshots_during_compile(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 30)
    ls.compile(src, dst, load)
    before = expected(src)
    make_tree(src, 45, size=200, seed=5)  # changes the 30 sources and adds 15
    after = expected(src)
    proc = start_child("compile", src, dst, LARDON_TEST_SLEEP="0.01", LARDON_TEST_BATCH="3")
    seen = set()
    try:
        while proc.poll() is None:
            keys, arrays = _snapshot(dst)
            assert len(set(keys)) == len(keys)
            assert set(before) <= set(keys)  # a source being replaced never disappears from a snapshot
            for key, array in zip(keys, arrays):
                assert any(key in v and np.array_equal(v[key][0], array) for v in (before, after)), key
            seen.add(len(keys))
            sel = ls.open(dst).all()  # the Store API's snapshot reads whole: no missing or short shard
            assert all(np.asarray(sel[i]).size > 0 for i in range(len(sel)))
        assert proc.wait() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(seen) >= 2, "the reader should have observed the compile in progress"
    assert_entries_match_sources(dst, src)
    assert len(ls.open(dst)) == 45
