"""Bytes before rows, with the fsync of one batch overlapping the callbacks of the next (``CatalogWriter.send``).

``os.fsync`` is wrapped to be slow and to record how far each shard file was durable; the catalog's array inserts are
checked at the moment they run: every row must point at bytes an fsync had already covered.
"""

from __future__ import annotations

import errno
import os
import threading
import time

import numpy as np
import pytest
from incremental_helpers import assert_same, expected, load, make_tree, store_contents

import lardon_store as ls
import lardon_store.catalog.writer as writer_module
from lardon_store.errors import StoreWriteError


class Durability:
    """What the wrapped fsync saw: per inode, the largest size an fsync completed on."""

    def __init__(self, fail_at: int | None = None, delay: float = 0.02):
        self.synced: dict[int, int] = {}
        self.calls = 0
        self.fail_at, self.delay = fail_at, delay
        self.lock = threading.Lock()
        self.checked_rows = 0
        self.overlapped = 0  # array inserts made while another fsync was still running
        self.root = None

    def install(self, monkeypatch):
        real_fsync, real_many = os.fsync, writer_module.driver_many
        running = []

        def fsync(fd):
            with self.lock:
                self.calls += 1
                call = self.calls
            if self.fail_at is not None and call >= self.fail_at:
                raise OSError(errno.EIO, "Input/output error (injected)")
            running.append(call)
            try:
                st = os.fstat(fd)
                time.sleep(self.delay)
                real_fsync(fd)
            finally:
                running.remove(call)
            with self.lock:
                self.synced[st.st_ino] = max(self.synced.get(st.st_ino, 0), st.st_size)

        def driver_many(conn, sql, rows):
            if sql.startswith("INSERT INTO arrays"):
                self.overlapped += bool(running)
                paths = dict(conn.exec_driver_sql("SELECT id, path FROM shards").fetchall())
                for _, _, shard_id, offset, nbytes, *_ in rows:
                    inode = os.stat(self.root / paths[shard_id]).st_ino
                    assert offset + nbytes <= self.synced.get(inode, -1), (
                        "a row committed before its bytes were durable"
                    )
                    self.checked_rows += 1
            return real_many(conn, sql, rows)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(writer_module, "driver_many", driver_many)
        monkeypatch.setattr(writer_module, "BATCH_BYTES", 40_000)
        original_init = writer_module.CatalogWriter.__init__

        def init(writer, engine, root, *args, **kwargs):
            self.root = root
            original_init(writer, engine, root, *args, **kwargs)

        monkeypatch.setattr(writer_module.CatalogWriter, "__init__", init)
        return self


def test_rows_commit_only_after_their_bytes_are_durable(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 40, size=20_000)
    seen = Durability().install(monkeypatch)
    summary = ls.compile(src, dst, load, max_shard_bytes=300_000).last_compile
    assert summary.new == 40
    assert len(summary.generations) >= 5  # (several batches, each its own generation)
    assert seen.checked_rows == 40
    assert seen.overlapped > 0  # (the test exercised a batch committing while a later one was syncing)
    assert_same(store_contents(dst), expected(src))


def test_a_failed_fsync_commits_nothing_after_it(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 40, size=20_000)
    with monkeypatch.context() as patch:
        seen = Durability(fail_at=4).install(patch)
        with pytest.raises(StoreWriteError, match="syncing the shard"):
            ls.compile(src, dst, load, max_shard_bytes=300_000)
        assert seen.checked_rows < 40  # (what committed before the failure was checked against durable bytes)
    store = ls.open(dst)
    assert store.verify().ok
    kept = store_contents(dst)
    want = expected(src)
    assert set(kept) < set(want)
    assert_same(kept, {key: want[key] for key in kept})
    ls.compile(src, dst, load)
    assert_same(store_contents(dst), want)


@pytest.mark.parametrize("n", [1, 3])
def test_small_compiles_and_one_batch(tmp_path, n):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, n, size=8)
    assert ls.compile(src, dst, load).last_compile.new == n
    assert_same(store_contents(dst), expected(src))
    np.testing.assert_equal(len(ls.open(dst)), n)
