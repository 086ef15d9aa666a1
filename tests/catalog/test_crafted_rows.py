"""Crafted or damaged catalog rows: reading them raises CorruptStoreError naming the entry, never crashes.

Each case edits the catalog directly (``catalog_sql``: SQLite or PostgreSQL, as another program would), then reads in
a subprocess, so that a segfault or SIGBUS (what numpy does with some of these rows) would show as a signal instead
of killing the test run. The subprocess opens the store by its path: a PostgreSQL store's folder names its database
(``catalog.url``), and the subprocess inherits the environment (PGPASSWORD and the like).

Cases that need what only SQLite allows (a text or a real in an integer column, a blob in a text column, a NUL in a
text, a row whose foreign key points nowhere) are ``sqlite_only``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import write_sources
from pg_helpers import catalog_sql

import lardon_store as ls
from lardon_store.format.layout import SNAPSHOT_DIR

ROOT = Path(__file__).resolve().parents[2]
VICTIM = "victim_entry"

READER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import lardon_store as ls

    store = ls.open(sys.argv[1])
    try:
        for i in range(len(store)):
            np.asarray(store.entry(i)[...])
            store[i]
    except ls.CorruptStoreError as exc:
        print("CORRUPT:", exc)
        sys.exit(0)
    print("READ WITHOUT ERROR")
    sys.exit(2)
    """
)


@pytest.fixture
def victim_store(tmp_path) -> Path:
    arrays = {"a": np.arange(10.0), VICTIM: np.arange(24, dtype=np.int32).reshape(4, 6), "z": np.ones((3, 3))}
    # One shard per entry, so that damage to the victim's shard is met first when reading the victim.
    store = ls.compile(write_sources(tmp_path / "raw", arrays), tmp_path / "store", valid_exts=[".npy"],
                       max_shard_bytes=1)  # fmt: skip
    assert store.info().shards == 3
    return tmp_path / "store"


def edit(store: Path, sql: str, *params) -> None:
    """Change catalog rows as another program would; that program must also remove the kept query snapshot
    (``snapshot/``, see query/persisted.py), or readers keep reading the rows of the generation as it was committed."""
    [(changed,)] = catalog_sql(store, sql, params, write=True)
    assert changed >= 1
    shutil.rmtree(store / SNAPSHOT_DIR, ignore_errors=True)


def edit_sqlite_without_foreign_keys(store: Path, sql: str, *params) -> None:
    """``edit`` with the sqlite3 module's defaults, foreign keys unchecked (what a program that does not turn them
    on can write; catalog_sql's connections check them, and PostgreSQL always does)."""
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        assert conn.execute(sql, params).rowcount >= 1
    conn.close()
    shutil.rmtree(store / SNAPSHOT_DIR, ignore_errors=True)


VICTIM_COLUMNS = ("shard_id", "offset", "nbytes", "dtype", "shape")


def victim_row(store: Path) -> dict:
    """The victim's array row (the columns the tests use)."""
    columns = ", ".join(f'a."{c}"' for c in VICTIM_COLUMNS)
    [row] = catalog_sql(store, f"SELECT {columns} FROM entries e JOIN arrays a ON a.entry_id = e.id WHERE e.key = ?",
                        (VICTIM,))  # fmt: skip
    return dict(zip(VICTIM_COLUMNS, row))


def read_in_subprocess(store: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", READER, str(store)], capture_output=True, text=True, env=env, timeout=120
    )


def assert_refused(store: Path, *also: str, key: str = VICTIM) -> None:
    result = read_in_subprocess(store)
    assert result.returncode >= 0, f"the reader died of signal {-result.returncode}: {result.stderr}"
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CORRUPT:" in result.stdout
    assert repr(key) in result.stdout, result.stdout
    for text in also:
        assert text in result.stdout, result.stdout


BY_KEY = "entry_id = (SELECT id FROM entries WHERE key = ?)"
# The SET clause of an UPDATE of the victim's array row, per case.
ENTRY_CASES = {
    "object_dtype": "dtype = '|O'",
    "object_dtype_o8": "dtype = '|O8'",
    "structured_with_object": "dtype = '[(''a'', ''<i4''), (''o'', ''|O'')]'",
    "void_dtype": "dtype = '|V8'",
    "unicode_dtype": "dtype = '<U4'",
    "no_byte_order": "dtype = 'i4'",
    "datetime_dtype": "dtype = '<M8'",
    "shape_larger_than_shard": "shape = '[1000000, 6]', nbytes = 24000000",
    "shape_larger_same_nbytes": "shape = '[1000000, 6]'",
    "negative_dimension": "shape = '[-4, -6]'",
    "overflowing_dimensions": "shape = '[4611686018427387904, 4]', nbytes = 0",
    "too_many_dimensions": "shape = '[" + ",".join(["1"] * 70) + "]', nbytes = 4",
    "float_dimension": "shape = '[4.0, 6]'",
    "bool_dimension": "shape = '[true, 96]', nbytes = 384",
    "malformed_shape": "shape = '[4, 6'",
    "shape_not_a_list": "shape = '{\"a\": 1}'",
    "negative_offset": '"offset" = -64',
    "offset_past_shard": '"offset" = "offset" + 1000000',
    "text_offset": "\"offset\" = 'abc'",
    "nbytes_mismatch": "nbytes = nbytes - 8",
    "negative_nbytes": "nbytes = -96",
    "unknown_shard": "shard_id = 999",
    # The whole-column read of every entry must refuse what the row-by-row check refuses.
    "leading_zero_dimension": "shape = '[04, 6]'",
    "real_offset": '"offset" = "offset" + 0.5',
    "nul_in_dtype": "dtype = '<i4' || char(0)",
    "nul_in_shape": "shape = '[4,6]' || char(0) || '[1]'",
    "huge_offset_text": "\"offset\" = '99999999999999999999'",
    # Found by the issue-16 sweep: raw OverflowError / ValueError from numpy, and misaligned bytes read as data.
    "zero_and_2_63": "shape = '[0, 9223372036854775808]', nbytes = 0",
    "2_64_and_zero": "shape = '[18446744073709551616, 0]', nbytes = 0",
    "2_62_and_zero": "shape = '[4611686018427387904, 0]', nbytes = 0",
    "unaligned_offset": '"offset" = "offset" + 8, nbytes = nbytes - 8, shape = \'[22]\'',
}
# The cases that only SQLite can hold (PostgreSQL refuses the UPDATE, or stores something else), and why.
SQLITE_ONLY_CASES = {
    "text_offset": "a text in the integer column offset",
    "huge_offset_text": "a text (past 64 bits) in the integer column offset",
    "real_offset": "a real in the integer column offset (PostgreSQL rounds it)",
    "nul_in_dtype": "a NUL in a text",
    "nul_in_shape": "a NUL in a text",
    "unknown_shard": "an array row whose shard_id names no shard (PostgreSQL always checks foreign keys)",
}


def entry_case(case: str):
    return pytest.param(case, marks=pytest.mark.sqlite_only) if case in SQLITE_ONLY_CASES else case


@pytest.mark.parametrize("case", [entry_case(case) for case in sorted(ENTRY_CASES)])
def test_crafted_entry_row(victim_store, case):
    sql = f"UPDATE arrays SET {ENTRY_CASES[case]} WHERE {BY_KEY}"
    if case == "unknown_shard":
        edit_sqlite_without_foreign_keys(victim_store, sql, VICTIM)
    else:
        edit(victim_store, sql, VICTIM)
    assert_refused(victim_store)


def _victim_shard_id(store: Path) -> int:
    return victim_row(store)["shard_id"]


def victim_shard(store: Path) -> str:
    """The file name of the victim's shard."""
    [(path,)] = catalog_sql(store, "SELECT path FROM shards WHERE id = ?", (_victim_shard_id(store),))
    return Path(path).name


def test_shape_texts_that_only_parse_together(victim_store):
    """'[4,6],[3' then '3]' join into valid JSON: each text must still be checked on its own."""
    edit(victim_store, f"UPDATE arrays SET shape = '[4,6],[3' WHERE {BY_KEY}", VICTIM)
    edit(victim_store, f"UPDATE arrays SET shape = '3]' WHERE {BY_KEY}", "z")
    assert_refused(victim_store)


@pytest.mark.parametrize(
    "value",
    ["'not json'", "'[1, 2]'", "'{\"a\": '", "42", pytest.param("x'00ff'", marks=pytest.mark.sqlite_only)],  # a blob
)
def test_crafted_metadata(victim_store, value):
    """Metadata is never mapped, so this one reads in-process."""
    edit(victim_store, f"UPDATE entries SET metadata = {value} WHERE key = ?", VICTIM)
    store = ls.open(victim_store)
    assert store.entry(0).metadata == {}
    for read in (lambda: store.entry(1).metadata, lambda: store.metadata(1)):
        with pytest.raises(ls.CorruptStoreError) as info:
            read()
        assert repr(VICTIM) in str(info.value)


def test_offset_plus_nbytes_past_the_shard_size(victim_store):
    row = victim_row(victim_store)
    edit(victim_store, "UPDATE shards SET size = ? WHERE id = ?", row["offset"] + row["nbytes"] - 1, row["shard_id"])
    assert_refused(victim_store)


@pytest.mark.parametrize(
    "path",
    ["blobs/../../outside.bin", "../outside/shard-000001.bin", "/etc/passwd", "blobs/shard-1.bin", "blobs\\x.bin"],
)
def test_shard_path_leaving_the_store(victim_store, path):
    outside = victim_store.parent / "outside.bin"
    shutil.copy(victim_store / "blobs" / victim_shard(victim_store), outside)
    edit(victim_store, "UPDATE shards SET path = ? WHERE id = ?", path, _victim_shard_id(victim_store))
    assert_refused(victim_store)


def test_symlink_shard_pointing_out_of_the_store(victim_store):
    shard = victim_store / "blobs" / victim_shard(victim_store)
    outside = victim_store.parent / "outside.bin"
    shutil.move(shard, outside)
    os.symlink(outside, shard)
    assert_refused(victim_store)


def test_symlink_blobs_folder_pointing_out_of_the_store(victim_store):
    outside = victim_store.parent / "outside-blobs"
    shutil.move(victim_store / "blobs", outside)
    os.symlink(outside, victim_store / "blobs")
    assert_refused(victim_store, key="a")  # every shard is out now: the first entry read is named


def test_truncated_shard_file(victim_store):
    shard = victim_store / "blobs" / victim_shard(victim_store)
    row = victim_row(victim_store)
    os.truncate(shard, row["offset"] + 8)
    assert_refused(victim_store, "truncated")


def test_missing_shard_file(victim_store):
    (victim_store / "blobs" / victim_shard(victim_store)).unlink()
    assert_refused(victim_store, "missing")


def test_untouched_store_reads_in_the_subprocess(victim_store, catalog_backend):
    """The harness itself: an intact store reads without error (so the cases above can fail), from the catalog of
    the backend under test (the subprocess finds a PostgreSQL one through the folder's catalog.url)."""
    assert (victim_store / ("catalog.url" if catalog_backend == "postgresql" else "catalog.sqlite")).exists()
    result = read_in_subprocess(victim_store)
    assert result.returncode == 2 and "READ WITHOUT ERROR" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_shard_path_that_is_not_a_regular_file_is_refused_without_hanging(victim_store, kind):
    row = victim_row(victim_store)
    odd = victim_store / "blobs" / f"odd-{kind}"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.mkdir()
    edit(victim_store, "UPDATE shards SET path = ? WHERE id = ?", f"blobs/odd-{kind}", row["shard_id"])
    assert_refused(victim_store, "it is a pipe" if kind == "fifo" else "it is a folder")
    report = ls.verify_store(victim_store)
    assert not report.ok and any("not a regular file" in p for p in report.shard_problems)


def test_deeply_nested_metadata_json_is_refused_as_damage(victim_store):
    edit(victim_store, "UPDATE entries SET metadata = ? WHERE key = ?", "[" * 100_000 + "]" * 100_000, VICTIM)
    store = ls.open(victim_store)
    i = store.keys.index(VICTIM)
    with pytest.raises(ls.CorruptStoreError, match="malformed metadata"):
        store.metadata(i)


def test_a_dropped_entries_table_is_a_library_error(victim_store, catalog_backend):
    for table in ("meta_values", "arrays", "entries"):
        catalog_sql(victim_store, f"DROP TABLE {table}", write=True)
    shutil.rmtree(victim_store / SNAPSHOT_DIR, ignore_errors=True)
    # (the database's own words: SQLite's "no such table: arrays", PostgreSQL's 'relation "arrays" does not exist')
    missing = "no such table" if catalog_backend == "sqlite" else r'relation "\w+" does not exist'
    with pytest.raises(ls.CorruptStoreError, match=f"the catalog cannot be read \\({missing}"):
        len(ls.open(victim_store))


@pytest.mark.sqlite_only  # a foreign catalog.sqlite file (the PostgreSQL counterpart is the test below)
def test_a_foreign_sqlite_file_is_left_untouched(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    with sqlite3.connect(folder / "catalog.sqlite") as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.close()
    before = (folder / "catalog.sqlite").read_bytes()
    src = write_sources(tmp_path / "raw", {"a": np.arange(3)})
    with pytest.raises(ls.IncompatibleSchemaError, match="belongs to another program"):
        ls.compile(src, folder)
    assert (folder / "catalog.sqlite").read_bytes() == before


def test_a_foreign_postgresql_database_is_left_untouched(tmp_path, pg_url):
    """The PostgreSQL counterpart of the test above: a database holding another program's tables."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
            conn.exec_driver_sql("INSERT INTO notes VALUES (1, 'kept')")
        src = write_sources(tmp_path / "raw", {"a": np.arange(3)})
        with pytest.raises(ls.IncompatibleSchemaError, match="belongs to another program"):
            ls.compile(src, tmp_path / "other", catalog=pg_url)
        with engine.begin() as conn:
            tables = conn.exec_driver_sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchall()
            assert tables == [("notes",)]
            assert conn.exec_driver_sql("SELECT * FROM notes").fetchall() == [(1, "kept")]
    finally:
        engine.dispose()
