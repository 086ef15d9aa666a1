"""Crash safety: compile killed (SIGKILL) at random moments and at named points, and a full disk."""

from __future__ import annotations

import random
import resource
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from incremental_helpers import (
    assert_entries_match_sources,
    assert_same,
    check_catalog,
    child_env,
    expected,
    load,
    make_tree,
    start_child,
    store_contents,
    write_npy,
)

import lardon_store as ls


def _has_tables(dst):
    """False when the kill came while the very first compile was still creating the catalog."""
    if not (dst / "catalog.sqlite").exists():
        return False
    con = sqlite3.connect(dst / "catalog.sqlite")
    try:
        return con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'entries'").fetchone()[0] == 1
    finally:
        con.close()


def _recover_and_check(src, dst, before=None):
    if _has_tables(dst):
        check_catalog(dst)
        assert_entries_match_sources(dst, src, before)
    store = ls.compile(src, dst, load)
    check_catalog(dst)
    assert_same(store_contents(dst), expected(src))
    assert store.verify().ok
    again = ls.compile(src, dst, load).last_compile
    assert (again.new, again.changed, again.deleted) == (0, 0, 0)


@pytest.mark.parametrize("seed", range(20))
def test_kill_at_random_moment(tmp_path, seed):
    rnd = random.Random(seed)
    before = None
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 30, seed=seed)
    if seed % 2:  # half the seeds kill an incremental compile of an existing store
        ls.compile(src, dst, load, max_shard_bytes=4096)
        before = expected(src)
        make_tree(src, 40, seed=seed + 100)
    proc = start_child("compile", src, dst)
    try:
        proc.wait(timeout=rnd.uniform(0.0, 0.25))
    except Exception:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    _recover_and_check(src, dst, before)


@pytest.mark.parametrize("point", ["before_sync", "after_write", "before_commit"])
@pytest.mark.parametrize("existing", [False, True])
def test_kill_at_named_point(tmp_path, point, existing):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 12)
    before = None
    if existing:
        ls.compile(src, dst, load, max_shard_bytes=4096)
        before = expected(src)
        make_tree(src, 20, seed=7)
    proc = start_child("compile", src, dst, LARDON_STORE_CRASH_AT=point)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    _recover_and_check(src, dst, before)


def _limit(nbytes):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


def _catalog_bytes(dst):
    return max(p.stat().st_size for p in dst.glob("catalog.sqlite*"))


@pytest.mark.sqlite_only  # (the SQLite catalog file itself)
def test_disk_full_on_shard(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 6)
    ls.compile(src, dst, load)
    for i in range(20):
        write_npy(src / "big" / f"b{i:02d}.npy", (i + 1.0) * np.ones(32_000))
    limit = _catalog_bytes(dst) + 200_000
    proc = start_child("compile", src, dst, preexec_fn=_limit(limit), LARDON_TEST_SHARD=str(1 << 30))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "StoreWriteError" in out and "shard-" in out and "disk may be full" in out
    check_catalog(dst)
    assert_entries_match_sources(dst, src)
    _recover_and_check(src, dst)


@pytest.mark.sqlite_only  # (the SQLite catalog file itself)
def test_disk_full_on_catalog(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 4)
    ls.compile(src, dst, load)
    limit = _catalog_bytes(dst) + 16_000
    con = sqlite3.connect(dst / "catalog.sqlite")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    # Tiny arrays: the shard stays small while the catalog (one row per entry, plus the WAL) outgrows the limit.
    for i in range(300):
        write_npy(src / "many" / f"m{i:03d}.npy", np.ones(1))
    proc = start_child("compile", src, dst, preexec_fn=_limit(limit), LARDON_TEST_BATCH="1000", LARDON_TEST_SLEEP="0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "StoreWriteError" in out and "catalog.sqlite" in out
    check_catalog(dst)
    assert_entries_match_sources(dst, src)
    _recover_and_check(src, dst)


ATOMIC_DDL_CHILD = """
import os, sys
from lardon_store.catalog.engine import locate, make_engine
engine = make_engine(locate(sys.argv[1]), readonly=False)
with engine.begin() as conn:
    conn.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
    os.kill(os.getpid(), 9)
"""


def test_schema_changes_are_atomic(tmp_path):
    """A kill in the middle of a migration (DDL) leaves no half-made schema behind."""
    proc = subprocess.run([sys.executable, "-c", ATOMIC_DDL_CHILD, str(tmp_path)], env=child_env())
    assert proc.returncode == -signal.SIGKILL
    con = sqlite3.connect(tmp_path / "catalog.sqlite")
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone() == (0,)
    con.close()
