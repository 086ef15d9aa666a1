"""Processes: a forked child reads what its parent read (and more) through its own maps and connections;
stores and selections pickle as their path and columns, never open handles."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import traceback

import numpy as np
import pytest

import lardon_store as ls

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def reads(store: ls.Store, positions) -> list[np.ndarray]:
    return [store[i] for i in positions] + [np.asarray(store.entry(i)[None][..., None]) for i in positions]


def test_child_reads_after_parent_with_os_fork(store, arrays, tmp_path):
    n = len(store)
    parent = reads(store, [0, 1])  # maps the shard and opens connections in the parent
    parent_keys = store.keys
    out = tmp_path / "child.npz"
    pid = os.fork()
    if pid == 0:  # the child: any failure shows as a non-zero exit status
        code = 1
        try:
            child = reads(store, [0, 1]) + reads(store, range(n))
            keys = store.keys
            np.savez(out, *child, keys=np.array(keys), pid=os.getpid(), reader_pid=store.reader.pid,
                     engine_pid=store.engine_pid)  # fmt: skip
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    with np.load(out) as got:
        child = [got[f"arr_{i}"] for i in range(len(got.files) - 4)]
        assert got["keys"].tolist() == parent_keys
        # The child made its own maps and its own catalog engine.
        assert int(got["reader_pid"]) == int(got["engine_pid"]) == int(got["pid"]) != os.getpid()
    for p, c in zip(parent, child[:4]):
        np.testing.assert_array_equal(p, c)
    for key, c in zip(parent_keys, child[4 : 4 + n]):
        np.testing.assert_array_equal(c, arrays[key])
    # The parent still reads after the child is gone.
    for p, again in zip(parent, reads(store, [0, 1])):
        np.testing.assert_array_equal(p, again)


def _read_in_worker(args):
    sel, i = args
    return sel.keys[i], sel[i], os.getpid()


def test_child_reads_with_multiprocessing_fork(store, arrays):
    sel = store.all()
    before = [sel[i] for i in range(len(sel))]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.map(_read_in_worker, [(sel, i) for i in range(len(sel))] * 2)
    assert {pid for _, _, pid in results} - {os.getpid()}
    for (key, got, _), expected in zip(results, before * 2):
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(got, arrays[key])


def _read_global_store(i):
    return _STORE[i]


_STORE: ls.Store | None = None


def test_forked_pool_inherits_a_store_that_already_mapped(store):
    global _STORE
    _STORE = store
    expected = [store[i] for i in range(len(store))]
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            got = pool.map(_read_global_store, range(len(store)))
    finally:
        _STORE = None
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_pickled_store_round_trips(store, arrays):
    store[0]
    data = pickle.dumps(store)
    assert b"sqlite3" not in data and b"mmap" not in data
    again = pickle.loads(data)
    assert isinstance(again, ls.Store) and again.root == store.root and again.readonly
    assert again.keys == store.keys
    for i, key in enumerate(again.keys):
        np.testing.assert_array_equal(again[i], arrays[key])


def test_pickled_writable_store_stays_writable(store_path):
    writable = ls.open(store_path, readonly=False)
    again = pickle.loads(pickle.dumps(writable))
    assert not again.readonly
    assert len(again) == len(writable)


def test_pickled_selection_round_trips(store, arrays):
    sel = store.select(batch_mode="pad", seed=5).take([2, 1])
    sel[0]
    again = pickle.loads(pickle.dumps(sel))
    assert len(again) == 2 and again.batch_mode == "pad"
    assert again.keys == sel.keys
    for i, key in enumerate(again.keys):
        np.testing.assert_array_equal(again[i], arrays[key])
    np.testing.assert_array_equal(again[:], sel[:])


def test_pickled_entry_view_reads(store, arrays):
    i = store.keys.index("a")
    view = store.entry(i)[1, ::-2]
    again = pickle.loads(pickle.dumps(view))
    np.testing.assert_array_equal(np.asarray(again), arrays["a"][1, ::-2])
