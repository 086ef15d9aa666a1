"""The catalog's schema: Alembic revisions agree with the tables, upgrade and downgrade, refuse what this version
cannot read without touching it, and work from an installed wheel."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import sha256
from pg_helpers import catalog_sql
from sqlalchemy import inspect

import lardon_store as ls
from lardon_store.catalog import migrate, schema
from lardon_store.format.layout import APPLICATION_ID, CATALOG_NAME

ROOT = Path(__file__).resolve().parents[2]


def catalog_hashes(store: Path) -> tuple:
    """SHA-256 of the SQLite catalog file, and what its write-ahead log holds (a read-only open may create an empty
    -wal and a -shm index, but must write no page); for a PostgreSQL catalog, its revision, its tables and their
    rows."""
    if not (store / CATALOG_NAME).exists():
        names = [n for (n,) in catalog_sql(store, TABLES)]
        return tuple((n, tuple(sorted(map(repr, catalog_sql(store, f'SELECT * FROM "{n}"'))))) for n in names)
    wal = store / (CATALOG_NAME + "-wal")
    return sha256(store / CATALOG_NAME), wal.read_bytes() if wal.exists() else b""


TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"


def stamp(store: Path, revision: str | None) -> None:
    """Write ``revision`` into alembic_version directly (as another program would)."""
    catalog_sql(store, "DELETE FROM alembic_version", write=True)
    if revision is not None:
        catalog_sql(store, "INSERT INTO alembic_version (version_num) VALUES (?)", (revision,), write=True)


def run_alembic(engine, action, *args) -> None:
    with engine.begin() as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        action(config, *args)


def test_migrations_match_the_tables(store):
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
        assert migrate.current_revision(conn) == migrate.head_revision()


def test_exactly_one_head():
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert len(script.get_heads()) == 1
    assert script.get_current_head() == migrate.head_revision()
    assert migrate.migrations_dir() == ROOT / "migrations"  # from a checkout, the top-level folder


def test_downgrade_to_base_and_up_again(store_path):
    writable = ls.open(store_path, readonly=False)
    run_alembic(writable.engine, command.downgrade, "base")
    with writable.engine.connect() as conn:
        assert migrate.current_revision(conn) is None
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    run_alembic(writable.engine, command.upgrade, "head")
    with writable.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []


@pytest.mark.parametrize("readonly", [True, False])
def test_unknown_newer_revision_is_refused_untouched(store_path, readonly):
    stamp(store_path, "9999_from_the_future")
    before = catalog_hashes(store_path)
    with pytest.raises(ls.IncompatibleSchemaError) as info:
        ls.open(store_path, readonly=readonly)
    assert "9999_from_the_future" in str(info.value) and str(store_path) in str(info.value)
    assert catalog_hashes(store_path) == before


def test_compiling_into_a_newer_catalog_is_refused_untouched(store_path, source_dir):
    stamp(store_path, "9999_from_the_future")
    before = catalog_hashes(store_path)
    np.save(source_dir / "new.npy", np.ones(3))
    with pytest.raises(ls.IncompatibleSchemaError):
        ls.compile(source_dir, store_path, valid_exts=[".npy"])
    with pytest.raises(ls.IncompatibleSchemaError):
        ls.migrate_store(store_path)
    assert catalog_hashes(store_path) == before


def test_a_file_that_is_not_a_catalog_is_refused_untouched(tmp_path):
    (tmp_path / "other").mkdir()
    path = tmp_path / "other" / CATALOG_NAME
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = sha256(path)
    for readonly in (True, False):
        with pytest.raises(ls.IncompatibleSchemaError):
            ls.open(tmp_path / "other", readonly=readonly)
    assert sha256(path) == before


def test_missing_catalog_raises_store_not_found(tmp_path):
    with pytest.raises(ls.StoreNotFoundError) as info:
        ls.open(tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    assert "compile" in str(info.value)


@pytest.fixture
def newer_migrations(tmp_path, monkeypatch) -> str:
    """A copy of the migrations with one more revision, so that stores made by the real head are 'older'."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.migrations_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrate.head_revision()
    (copy / "versions" / "9000_test_extra.py").write_text(
        textwrap.dedent(
            f'''
            """test-only revision: one more table"""
            import sqlalchemy as sa
            from alembic import op

            revision = "9000_test"
            down_revision = {head!r}
            branch_labels = None
            depends_on = None


            def upgrade():
                op.create_table("test_extra", sa.Column("id", sa.Integer(), primary_key=True))


            def downgrade():
                op.drop_table("test_extra")
            '''
        )
    )
    monkeypatch.setattr(migrate, "migrations_dir", lambda: copy)
    assert migrate.head_revision() == "9000_test"
    return "9000_test"


def test_read_only_open_of_an_older_catalog_says_to_migrate(store_path, newer_migrations):
    before = catalog_hashes(store_path)
    with pytest.raises(ls.SchemaOutdatedError) as info:
        ls.open(store_path)
    message = str(info.value)
    assert f"lardon-store migrate {store_path}" in message
    assert catalog_hashes(store_path) == before
    assert ls.migrate_store(store_path) == newer_migrations
    store = ls.open(store_path)
    assert len(store) == 5
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM test_extra").scalar() == 0


def test_writable_open_upgrades_an_older_catalog(store_path, arrays, newer_migrations):
    store = ls.open(store_path, readonly=False)
    with store.engine.connect() as conn:
        assert migrate.current_revision(conn) == newer_migrations
    for i, key in enumerate(store.keys):
        np.testing.assert_array_equal(store[i], arrays[key])


def test_read_only_open_of_a_catalog_downgraded_to_base_says_to_migrate(store_path):
    run_alembic(ls.open(store_path, readonly=False).engine, command.downgrade, "base")
    with pytest.raises(ls.SchemaOutdatedError) as info:
        ls.open(store_path)
    assert "lardon-store migrate" in str(info.value)
    assert ls.migrate_store(store_path) == migrate.head_revision()
    assert len(ls.open(store_path)) == 0


@pytest.mark.sqlite_only
def test_sqlite_settings(store_path):
    path = store_path / CATALOG_NAME
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    store = ls.open(store_path)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_read_only_store_cannot_write(store):
    with store.engine.connect() as conn:
        with pytest.raises(Exception, match="readonly|read-only"):
            conn.exec_driver_sql("DELETE FROM entries")


INSTALLED_CHECK = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import numpy as np
    import lardon_store as ls
    from lardon_store.catalog import migrate

    here = Path.cwd()
    assert Path(ls.__file__).is_relative_to(Path(sys.prefix)), ls.__file__
    assert migrate.migrations_dir() == Path(ls.__file__).parent / "migrations", migrate.migrations_dir()
    (here / "raw").mkdir()
    for i in range(3):
        np.save(here / "raw" / f"x{i}.npy", np.arange(i + 2, dtype=np.float32))
    store = ls.compile("raw", "store", valid_exts=[".npy"])
    again = ls.open("store")
    assert again.keys == ["x0", "x1", "x2"], again.keys
    assert again[2, 1:].tolist() == [1.0, 2.0, 3.0]
    print("INSTALLED OK", migrate.head_revision())
    """
)


@pytest.mark.slow
def test_wheel_ships_migrations_and_works_when_installed(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("lardon_store-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lardon_store/migrations/env.py" in names
    assert any(n.startswith("lardon_store/migrations/versions/") and n.endswith(".py") for n in names)
    assert "lardon_store/migrations/script.py.mako" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=600,
        env=env,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [str(python), "-c", INSTALLED_CHECK], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "INSTALLED OK" in result.stdout
    info = subprocess.run(
        [str(venv / "bin" / "lardon-store"), "info", "store"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert info.returncode == 0, info.stderr
    assert "entries    3" in info.stdout


PREVIOUS = {
    "a": np.arange(6, dtype=np.float32).reshape(2, 3),
    "b": np.array([1, 2, 3], np.int16),
    "sub/c": np.zeros((0, 4), ">f8"),
    "sub/d": np.array(7.5),
}


def test_a_store_of_the_previous_release_is_upgraded_in_place_and_reads_as_before(tmp_path):
    root = tmp_path / "old"
    shutil.copytree(ROOT / "tests" / "data" / "store_rev0002", root)
    with pytest.raises(ls.SchemaOutdatedError, match="lardon-store migrate"):
        ls.open(root)
    assert ls.migrate_store(root) == migrate.head_revision()
    store = ls.open(root)
    assert store.keys == sorted(PREVIOUS) and store.generation == 1
    for i, key in enumerate(store.keys):
        np.testing.assert_array_equal(store[i], PREVIOUS[key])
        assert store.dtype_of(i) == PREVIOUS[key].dtype
        name = key.split("/")[-1] + ".npy"
        assert store.metadata(i) == {"name": name, "size": PREVIOUS[key].size, "tags": ["x", "y"]}
    assert [(h.generation, h.operation, h.added) for h in store.history()] == [(1, "migrate", 4)]
    assert len(store.store_id) == 32 and store.verify().ok
    assert store.where("size > 3").keys == ["a"]
    with ls.LardonParser(None, root) as parser:  # a write on top: a new generation, new ids, the old one kept
        parser.register(np.ones(2), {"size": 2}, "a")
    assert store.generation == 2 and store["a"].tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(store.at(1)["a"], PREVIOUS["a"])
    assert int(store.ids.max()) == 5  # (ids 1-4 were the old entries: a new id, never a reused one)


def test_a_store_of_revision_0003_is_upgraded_by_a_writable_open_and_reads_as_before(tmp_path):
    """tests/data/store_rev0003 was written by the release before fields (see tests/data/README.md): two
    generations, the second replacing 'b'."""
    root = tmp_path / "old"
    shutil.copytree(ROOT / "tests" / "data" / "store_rev0003", root)
    with pytest.raises(ls.SchemaOutdatedError, match="lardon-store migrate"):
        ls.open(root)
    assert ls.open(root, readonly=False).revision() == migrate.head_revision()
    store = ls.open(root)
    now = dict(PREVIOUS, b=np.array([4, 5, 6, 7], np.int16))
    assert store.keys == sorted(now) and store.fields == () and store.generation == 3
    for i, key in enumerate(store.keys):
        np.testing.assert_array_equal(store[i], now[key])
        assert store.dtype_of(i) == now[key].dtype and store.shape_of(i) == now[key].shape
        assert store.metadata(i) == {"name": key.split("/")[-1] + ".npy", "size": now[key].size, "tags": ["x", "y"]}
    np.testing.assert_array_equal(store.at(2)["b"], PREVIOUS["b"])  # (the older generation, kept)
    assert [h.operation for h in store.history()] == ["create", "compile", "compile"]
    assert store.verify().ok and store.where("size > 3").keys == ["a", "b"]
    assert store.info().shape_ranges[2] == ([0, 3], [2, 4])
    with ls.LardonParser(None, root) as parser:  # a write on top, through the new arrays table
        parser.register(np.ones(2), {"size": 2}, "e")
    assert store["e"].tolist() == [1.0, 1.0] and int(store.ids.max()) == 6


def test_a_store_with_named_fields_refuses_a_downgrade_that_would_lose_them(tmp_path):
    from fields_helpers import fields_store

    store = fields_store(tmp_path, {"a": {"x": np.ones(2), "y": np.zeros(3)}})
    with pytest.raises(RuntimeError, match="named fields"):
        run_alembic(ls.open(store.root, readonly=False).engine, command.downgrade, "0003")
    assert ls.open(store.root)[0]["y"].tolist() == [0, 0, 0]


def test_revision_0004_down_and_up_keeps_every_array(store_path, arrays):
    writable = ls.open(store_path, readonly=False)
    run_alembic(writable.engine, command.downgrade, "0003")
    with writable.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT key, shape FROM entries WHERE died IS NULL ORDER BY key").all()
    assert [k for k, _ in rows] == sorted(arrays) and all(s.startswith("[") for _, s in rows)
    run_alembic(writable.engine, command.upgrade, "head")
    store = ls.open(store_path)
    for i, key in enumerate(store.keys):
        np.testing.assert_array_equal(store[i], arrays[key])
