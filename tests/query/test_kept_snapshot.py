"""The query snapshot kept in ``snapshot/``: used by a fresh handle, refused when stale, damaged or crafted, and
never needed (a store whose folder cannot be written keeps it in memory)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lardon_store as ls
from lardon_store.format.layout import SNAPSHOT_DIR
from lardon_store.query import snapshot
from lardon_store.testing import store_from_arrays


@pytest.fixture
def root(tmp_path) -> Path:
    items = [(f"k{i:03d}", np.full(3, i, np.int32), {"i": i, "tag": f"t{i % 4}"}) for i in range(40)]
    return store_from_arrays(tmp_path / "store", items).root


def catalog_reads(monkeypatch) -> list[str]:
    """Record each read of the entry columns and of a key's values from the catalog."""
    calls: list[str] = []
    real_columns, real_key = snapshot.load_columns, snapshot.Snapshot._read_key
    monkeypatch.setattr(snapshot, "load_columns", lambda *a, **k: calls.append("columns") or real_columns(*a, **k))
    monkeypatch.setattr(
        snapshot.Snapshot,
        "_read_key",
        lambda self, conn, key, where: calls.append(key) or real_key(self, conn, key, where),
    )
    return calls


def answers(root: Path) -> tuple:
    store = ls.open(root)
    sel = store.where("i >= 30 and tag == 't1'")
    return sel.keys, [int(x[0]) for x in sel], len(store), store.all().metadata_columns(["i"])["i"].tolist()


def test_a_fresh_handle_reads_the_kept_snapshot(root, monkeypatch):
    expected = answers(root)  # (keeps the snapshot and the two keys)
    files = sorted(p.name for p in (root / SNAPSHOT_DIR).iterdir())
    assert len(files) == 3 and all(name.endswith(".npz") for name in files)
    calls = catalog_reads(monkeypatch)
    assert answers(root) == expected
    assert calls == []  # nothing read from the catalog


def test_a_new_generation_replaces_the_kept_files(root, monkeypatch):
    answers(root)
    before = {p.name for p in (root / SNAPSHOT_DIR).iterdir()}
    store_from_arrays(root, [("k999", np.arange(3, dtype=np.int32), {"i": 999, "tag": "t1"})])
    calls = catalog_reads(monkeypatch)
    keys, values, n, _ = answers(root)
    assert keys[-1] == "k999" and values[-1] == 0 and n == 41
    assert calls[0] == "columns"
    after = {p.name for p in (root / SNAPSHOT_DIR).iterdir()}
    assert after.isdisjoint(before)  # (the older generation's files are gone)


def damage_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def craft_offset(path: Path) -> None:
    """A well-formed file whose entry points past its shard: refused by the checks, not by the zip's CRC."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["0.offset"] = arrays["0.offset"] + 4096
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def craft_pickle(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "ids.npy",
            b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }" + b" " * 57 + b"\n",
        )


@pytest.mark.parametrize("damage", [damage_flip, damage_truncate, craft_offset, craft_pickle])
def test_a_damaged_or_crafted_snapshot_file_is_refused_and_rebuilt(root, monkeypatch, damage):
    expected = answers(root)
    (entries,) = [p for p in (root / SNAPSHOT_DIR).iterdir() if p.name.endswith(".fields.npz")]
    damage(entries)
    calls = catalog_reads(monkeypatch)
    assert answers(root) == expected
    assert calls[0] == "columns"


def test_a_damaged_key_file_is_refused_and_rebuilt(root, monkeypatch):
    expected = answers(root)
    (key_file,) = [p for p in (root / SNAPSHOT_DIR).iterdir() if p.name.endswith(".key-tag.npz")]
    with np.load(key_file, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["rank"] = arrays["rank"] + 100  # ranks past the key's strings
    with open(key_file, "wb") as f:
        np.savez(f, **arrays)
    calls = catalog_reads(monkeypatch)
    assert answers(root) == expected
    assert calls == ["tag"]


@pytest.mark.sqlite_only  # restores catalog.sqlite from a copy of the file (and deletes its -wal and -shm)
def test_a_catalog_restored_from_a_backup_does_not_trust_files_of_another_history(root, tmp_path, monkeypatch):
    backup = tmp_path / "backup.sqlite"
    shutil.copy(root / "catalog.sqlite", backup)
    store_from_arrays(root, [("zzz", np.arange(3, dtype=np.int32), {"i": -1, "tag": "t9"})])
    answers(root)  # keeps the files of this generation
    shutil.copy(backup, root / "catalog.sqlite")  # back one generation, then another write: the same number again
    for suffix in ("-wal", "-shm"):
        Path(f"{root / 'catalog.sqlite'}{suffix}").unlink(missing_ok=True)
    store_from_arrays(root, [("yyy", np.arange(3, dtype=np.int32), {"i": -2, "tag": "t9"})])
    calls = catalog_reads(monkeypatch)
    keys = ls.open(root).where(tag="t9").keys
    assert keys == ["yyy"] and calls[0] == "columns"
