"""Helpers shared by the incremental, crash, lock and gc/verify tests: source trees, a loader, child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pg_helpers import catalog_sql

import lardon_store as ls

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def load(path: str) -> tuple[np.ndarray, dict]:
    """The tests' callback: the .npy array and metadata derived from it."""
    array = np.load(path, allow_pickle=False)
    return array, {"n": int(array.size), "total": float(array.sum()), "name": os.path.basename(path)}


def slow_load(path: str) -> tuple[np.ndarray, dict]:
    """``load`` taking a few milliseconds, so that a kill lands in the middle of a compile."""
    time.sleep(float(os.environ.get("LARDON_TEST_SLEEP", "0.003")))
    return load(path)


def write_npy(path: Path, array: np.ndarray, mtime_ns: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def make_tree(src: Path, n: int, size: int = 64, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_npy(src / f"d{i % 3}" / f"s{i:03d}.npy", rng.standard_normal(int(rng.integers(1, size))).astype("f4"))


def expected(src: Path) -> dict[str, tuple[np.ndarray, dict]]:
    """What a store compiled from ``src`` with ``load`` must hold: key → (array, metadata)."""
    out = {}
    for path in sorted(src.rglob("*.npy")):
        try:
            out[path.relative_to(src).with_suffix("").as_posix()] = load(str(path))
        except ValueError:
            continue
    return out


def store_contents(root: Path) -> dict[str, tuple[np.ndarray, dict]]:
    store = ls.open(root)
    sel = store.all()
    return {key: (np.asarray(sel[i]), sel.metadata(i)) for i, key in enumerate(sel.keys)}


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key][0].dtype == b[key][0].dtype, key
        np.testing.assert_array_equal(a[key][0], b[key][0], err_msg=key)
        assert a[key][1] == b[key][1], key


def check_catalog(root: Path) -> None:
    """integrity_check ok (SQLite), every foreign key resolved, no duplicate live keys."""
    if (root / "catalog.sqlite").exists():
        assert catalog_sql(root, "PRAGMA integrity_check") == [("ok",)]
        assert catalog_sql(root, "PRAGMA foreign_key_check") == []
    dangling = "SELECT count(*) FROM arrays WHERE entry_id NOT IN (SELECT id FROM entries) OR shard_id NOT IN " \
        "(SELECT id FROM shards)"  # fmt: skip
    assert catalog_sql(root, dangling) == [(0,)]
    [(n, distinct)] = catalog_sql(root, "SELECT count(*), count(DISTINCT key) FROM entries WHERE died IS NULL")
    assert n == distinct


def assert_entries_match_sources(root: Path, src: Path, before: dict | None = None) -> None:
    """Every committed entry equals what its source yields now, or (not yet recompiled) yielded ``before``."""
    versions = [expected(src)] + ([before] if before is not None else [])
    for key, (array, md) in store_contents(root).items():
        matches = [
            v for v in versions if key in v and v[key][1] == md and v[key][0].shape == array.shape
            and np.array_equal(v[key][0], array)
        ]  # fmt: skip
        assert matches, f"entry {key!r} equals no version of its source"


CHILD = """
import os, sys
import lardon_store as ls
import lardon_store.catalog.writer as writer
import incremental_helpers as h
writer.BATCH_SOURCES = int(os.environ.get("LARDON_TEST_BATCH", "4"))
mode, src, dst = sys.argv[1:4]
print("ready", flush=True)
try:
    if mode == "compile":
        ls.compile(src, dst, h.slow_load, max_shard_bytes=int(os.environ.get("LARDON_TEST_SHARD", "4096")))
    elif mode == "gc":
        ls.gc_store(dst, max_shard_bytes=int(os.environ.get("LARDON_TEST_SHARD", "4096")), keep_seconds=0)
except ls.LardonStoreError as exc:
    print("ERROR", type(exc).__name__, exc, flush=True)
    sys.exit(3)
print("done", flush=True)
"""


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)])
    env.pop("LARDON_STORE_CRASH_AT", None)
    env.update(extra)
    return env


def start_child(mode: str, src: Path, dst: Path, preexec_fn=None, **extra: str) -> subprocess.Popen:
    """A child running compile or gc; returns once it printed "ready" (imports done)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(src), str(dst)],
        env=child_env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc
