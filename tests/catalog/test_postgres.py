"""A store whose catalog is a PostgreSQL database: where the folder says it is, one writer at a time through an
advisory lock (freed by a killed holder), commits seen by readers in other processes through the generation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import make_url

import lardon_store as ls
from lardon_store.format.layout import CATALOG_NAME, CATALOG_URL_NAME

ROOT = Path(__file__).resolve().parents[2]

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    import lardon_store as ls
    store = ls.open(sys.argv[1], readonly=False)
    with store.writing():
        print("HELD", flush=True)
        time.sleep(600)
    """
)


def _sources(folder: Path, n: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        np.save(folder / f"x{i:03d}.npy", np.arange(i + 1, dtype=np.float32))
    return folder


def _child(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)  # fmt: skip


def test_the_folder_names_its_catalog_without_password_and_can_be_redirected(tmp_path, pg_url, monkeypatch):
    with_password = make_url(pg_url).set(password="s3cret").render_as_string(hide_password=False)
    monkeypatch.setenv("PGPASSWORD", "")  # (trust authentication: the password is not checked, only not recorded)
    store = ls.compile(_sources(tmp_path / "raw", 3), tmp_path / "store", catalog=with_password)
    recorded = (tmp_path / "store" / CATALOG_URL_NAME).read_text()
    assert "s3cret" not in recorded and make_url(recorded.strip()).database == make_url(pg_url).database
    assert not (tmp_path / "store" / CATALOG_NAME).exists()
    assert store.keys == ["x000", "x001", "x002"] and "s3cret" not in str(store.catalog)
    # The database moved: the folder's URL is wrong, catalog= and the environment override it.
    (tmp_path / "store" / CATALOG_URL_NAME).write_text("postgresql+psycopg://nobody@127.0.0.1:9/nowhere\n")
    with pytest.raises(ls.StoreIOError, match=r"catalog server 127.0.0.1:9 cannot be reached"):
        ls.open(tmp_path / "store")
    assert ls.open(tmp_path / "store", catalog=pg_url).keys == store.keys
    monkeypatch.setenv("LARDON_STORE_CATALOG", pg_url)
    assert ls.open(tmp_path / "store").keys == store.keys


def test_a_sqlite_store_cannot_be_moved_to_postgresql_by_a_compile(tmp_path, pg_url):
    shutil.copytree(ROOT / "tests" / "data" / "store_rev0003", tmp_path / "store")  # (a SQLite store)
    keys = ls.open(tmp_path / "store", readonly=False).keys
    with pytest.raises(ls.IncompatibleSchemaError, match="cannot move to"):
        ls.compile(_sources(tmp_path / "raw", 2), tmp_path / "store", catalog=pg_url)
    assert not (tmp_path / "store" / CATALOG_URL_NAME).exists() and ls.open(tmp_path / "store").keys == keys


def test_a_database_holds_one_store(tmp_path, pg_url):
    ls.compile(_sources(tmp_path / "raw", 2), tmp_path / "a", catalog=pg_url)
    with pytest.raises(ls.IncompatibleSchemaError, match="already holds a lardon_store catalog"):
        ls.compile(tmp_path / "raw", tmp_path / "b", catalog=pg_url)
    with pytest.raises(ls.LardonStoreError, match="is not PostgreSQL"):
        ls.compile(tmp_path / "raw", tmp_path / "c", catalog="mysql://x@y/z")


def test_one_writer_at_a_time_and_a_killed_holder_frees_the_lock(tmp_path, pg_url):
    src = _sources(tmp_path / "raw", 4)
    ls.compile(src, tmp_path / "store", catalog=pg_url)
    holder = _child(HOLD_LOCK, str(tmp_path / "store"))  # (a writer on another host: no file lock in common)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        _sources(src, 2, start=4)
        with pytest.raises(ls.StoreLockedError, match="another process is writing"):
            ls.compile(src, tmp_path / "store")
        with pytest.raises(ls.StoreLockedError):
            ls.open(tmp_path / "store", readonly=False).gc()
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 30
    while True:  # (the server notices the dead session within moments)
        try:
            store = ls.compile(src, tmp_path / "store")
            break
        except ls.StoreLockedError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert len(store) == 6 and store.verify().ok


def test_two_compiles_racing_one_is_refused(tmp_path, pg_url):
    src = _sources(tmp_path / "raw", 40)
    ls.compile(_sources(tmp_path / "first", 1), tmp_path / "store", catalog=pg_url)
    slow = textwrap.dedent(
        """
        import sys, time, numpy as np
        import lardon_store as ls
        def load(path):
            time.sleep(0.05)
            return np.load(path), {}
        print("STARTED", flush=True)
        ls.compile(sys.argv[1], sys.argv[2], load)
        print("DONE", flush=True)
        """
    )
    other = tmp_path / "other_folder"  # (another host's view of the same store: its own folder, same catalog)
    other.mkdir()
    (other / CATALOG_URL_NAME).write_text((tmp_path / "store" / CATALOG_URL_NAME).read_text())
    child = _child(slow, str(src), str(tmp_path / "store"))
    assert child.stdout.readline().strip() == "STARTED"
    time.sleep(0.5)
    with pytest.raises(ls.StoreLockedError):
        ls.compile(src, other)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and "DONE" in out, err


def test_a_reader_in_another_process_sees_commits_through_the_generation(tmp_path, pg_url):
    src = _sources(tmp_path / "raw", 3)
    store = ls.compile(src, tmp_path / "store", catalog=pg_url)
    pinned = store.all()
    assert (store.generation, len(store)) == (2, 3)
    _sources(src, 2, start=3)
    child = _child("import sys, lardon_store as ls; ls.compile(sys.argv[1], sys.argv[2])", str(src),
                   str(tmp_path / "store"))  # fmt: skip
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert store.generation == 3 and store.keys == [f"x{i:03d}" for i in range(5)]
    assert len(pinned) == 3 and pinned.generation == 2  # (a selection stays pinned)


def test_migrations_up_and_down_on_postgresql(tmp_path, pg_url):
    from alembic import command
    from sqlalchemy import inspect

    from lardon_store.catalog import migrate

    ls.compile(_sources(tmp_path / "raw", 3), tmp_path / "store", catalog=pg_url)
    engine = ls.open(tmp_path / "store", readonly=False).engine

    def alembic(action, target):
        with engine.begin() as conn:
            config = migrate.alembic_config()
            config.attributes["connection"] = conn
            action(config, target)

    alembic(command.downgrade, "0003")
    with engine.connect() as conn:
        assert "arrays" not in inspect(conn).get_table_names()
        assert conn.exec_driver_sql('SELECT count(*) FROM entries WHERE "offset" >= 0').scalar() == 3
    with pytest.raises(ls.SchemaOutdatedError, match="lardon-store migrate"):
        ls.open(tmp_path / "store")
    assert ls.migrate_store(tmp_path / "store") == migrate.head_revision()
    store = ls.open(tmp_path / "store")
    assert store.keys == ["x000", "x001", "x002"] and store[2].tolist() == [0.0, 1.0, 2.0]
    alembic(command.downgrade, "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    alembic(command.upgrade, "head")
    assert len(ls.open(tmp_path / "store")) == 0


def test_dispose_engines_ends_this_process_sessions_and_stores_reconnect(tmp_path, pg_url):
    from pg_helpers import catalog_sql

    from lardon_store.catalog.engine import dispose_engines

    store = ls.compile(_sources(tmp_path / "src", 3), tmp_path / "store", catalog=pg_url)
    assert len(store.all()) == 3
    database = make_url(pg_url).database
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = ? AND pid <> pg_backend_pid()"

    def open_sessions() -> int:
        return catalog_sql(tmp_path / "store", sessions, (database,))[0][0]

    assert open_sessions() >= 1  # (the connections this process keeps pooled)
    dispose_engines()
    deadline = time.monotonic() + 5
    while open_sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_sessions() == 0
    assert len(ls.open(tmp_path / "store").all()) == 3 and store.generation >= 1  # (later uses connect again)
