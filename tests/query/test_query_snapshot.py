"""The query snapshot: reused while the catalog is unchanged, reloaded after any commit, fork or file swap; damaged
index rows are named; its answers stay those of the SQL form and of the Python oracle."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import write_sources
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pg_helpers import catalog_sql
from test_query import KEYS, exprs, metadata_values, oracle

import lardon_store as ls
from lardon_store import meta
from lardon_store.format.layout import SNAPSHOT_DIR
from lardon_store.query import Compare, Exists, Or
from lardon_store.store import open_store
from lardon_store.testing import store_from_arrays


def tagged(path) -> tuple[np.ndarray, dict]:
    """A callback: the array, and metadata derived from its first value."""
    x = np.load(path)
    n = int(x.flat[0])
    return x, {"n": n, "parity": "even" if n % 2 == 0 else "odd", "tenth": n / 10}


def sources(folder: Path, numbers) -> Path:
    return write_sources(folder, {f"f{n:03d}": np.full(3, n, np.int32) for n in numbers})


def keys_of(numbers) -> list[str]:
    return [f"f{n:03d}" for n in sorted(numbers)]


@pytest.fixture
def built(tmp_path) -> tuple[Path, Path]:
    src = sources(tmp_path / "src", range(20))
    ls.compile(src, tmp_path / "store", callback=tagged, valid_exts=[".npy"])
    return src, tmp_path / "store"


def count_loads(monkeypatch) -> list[str]:
    """Record each load of the entry columns ("columns") and of a key's values (its name)."""
    from lardon_store.query import snapshot
    from lardon_store.query.snapshot import Snapshot

    loads: list[str] = []
    real_columns, real_key = snapshot.load_columns, Snapshot.load_key
    monkeypatch.setattr(snapshot, "load_columns", lambda *a, **k: loads.append("columns") or real_columns(*a, **k))
    monkeypatch.setattr(
        Snapshot, "load_key", lambda self, conn, key, where: loads.append(key) or real_key(self, conn, key, where)
    )
    return loads


def test_the_snapshot_is_reused_until_the_catalog_changes(built, monkeypatch):
    src, root = built
    loads = count_loads(monkeypatch)
    store = open_store(root)
    assert store.where(meta.n < 5).keys == keys_of(range(5))
    assert store.where(meta.n >= 18, parity="odd").keys == keys_of([19])
    assert store.where(meta.n.between(3, 4)).keys == keys_of([3, 4])
    assert loads == ["columns", "n", "parity"]
    # A commit by another connection (here a recompile that adds a file) makes the next query reload.
    sources(src, [25])
    ls.compile(src, root, callback=tagged, valid_exts=[".npy"])
    assert store.where(meta.n > 18).keys == keys_of([19, 25])
    assert loads == ["columns", "n", "parity", "columns", "n"]


def test_queries_see_additions_changes_and_deletions(built):
    src, root = built
    store = open_store(root)
    assert len(store.where(parity="even")) == 10
    (src / "f004.npy").unlink()
    np.save(src / "f007.npy", np.full(3, 8, np.int32))  # f007 now holds 8: even
    sources(src, [30, 31])
    ls.compile(src, root, callback=tagged, valid_exts=[".npy"])
    expected = [k for k in keys_of(range(20)) if k not in ("f004",)] + ["f030", "f031"]
    evens = [k for k in expected if (8 if k == "f007" else int(k[1:])) % 2 == 0]
    assert store.where(parity="even").keys == evens
    assert store.where(~(meta.parity == "even")).keys == [k for k in expected if k not in evens]
    # The SQL form, run by SQLite on the same catalog, agrees.
    assert store.select((meta.parity == "even").sql()).keys == evens


@pytest.mark.sqlite_only  # a new catalog.sqlite file under an open store (a PostgreSQL store keeps its database)
def test_a_catalog_replaced_by_a_new_file_is_noticed(built, tmp_path):
    src, root = built
    store = open_store(root)
    assert len(store.where(meta.n >= 0)) == 20
    shutil.rmtree(root)
    ls.compile(sources(tmp_path / "other", [50, 51]), root, callback=tagged, valid_exts=[".npy"])
    assert store.where(meta.n >= 0).keys == keys_of([50, 51])


@pytest.mark.sqlite_only  # a deleted catalog.sqlite (deleting the folder of a PostgreSQL store leaves its database)
def test_a_deleted_store_is_named(built):
    _, root = built
    store = open_store(root)
    assert len(store.where(meta.n >= 0)) == 20
    shutil.rmtree(root)
    with pytest.raises(ls.StoreNotFoundError, match="the catalog .* is gone"):
        store.where(meta.n >= 0)


def _query_in_child(args) -> list[str]:
    store, text = args
    return store.where(text).keys


def test_a_forked_child_builds_its_own_snapshot(built):
    src, root = built
    store = open_store(root)
    assert len(store.where("n >= 10")) == 10  # the parent holds a snapshot and its connection
    sources(src, [40])
    ls.compile(src, root, callback=tagged, valid_exts=[".npy"])
    with multiprocessing.get_context("fork").Pool(2) as pool:
        found = pool.map(_query_in_child, [(store, "n >= 10"), (store, "parity == 'odd' and n > 15")])
    assert found == [keys_of([*range(10, 20), 40]), keys_of([17, 19])]
    assert store.where("n >= 10").keys == keys_of([*range(10, 20), 40])  # the parent's connection still works


def test_threads_query_one_store_while_it_is_recompiled(built):
    src, root = built
    store = open_store(root)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            for _ in range(30):
                got = store.where(meta.n < 1000).keys
                # Every answer is the whole catalog at one moment: the 20 first files, plus a prefix of the new ones.
                assert got[:20] == keys_of(range(20)) and got[20:] == keys_of(range(100, 100 + len(got) - 20))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for n in range(100, 104):
        sources(src, [n])
        ls.compile(src, root, callback=tagged, valid_exts=[".npy"])
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert store.where(meta.n < 1000).keys == keys_of([*range(20), *range(100, 104)])


def test_all_reuses_the_snapshot_columns(built, monkeypatch):
    _, root = built
    loads = count_loads(monkeypatch)
    store = open_store(root)
    assert len(store) == 20 and store.where(n=3).keys == ["f003"]
    assert loads == ["columns", "n"]
    np.testing.assert_array_equal(store[3], np.full(3, 3, np.int32))


# An infinite number: SQLite reads 1e999 as one; PostgreSQL refuses that literal but takes 'Infinity' in a float column.
INFINITY = {"sqlite": "1e999", "postgresql": "'Infinity'"}


@pytest.mark.parametrize(
    "damage, key",
    [
        ("UPDATE meta_values SET type = 'complex' WHERE key = 'n' AND entry_id = 3", "n"),
        ("UPDATE meta_values SET num = NULL WHERE key = 'tenth' AND entry_id = 4", "tenth"),
        pytest.param(  # a text in the number column
            "UPDATE meta_values SET num = 'many' WHERE key = 'n' AND entry_id = 5", "n", marks=pytest.mark.sqlite_only
        ),
        ("UPDATE meta_values SET text = NULL WHERE key = 'parity' AND entry_id = 6", "parity"),
        pytest.param(  # a blob in the text column
            "UPDATE meta_values SET text = x'00ff' WHERE key = 'parity' AND entry_id = 6",
            "parity",
            marks=pytest.mark.sqlite_only,
        ),
        ("UPDATE meta_values SET num = {infinity} WHERE key = 'tenth' AND entry_id = 2", "tenth"),
        pytest.param(  # a row of no entry: foreign keys unchecked, which PostgreSQL never allows
            "UPDATE meta_values SET entry_id = 999 WHERE key = 'n' AND entry_id = 7", "n", marks=pytest.mark.sqlite_only
        ),
    ],
)
def test_a_damaged_metadata_index_row_is_refused_with_its_key(built, damage, key, catalog_backend):
    _, root = built
    damage = damage.format(infinity=INFINITY[catalog_backend])
    if "entry_id = 999" in damage:
        with sqlite3.connect(root / "catalog.sqlite") as conn:  # (catalog_sql's connections check foreign keys)
            conn.execute("PRAGMA foreign_keys = OFF")
            assert conn.execute(damage).rowcount == 1
        conn.close()
    else:
        assert catalog_sql(root, damage, write=True) == [(1,)]
    store = open_store(root)
    with pytest.raises(ls.CorruptStoreError, match=f"key '{key}'.*lardon-store verify"):
        store.where(meta[key].exists())
    assert len(store.where(meta.n.exists() if key != "n" else meta.parity.exists())) == 20  # other keys still work


def test_string_order_is_sqlite_order(tmp_path):
    """Ranks are sorted by code point, which is SQLite's BINARY order on UTF-8 and PostgreSQL's "C" collation
    (control characters, accents, astral planes)."""
    words = ["", "a", "a\x01b", "a\x01", "B", "b", "é", "e\u0301", "z", "\U0001f600", "ａ", "\x7f"]

    def labelled(path):
        x = np.load(path)
        return x, {"w": words[int(x[0])]}

    src = write_sources(tmp_path / "src", {f"w{i:02d}": np.full(1, i, np.int16) for i in range(len(words))})
    store = ls.compile(src, tmp_path / "store", callback=labelled, valid_exts=[".npy"])
    for probe in ["a", "a\x01", "b", "é", "\U0001f600", "", "zz"]:
        for op in ["==", "!=", "<", "<=", ">", ">="]:
            e = Compare("w", op, probe)
            expected = [f"w{i:02d}" for i, w in enumerate(words) if e.match({"w": w})]
            assert store.where(e).keys == expected, (op, probe)
            assert store.select(e.sql()).keys == expected, (op, probe)
    e = meta.w.between("a", "é")
    assert store.where(e).keys == [f"w{i:02d}" for i, w in enumerate(words) if "a" <= w <= "é"]
    assert store.where(meta.w.isin(["a\x01b", "zz", "B"])).keys == ["w02", "w04"]
    with pytest.raises(ls.InvalidDataError, match=r"metadata 'w' holds a NUL character"):
        ls.compile(src, tmp_path / "nul", callback=lambda p: (np.load(p), {"w": "a\x00b"}), valid_exts=[".npy"])


def test_numbers_beyond_2_53_and_at_the_float_limits_compare_as_the_sql_form_does(tmp_path):
    """Whole numbers are read as integer text, others as floats: both must keep every bit the index holds."""
    values = [2**60, -(2**60), 2**53 + 1, 2**53, 5e-324, -0.0, 0.0, 1e300, -1e300, 0.1, 1 / 3, True, False, 7, 7.0]

    def numbered(path):
        x = np.load(path)
        return x, {"v": values[int(x[0])]}

    src = write_sources(tmp_path / "src", {f"v{i:02d}": np.full(1, i, np.int16) for i in range(len(values))})
    store = ls.compile(src, tmp_path / "store", callback=numbered, valid_exts=[".npy"])
    for probe in [2**60, 2**53, 5e-324, 0, 0.1, 1 / 3, 1e300, True, 7]:
        for op in ["==", "!=", "<", "<=", ">", ">="]:
            e = Compare("v", op, probe)
            assert store.where(e).keys == store.select(e.sql()).keys, (op, probe)
    assert store.where(meta.v.isin([7, 0.1, True])).keys == ["v09", "v11", "v13", "v14"]
    assert store.where(meta.v == 5e-324).keys == ["v04"]


def test_refining_an_older_selection_keeps_its_generation(built):
    src, root = built
    store = open_store(root)
    evens = store.where(parity="even").order_by("n", descending=True)
    at = evens.keys.index("f004")
    (src / "f004.npy").unlink()
    (src / "f010.npy").unlink()
    ls.compile(src, root, callback=tagged, valid_exts=[".npy"])
    assert store.generation > evens.generation
    refined = evens.where(meta.n < 12)  # pinned: the removed entries are still there, in evens' order
    assert refined.generation == evens.generation
    assert refined.keys == ["f010", "f008", "f006", "f004", "f002", "f000"]
    assert refined.metadata_columns(["n"])["n"].tolist() == [10, 8, 6, 4, 2, 0]
    np.testing.assert_array_equal(evens[at], np.full(3, 4, np.int32))
    assert store.where(meta.n < 12, parity="even").keys == ["f000", "f002", "f006", "f008"]
    ls.gc_store(root, keep_seconds=0)  # the generation of evens is reclaimed: never wrong data, a clear error
    with pytest.raises(ls.GenerationExpiredError, match=f"generation {evens.generation}"):
        evens.where(meta.n < 12)
    with pytest.raises(ls.GenerationExpiredError):
        _ = evens.keys


class StoreUnderChange(RuleBasedStateMachine):
    """One store open for reading while entries are added (by the compiler's writer) and deleted (by plain SQL in
    another connection): every query must answer from the catalog as it is at that moment."""

    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="lardon-machine-"))
        self.root = store_from_arrays(self.tmp / "store", []).root
        self.store = open_store(self.root)
        self.model: dict[str, dict] = {}
        self.added = 0

    @rule(mds=st.lists(st.dictionaries(st.sampled_from(KEYS), metadata_values), min_size=1, max_size=6))
    def add(self, mds):
        items = []
        for md in mds:
            key = f"e{self.added:04d}"
            items.append((key, np.full(2, self.added, np.int16), md))
            self.model[key] = md
            self.added += 1
        store_from_arrays(self.root, items, max_shard_bytes=1 << 20)

    @rule(data=st.data())
    def delete(self, data):
        if not self.model:
            return
        gone = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=3, unique=True))
        # One transaction, foreign keys checked (their cascades delete the entries' arrays and meta_values rows).
        marks = ", ".join("?" * len(gone))
        assert catalog_sql(self.root, f"DELETE FROM entries WHERE key IN ({marks})", tuple(gone), write=True) == [
            (len(gone),)
        ]
        shutil.rmtree(self.root / SNAPSHOT_DIR, ignore_errors=True)  # (what a program editing rows must also do)
        if not (self.root / "catalog.sqlite").exists():
            # On PostgreSQL an open store learns of commits through the generation only (no data_version there): a
            # program that edits rows without committing a generation must have readers refresh (docs/postgresql.md).
            self.store.refresh()
        for k in gone:
            del self.model[k]

    @rule(e=exprs)
    def query(self, e):
        expected = sorted(k for k, md in self.model.items() if oracle(e, md))
        assert self.store.where(e).keys == expected, str(e)

    @invariant()
    def everything_is_found(self):
        assert self.store.where(Or((Exists("a"), ~Exists("a")))).keys == sorted(self.model)

    def teardown(self):
        self.store.refresh()
        shutil.rmtree(self.tmp, ignore_errors=True)


StoreUnderChange.TestCase.settings = settings(max_examples=30, stateful_step_count=12, deadline=None)
test_a_store_under_change = StoreUnderChange.TestCase
