"""gc reclaims dead bytes without changing data, even for readers mapping old shards; verify names damage."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from incremental_helpers import (
    assert_same,
    check_catalog,
    expected,
    load,
    make_tree,
    start_child,
    store_contents,
    write_npy,
)
from pg_helpers import catalog_sql

import lardon_store as ls
from lardon_store.cli import main
from lardon_store.io.shards import shard_files_on_disk


def _disk_bytes(dst):
    return sum(shard_files_on_disk(dst).values())


def _build(tmp_path, n=30, max_shard_bytes=4096):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, n)
    ls.compile(src, dst, load, max_shard_bytes=max_shard_bytes)
    return src, dst


def test_gc_after_deletions_reclaims_bytes_and_keeps_data(tmp_path):
    src, dst = _build(tmp_path)
    for path in sorted(src.rglob("*.npy"))[::2]:
        path.unlink()
    write_npy(src / "d1" / "s001.npy", np.arange(500.0))  # a replaced entry leaves dead bytes too
    ls.compile(src, dst, load, max_shard_bytes=4096)
    before_bytes = _disk_bytes(dst)
    report = ls.open(dst).verify()
    assert report.ok and report.retired_bytes > 0  # kept for the generations before this compile
    assert ls.open(dst, readonly=False).gc() == report.reclaimable_bytes  # (the default retention keeps them)
    before_bytes = _disk_bytes(dst)
    freed = ls.open(dst, readonly=False).gc(keep_seconds=0)
    assert freed == before_bytes - _disk_bytes(dst) == report.retired_bytes
    assert_same(store_contents(dst), expected(src))
    check_catalog(dst)
    report = ls.open(dst).verify()
    assert report.ok and report.reclaimable_bytes == report.retired_bytes == 0
    assert ls.gc_store(dst, keep_seconds=0) == 0  # a compact store has nothing left to reclaim
    # compiling after gc appends to new shards, never to a freed name
    write_npy(src / "new.npy", np.ones(3))
    ls.compile(src, dst, load, max_shard_bytes=4096)
    assert_same(store_contents(dst), expected(src))


def test_gc_reclaims_crash_tails_and_orphan_shards(tmp_path):
    src, dst = _build(tmp_path)
    make_tree(src, 40, seed=3)
    proc = start_child("compile", src, dst, LARDON_STORE_CRASH_AT="after_write")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert ls.open(dst).verify().reclaimable_bytes > 0
    assert ls.gc_store(dst) > 0  # (crash leftovers belong to no generation: any gc frees them)
    assert ls.open(dst).verify().reclaimable_bytes == 0
    ls.compile(src, dst, load, max_shard_bytes=4096)
    assert_same(store_contents(dst), expected(src))


def test_reader_with_mapped_old_shard_reads_correct_data_after_gc(tmp_path):
    src, dst = _build(tmp_path)
    reader = ls.open(dst)
    sel = reader.all()
    keys = sel.keys
    old = {key: np.asarray(sel[i]) for i, key in enumerate(keys)}  # maps every shard
    for path in sorted(src.rglob("*.npy"))[:10]:
        path.unlink()
    ls.compile(src, dst, load, max_shard_bytes=4096)
    assert ls.gc_store(dst, keep_seconds=0) > 0
    assert not all((dst / p).exists() for p in sel.columns.shard_paths)  # some mapped shards are unlinked
    for i, key in enumerate(keys):  # including the entries deleted since: the reader's snapshot stays whole
        np.testing.assert_array_equal(sel[i], old[key])
    assert_same(store_contents(dst), expected(src))


def _flip_byte(dst, key, delta=5):
    [(path, offset)] = catalog_sql(
        dst,
        'SELECT s.path, a."offset" FROM entries e JOIN arrays a ON a.entry_id = e.id '
        "JOIN shards s ON s.id = a.shard_id WHERE e.key = ? AND e.died IS NULL",
        (key,),
    )
    with open(dst / path, "r+b") as f:
        f.seek(offset + delta)
        byte = f.read(1)
        f.seek(offset + delta)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_verify_names_the_corrupted_entry_and_source(tmp_path, capsys):
    src, dst = _build(tmp_path)
    assert main(["verify", str(dst)]) == 0
    _flip_byte(dst, "d1/s004")
    report = ls.open(dst).verify()
    assert not report.ok
    assert report.damaged_keys == ["d1/s004"]
    assert report.damaged_sources == ["d1/s004.npy"]
    assert "checksum" in report.damaged[0].reason
    assert main(["verify", str(dst)]) == 1
    out = capsys.readouterr().out
    assert "d1/s004" in out and "d1/s004.npy" in out
    # gc refuses to copy damaged bytes and changes nothing
    for path in sorted(src.rglob("*.npy"))[:3]:
        path.unlink()
    ls.compile(src, dst, load, max_shard_bytes=4096)
    if "d1/s004" in expected(src):
        files = shard_files_on_disk(dst)
        with pytest.raises(ls.CorruptStoreError, match="d1/s004"):
            ls.gc_store(dst, keep_seconds=0)
        assert shard_files_on_disk(dst) == files
    # recompiling the named source repairs the store
    os.utime(src / "d1" / "s004.npy", ns=(1, 1))
    ls.compile(src, dst, load, max_shard_bytes=4096, force=True)
    report = ls.open(dst).verify()
    assert not report.damaged_sources and all(not d.live for d in report.damaged)  # (an older generation's row)
    ls.gc_store(dst, keep_seconds=0)
    assert ls.open(dst).verify().ok


def test_verify_reports_truncated_and_missing_shards(tmp_path):
    src, dst = _build(tmp_path)
    files = sorted(shard_files_on_disk(dst))
    os.truncate(dst / files[0], 10)
    os.unlink(dst / files[-1])
    report = ls.verify_store(dst)
    assert not report.ok
    assert any("truncated" in p for p in report.shard_problems)
    assert any("missing" in p for p in report.shard_problems)
    assert report.damaged and all(d.source for d in report.damaged)


@pytest.mark.parametrize("point", ["gc_before_sync", "gc_after_write", "gc_before_commit", "gc_after_commit"])
def test_kill_during_gc_leaves_a_consistent_store(tmp_path, point):
    src, dst = _build(tmp_path)
    for path in sorted(src.rglob("*.npy"))[::3]:
        path.unlink()
    ls.compile(src, dst, load, max_shard_bytes=4096)
    want = expected(src)
    proc = start_child("gc", src, dst, LARDON_STORE_CRASH_AT=point)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    check_catalog(dst)
    assert_same(store_contents(dst), want)
    assert ls.verify_store(dst).ok
    ls.gc_store(dst, max_shard_bytes=4096)
    assert ls.verify_store(dst).reclaimable_bytes == 0
    assert_same(store_contents(dst), want)
    make_tree(src, 35, seed=9)
    ls.compile(src, dst, load, max_shard_bytes=4096)
    assert_same(store_contents(dst), expected(src))


def test_gc_and_verify_commands_have_help_with_examples(capsys):
    from lardon_store.cli import COMMANDS

    for name in ("gc", "verify"):
        assert "Example:" in COMMANDS[name][1].__doc__
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert f"lardon-store {name} store/" in capsys.readouterr().out
