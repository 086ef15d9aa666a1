"""Generations: versioned rows, a Store always current, pinned selections, time travel, manifests, gc retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from incremental_helpers import child_env

import lardon_store as ls
from lardon_store.testing import write_sources


def labelled(path: str) -> tuple[np.ndarray, dict]:
    """The array, with metadata that names it and sums it (so that bytes and metadata can be checked together)."""
    x = np.load(path)
    return x, {"name": os.path.basename(path), "total": float(x.sum())}


def build(tmp_path: Path, names=("a", "b", "c")) -> tuple[Path, Path]:
    src = write_sources(tmp_path / "src", {n: np.full(4, i + 1, np.float32) for i, n in enumerate(names)})
    dst = tmp_path / "store"
    ls.compile(src, dst, labelled)
    return src, dst


def consistent(sel: ls.Selection) -> None:
    """Every entry's key, metadata and bytes belong together."""
    for i, key in enumerate(sel.keys):
        md = sel.metadata(i)
        assert md["name"] == key + ".npy"
        assert float(np.asarray(sel[i]).sum()) == md["total"]


def test_ids_are_never_reused_and_old_selections_stay_whole(tmp_path):
    """Deleting c and adding z used to give z c's id: an old selection then named z but read c's bytes."""
    src, dst = build(tmp_path)
    store = ls.open(dst)
    old = store.all()
    (src / "c.npy").unlink()
    np.save(src / "z.npy", np.full(4, 26, np.float32))
    ls.compile(src, dst, labelled)
    assert old.keys == ["a", "b", "c"]
    consistent(old)
    assert len(old.where("name == 'z.npy'")) == 0
    now = store.all()
    assert now.keys == ["a", "b", "z"] and now.generation == store.generation > old.generation
    consistent(now)
    assert set(now.ids.tolist()).isdisjoint({int(old.ids[2])})
    assert store.where("name == 'z.npy'")[0].tolist() == [26.0] * 4
    ls.gc_store(dst, keep_seconds=0)  # c's generation is reclaimed: never z's data, a clear error
    with pytest.raises(ls.GenerationExpiredError, match=f"generation {old.generation}"):
        _ = old.keys
    consistent(store.all())


STALE_HANDLE_CHILD = """
import sys, numpy as np, lardon_store as ls
from test_generations import labelled
src, dst = sys.argv[1:3]
ls.compile(src, dst, labelled)
ls.gc_store(dst, keep_seconds=0)
"""


def test_a_store_handle_sees_commits_from_another_process(tmp_path):
    src, dst = build(tmp_path, names=[f"s{i}" for i in range(8)])
    store = ls.open(dst)
    assert len(store) == 8 and store["s0"].tolist() == [1.0] * 4
    first = store.all()
    (src / "s0.npy").unlink()
    np.save(src / "s9.npy", np.full(4, 99, np.float32))
    np.save(src / "s5.npy", np.full(6, 55, np.float32))
    here = Path(__file__).parent
    env = child_env(PYTHONPATH=os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", STALE_HANDLE_CHILD, str(src), str(dst)], env=env, check=True, timeout=120)
    assert len(store) == 8 and store.keys == [f"s{i}" for i in range(1, 8)] + ["s9"]
    assert store.all() is not first and store.all().generation == store.generation
    assert store[0].tolist() == [2.0] * 4  # s1, never the deleted s0
    assert store["s5"].tolist() == [55.0] * 6 and store[-1].tolist() == [99.0] * 4
    assert store.info().entries == 8 and store.info().generation == store.generation
    assert [float(np.asarray(store[i]).sum()) for i in range(8)] == [store.metadata(i)["total"] for i in range(8)]
    with pytest.raises(ls.EntryNotFoundError):
        store["s0"]
    assert store.all() is store.all()  # nothing changed: no reload


def test_history_counts_every_committing_write(tmp_path):
    src, dst = build(tmp_path)
    (src / "a.npy").unlink()
    np.save(src / "b.npy", np.zeros(2, np.float32))
    ls.compile(src, dst, labelled)
    ls.gc_store(dst, keep_seconds=0)
    with ls.LardonParser(None, dst) as parser:
        parser.register(np.arange(3), {"name": "p.npy", "total": 3.0}, "p")
    history = ls.open(dst).history()
    assert [(h.generation, h.operation, h.added, h.removed) for h in history] == [
        (1, "create", 0, 0),
        (2, "compile", 3, 0),
        (3, "compile", 1, 2),  # b replaced, a removed
        (4, "gc", 0, 0),
        (5, "lardon parser", 1, 0),
    ]
    assert all(h.created_at.tzinfo is not None for h in history)
    assert history[0].created_at <= history[-1].created_at
    assert ls.open(dst).generation == 5


def test_time_travel_gives_each_generation_back(tmp_path):
    src, dst = build(tmp_path)
    store = ls.open(dst)
    g1 = store.generation
    np.save(src / "a.npy", np.full(4, 7, np.float32))
    (src / "b.npy").unlink()
    ls.compile(src, dst, labelled)
    then = store.at(g1)
    assert then.generation == g1 and then.keys == ["a", "b", "c"]
    assert then["a"].tolist() == [1.0] * 4 and then.metadata(0)["total"] == 4.0
    assert store.at(store.generation).keys == ["a", "c"] and store.at(store.generation)["a"].tolist() == [7.0] * 4
    assert len(store.at(1)) == 0  # the empty store it was created as
    with pytest.raises(ls.GenerationNotFoundError, match="does not exist"):
        store.at(store.generation + 1)
    consistent(then.where("total > 3").order_by("total").limit(5))
    assert then.where("total > 3").generation == g1


def test_a_manifest_reproduces_a_selection(tmp_path):
    src, dst = build(tmp_path)
    store = ls.open(dst)
    sel = store.where("total >= 8").order_by("total", descending=True)
    manifest = json.loads(json.dumps(sel.manifest()))
    assert manifest["store_id"] == store.store_id and manifest["generation"] == sel.generation
    assert manifest["query"] == "total >= 8" and manifest["entries"] == 2
    np.save(src / "c.npy", np.full(4, 30, np.float32))
    ls.compile(src, dst, labelled)
    again = ls.open(dst).from_manifest(manifest)
    assert again.keys == sel.keys == ["c", "b"] and again.generation == sel.generation
    assert again[0].tolist() == [3.0] * 4  # the bytes it was trained on, not today's
    other_src = write_sources(tmp_path / "other", {"a": np.zeros(1)})
    other = ls.compile(other_src, tmp_path / "other_store")
    with pytest.raises(ls.LardonStoreError, match="the manifest is of store"):
        other.from_manifest(manifest)
    with pytest.raises(ls.LardonStoreError, match="not a lardon_store manifest"):
        store.from_manifest({"ids": [1]})
    ls.gc_store(dst, keep_seconds=0)
    with pytest.raises(ls.GenerationExpiredError, match="keep_seconds"):
        ls.open(dst).from_manifest(manifest)


def test_gc_keeps_what_the_retention_names(tmp_path):
    src, dst = build(tmp_path)
    gens = []
    for value in (10, 20, 30):
        np.save(src / "a.npy", np.full(4, value, np.float32))
        ls.compile(src, dst, labelled)
        gens.append(ls.open(dst).generation)
    store = ls.open(dst)
    assert ls.gc_store(dst) == 0  # everything is younger than a day
    assert ls.gc_store(dst, keep_seconds=0, keep_generations=1) > 0
    assert store.at(gens[1])["a"].tolist() == [20.0] * 4  # kept: one generation before the current
    with pytest.raises(ls.GenerationExpiredError):
        store.at(gens[0])
    time.sleep(0.3)
    np.save(src / "a.npy", np.full(4, 40, np.float32))
    ls.compile(src, dst, labelled)
    assert ls.gc_store(dst, keep_seconds=60) == 0  # every generation since gens[1] was current a moment ago
    assert store.at(gens[1])["a"].tolist() == [20.0] * 4
    ls.gc_store(dst, keep_seconds=0.1)
    with pytest.raises(ls.GenerationExpiredError):
        store.at(gens[1])
    assert store["a"].tolist() == [40.0] * 4


def test_gc_settles_even_with_zero_length_entries(tmp_path):
    arrays = {f"e{i}": np.zeros((i % 3, 5), np.float32) for i in range(9)}
    src = write_sources(tmp_path / "src", arrays)
    dst = tmp_path / "store"
    ls.compile(src, dst, max_shard_bytes=128)
    for i in range(0, 9, 2):
        (src / f"e{i}.npy").unlink()
    ls.compile(src, dst, max_shard_bytes=128)
    assert ls.gc_store(dst, keep_seconds=0, max_shard_bytes=128) > 0
    generation, files = ls.open(dst).generation, sorted(os.listdir(dst / "blobs"))
    for _ in range(2):
        assert ls.gc_store(dst, keep_seconds=0, max_shard_bytes=128) == 0
    assert ls.open(dst).generation == generation and sorted(os.listdir(dst / "blobs")) == files
    store = ls.open(dst)
    assert store.keys == [f"e{i}" for i in range(1, 9, 2)]
    assert [store.shape_of(i) for i in range(4)] == [(1, 5), (0, 5), (2, 5), (1, 5)]


def test_a_selection_follows_bytes_that_gc_moved(tmp_path):
    src, dst = build(tmp_path, names=[f"s{i}" for i in range(12)])
    np.save(src / "s0.npy", np.full(4, 100, np.float32))
    ls.compile(src, dst, labelled)
    pinned = ls.open(dst).all()  # nothing mapped yet
    for i in range(3, 12, 3):
        (src / f"s{i}.npy").unlink()
    ls.compile(src, dst, labelled)
    assert ls.gc_store(dst, keep_seconds=3600) == 0  # pinned's generation is kept: nothing to reclaim yet
    # the first s0 died before pinned's generation: gc drops it and moves every kept entry of its shard
    assert ls.gc_store(dst, keep_seconds=0, keep_generations=1) > 0
    assert not all((dst / p).exists() for p in pinned.columns.shard_paths)
    consistent(pinned)
    assert pinned["s1"].tolist() == [2.0] * 4


def test_read_only_handles_refuse_writes(tmp_path):
    _, dst = build(tmp_path)
    with pytest.raises(ls.ReadOnlyStoreError, match="readonly=False"):
        ls.open(dst).gc()
    assert ls.open(dst, readonly=False).gc() == 0


READER = """
import hashlib, json, sys, numpy as np, lardon_store as ls
root, src, try_writes = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
store = ls.open(root)
digest = hashlib.sha256()
for i, key in enumerate(store.keys):
    digest.update(key.encode() + np.ascontiguousarray(store[i]).tobytes() + json.dumps(store.metadata(i)).encode())
writes = []
attempts = (lambda: ls.open(root, readonly=False), lambda: ls.gc_store(root), lambda: ls.compile(src, root))
for attempt in attempts if try_writes else ():
    try:
        attempt()
        writes.append("written")
    except ls.ReadOnlyStoreError:
        writes.append("refused")
print(json.dumps({"digest": digest.hexdigest(), "where": store.where("total > 4").keys, "writes": writes,
                  "generation": store.generation, "immutable": store.immutable}))
"""


def read_in_child(root: Path, src: Path, try_writes: bool = False) -> dict:
    """What a fresh process reads from the store at ``root`` (a digest of every key, array and metadata, a query,
    the generation), and, with ``try_writes``, whether three writes were refused."""
    args = [sys.executable, "-c", READER, str(root), str(src), "1" if try_writes else "0"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=child_env())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def read_only_mount(tmp_path):
    """Bind-mounts a folder read-only at another path (needs root and mount rights; skipped elsewhere)."""
    mounted = []

    def mount(folder: Path) -> Path:
        target = tmp_path / f"ro{len(mounted)}"
        target.mkdir()
        proc = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(target)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot make a read-only bind mount here: {proc.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def copy_without_wal(root: Path, to: Path) -> Path:
    """The store as `cp` of its catalog file and blobs alone would copy it: no -wal, no -shm."""
    import shutil

    to.mkdir()
    shutil.copy(root / "catalog.sqlite", to / "catalog.sqlite")
    shutil.copytree(root / "blobs", to / "blobs")
    return to


@pytest.mark.sqlite_only  # (the SQLite catalog file itself)
def test_stores_open_and_read_on_read_only_mounts_and_as_copies(tmp_path, read_only_mount):
    src, dst = build(tmp_path, names=[f"s{i}" for i in range(6)])
    (src / "s0.npy").unlink()
    ls.compile(src, dst, labelled)
    for label in ("after compile", "after gc"):
        expected = read_in_child(dst, src)
        assert not expected["immutable"]
        for folder in (copy_without_wal(dst, tmp_path / f"copy {label}"), dst):
            got = read_in_child(folder, src)  # a copy in a writable folder, and the store itself
            assert (got["digest"], got["where"], got["generation"]) == (
                expected["digest"], expected["where"], expected["generation"]
            )  # fmt: skip
        for folder in (dst, copy_without_wal(dst, tmp_path / f"ro copy {label}")):
            got = read_in_child(read_only_mount(folder), src, try_writes=True)
            assert (got["digest"], got["where"], got["generation"]) == (
                expected["digest"], expected["where"], expected["generation"]
            )  # fmt: skip
            assert got["writes"] == ["refused"] * 3
        ls.gc_store(dst, keep_seconds=0)


@pytest.mark.sqlite_only  # (the SQLite catalog file itself)
def test_a_wal_with_commits_on_read_only_media_is_named_not_misread(tmp_path, read_only_mount):
    import shutil
    import sqlite3

    _, dst = build(tmp_path)
    con = sqlite3.connect(dst / "catalog.sqlite")
    con.execute("PRAGMA wal_autocheckpoint = 0")
    with con:
        con.execute("INSERT INTO store_info (key, value) VALUES ('test', 'x')")  # a commit left in the -wal only
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(dst / "catalog.sqlite", copy / "catalog.sqlite")
    shutil.copy(dst / "catalog.sqlite-wal", copy / "catalog.sqlite-wal")  # (and no -shm)
    con.close()
    assert (copy / "catalog.sqlite-wal").stat().st_size > 0
    mounted = read_only_mount(copy)
    code = "import sys, lardon_store as ls\ntry:\n    ls.open(sys.argv[1])\nexcept ls.StoreIOError as e:\n    print(e)"
    proc = subprocess.run([sys.executable, "-c", code, str(mounted)], capture_output=True, text=True, env=child_env())
    assert proc.returncode == 0, proc.stderr
    assert "-wal file holds commits" in proc.stdout and "not a lardon_store catalog" not in proc.stdout
