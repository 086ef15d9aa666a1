"""Compiles on any concurrent.futures.Executor (a process pool, a Dask cluster): the same entries as in-process,
tasks killed midway leave only bytes gc reclaims."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from executor_helpers import KillOnce, entries_of, features, write_sources

import lardon_store as ls
from lardon_store.compiler import tasks
from lardon_store.format.layout import PART_PATTERN


def test_a_process_pool_executor_gives_the_entries_of_an_in_process_compile(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "TASK_SOURCES", 4)  # (several tasks, several shards)
    src = write_sources(tmp_path / "src")
    serial = ls.compile(src, tmp_path / "serial", features, on_error="skip")
    with ProcessPoolExecutor(2) as pool:
        pooled = ls.compile(src, tmp_path / "pool", features, on_error="skip", executor=pool)
    assert pooled.last_compile.failures == serial.last_compile.failures and pooled.last_compile.failed == 3
    assert entries_of(pooled) == entries_of(serial)
    assert pooled.info().shards == 8 and pooled.verify().ok
    # Incremental: change one source, delete one, add one.
    np.save(src / "f001.npy", np.arange(7.0))
    (src / "f002.npy").unlink()
    np.save(src / "g999.npy", np.ones(3))
    serial = ls.compile(src, tmp_path / "serial", features, on_error="skip")
    with ProcessPoolExecutor(2) as pool:
        pooled = ls.compile(src, tmp_path / "pool", features, on_error="skip", executor=pool)
    assert (pooled.last_compile.new, pooled.last_compile.changed, pooled.last_compile.deleted) == (1, 1, 1)
    assert entries_of(pooled) == entries_of(serial)
    with pytest.raises(ValueError, match="not both"):
        ls.compile(src, tmp_path / "pool", features, executor=pool, workers=2)


def test_a_failing_source_raises_as_in_process(tmp_path):
    src = write_sources(tmp_path / "src", 8)
    (src / "bad005.npy").rename(src / "g_bad.npy")  # (after the f* sources)
    with pytest.raises(ls.CallbackError, match=r"g_bad.npy: the callback raised ValueError: bad source. Sources"):
        ls.compile(src, tmp_path / "serial", features)
    with ProcessPoolExecutor(1) as pool, pytest.raises(ls.CallbackError, match=r"g_bad.npy: the callback raised Val"):
        ls.compile(src, tmp_path / "pool", features, executor=pool)
    assert (
        ls.open(tmp_path / "pool").keys
        == ls.open(tmp_path / "serial").keys
        == [f"f{i:03d}#{j}" for i in (0, 1, 2, 3, 4, 6, 7) for j in (0, 1)]
    )


def test_a_killed_pool_worker_is_a_clear_error_and_a_rerun_completes(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "TASK_SOURCES", 4)
    src = write_sources(tmp_path / "src", 16)
    kill = KillOnce("f009.npy", str(tmp_path / "killed"))
    with ProcessPoolExecutor(2) as pool, pytest.raises(ls.CallbackError, match="a compile task failed"):
        ls.compile(src, tmp_path / "pool", kill, on_error="skip", executor=pool, callback_version="v1")
    store = ls.open(tmp_path / "pool")
    assert all(k < "f008" for k in store.keys)  # (the sources before the killed task's are kept)
    assert store.verify().ok
    with ProcessPoolExecutor(2) as pool:
        done = ls.compile(src, tmp_path / "pool", kill, on_error="skip", executor=pool, callback_version="v1")
    serial = ls.compile(src, tmp_path / "serial", features, on_error="skip", callback_version="v1")
    assert entries_of(done) == entries_of(serial)
    ls.open(tmp_path / "pool", readonly=False).gc(keep_seconds=0)
    assert not [p for p in (tmp_path / "pool" / "blobs").iterdir() if PART_PATTERN.match(f"blobs/{p.name}")]


def test_a_dask_cluster_gives_the_same_entries_even_when_a_worker_is_killed(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(tasks, "TASK_SOURCES", 4)  # (set here: the tasks are planned in this process)
    src = write_sources(tmp_path / "src", 24)
    serial = ls.compile(src, tmp_path / "serial", features, on_error="skip", callback_version="v1")
    kill = KillOnce("f013.npy", str(tmp_path / "killed"))
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        store = ls.compile(
            src, tmp_path / "dask", kill, on_error="skip", executor=client.get_executor(), callback_version="v1"
        )
    assert (tmp_path / "killed").exists()  # (a worker did die; the scheduler ran its task again elsewhere)
    assert entries_of(store) == entries_of(serial) and store.verify().ok
    assert store.last_compile.failures == serial.last_compile.failures
    parts = [p for p in (tmp_path / "dask" / "blobs").iterdir() if PART_PATTERN.match(f"blobs/{p.name}")]
    assert store.verify().reclaimable_bytes >= sum(p.stat().st_size for p in parts)
    ls.open(tmp_path / "dask", readonly=False).gc(keep_seconds=0)
    assert not [p for p in (tmp_path / "dask" / "blobs").iterdir() if PART_PATTERN.match(f"blobs/{p.name}")]
    assert entries_of(ls.open(tmp_path / "dask")) == entries_of(serial)


def test_the_cli_compiles_on_a_running_dask_scheduler(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    from lardon_store import cli

    src = write_sources(tmp_path / "src", 12)
    serial = ls.compile(src, tmp_path / "serial", features, on_error="skip", callback_version="v1")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        argv = ["compile", str(src), str(tmp_path / "cli"), "--callback", "executor_helpers:features", "--on-error",
                "skip", "--callback-version", "v1", "--scheduler", c.scheduler_address, "--quiet"]  # fmt: skip
        assert cli.main(argv) == 0
    assert "11 new, 0 changed, 0 unchanged, 0 deleted, 1 failed; 22 entries" in capsys.readouterr().out
    assert entries_of(ls.open(tmp_path / "cli")) == entries_of(serial)


class SlowAfterFirst:
    """Raises on the first source (bad005.npy, as ``features`` does); sleeps on the others, counting the calls
    still running (threads share it)."""

    def __init__(self):
        self.running = 0

    def __call__(self, path: str):
        if "bad" in path:
            return features(path)
        self.running += 1
        try:
            time.sleep(0.3)
            return features(path)
        finally:
            self.running -= 1


def test_a_compile_that_stops_waits_for_its_running_tasks(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "TASK_SOURCES", 1)
    src = write_sources(tmp_path / "src", 8)
    callback = SlowAfterFirst()
    with ThreadPoolExecutor(4) as pool:
        with pytest.raises(ls.CallbackError, match="bad005.npy"):
            ls.compile(src, tmp_path / "store", callback, executor=pool)
        assert callback.running == 0  # (no task outlives its compile: it cannot write a shard numbered again)
    assert not [p for p in (tmp_path / "store" / "blobs").iterdir() if PART_PATTERN.match(f"blobs/{p.name}")]


def test_a_task_never_replaces_an_existing_shard(tmp_path):
    src = write_sources(tmp_path / "src", 2)
    root = tmp_path / "store"
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / "shard-000007.bin").write_bytes(b"someone else's bytes")
    with pytest.raises(ls.StoreWriteError, match="holds other bytes already"):
        tasks.compile_task(features, str(root), 7, [str(src / "f000.npy")], None)
    assert (root / "blobs" / "shard-000007.bin").read_bytes() == b"someone else's bytes"
    assert sorted(p.name for p in (root / "blobs").iterdir()) == ["shard-000007.bin"]  # (its part file removed)
