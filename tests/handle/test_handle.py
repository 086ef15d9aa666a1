"""The store handle: create and open, the revision check, per-process engine and reader, catalog look-ups."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import lardon_store as ls
from lardon_store.format.layout import BLOBS_DIR, CATALOG_NAME
from lardon_store.handle import StoreHandle
from lardon_store.testing import empty_store, store_from_arrays


@pytest.mark.sqlite_only  # (the SQLite catalog file itself)
def test_create_makes_an_empty_store_at_the_newest_revision(tmp_path):
    handle = StoreHandle.create(tmp_path / "new")
    assert (tmp_path / "new" / CATALOG_NAME).is_file() and (tmp_path / "new" / BLOBS_DIR).is_dir()
    assert not handle.readonly
    from lardon_store.catalog.migrate import head_revision

    assert handle.revision() == head_revision()
    assert StoreHandle(tmp_path / "new").load_columns().ids.tolist() == []


def test_open_refuses_a_folder_without_a_catalog(tmp_path):
    with pytest.raises(ls.StoreNotFoundError, match="no lardon_store catalog"):
        StoreHandle(tmp_path)


def test_open_refuses_an_empty_catalog_file(tmp_path):
    (tmp_path / CATALOG_NAME).write_bytes(b"")
    with pytest.raises(ls.StoreNotFoundError, match="interrupted"):
        StoreHandle(tmp_path)


def test_look_ups_by_id_and_key(tmp_path):
    store_from_arrays(tmp_path / "s", [("a", np.arange(3), {"x": 1}), ("b", np.ones((2, 2)), {"x": 2})])
    handle = StoreHandle(tmp_path / "s")
    columns = handle.load_columns()
    assert handle.keys_of(columns.ids) == ["a", "b"]
    assert handle.ids_with_key("b") == [int(columns.ids[1])] and handle.ids_with_key("zz") == []
    assert handle.metadata_of(int(columns.ids[0])) == {"x": 1}
    with pytest.raises(ls.GenerationExpiredError, match="reclaimed by gc"):
        handle.metadata_of(10**9)


def test_a_handle_pickles_as_its_path_and_mode(tmp_path):
    root = empty_store(tmp_path / "s")
    handle = StoreHandle(root)
    _ = handle.engine
    copy = pickle.loads(pickle.dumps(handle))
    assert copy.root == handle.root and copy.readonly
    assert copy.engine_pid == -1 and copy.reader.pid == handle.reader.pid


@pytest.mark.parametrize(
    "message, error",
    [
        ("file is not a database", ls.IncompatibleSchemaError),
        ("unable to open database file", ls.StoreIOError),
        ("attempt to write a readonly database", ls.StoreIOError),
        ("disk I/O error", ls.StoreIOError),
        ("database or disk is full", ls.StoreIOError),
        ("malformed database schema (x)", ls.CorruptStoreError),
    ],
)
def test_sqlite_errors_on_read_become_library_errors_naming_the_catalog(tmp_path, message, error):
    import sqlite3

    from lardon_store.catalog.engine import read_error

    found = read_error(sqlite3.OperationalError(message), tmp_path / CATALOG_NAME)
    assert type(found) is error and str(tmp_path / CATALOG_NAME) in str(found) and message in str(found)
    assert not (error is ls.StoreIOError and "not a lardon_store catalog" in str(found))


def test_a_read_only_folder_is_opened_read_only_and_refused_for_writing(tmp_path):
    """As a user without write permission on the folder (skipped as root, where permissions do not bind)."""
    import os

    root = store_from_arrays(tmp_path / "s", [("a", np.arange(3), {"x": 1})]).root
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions; tests/facade/test_generations.py mounts a read-only folder")
    for path in (root / CATALOG_NAME, root):
        path.chmod(0o555)
    try:
        assert ls.open(root).keys == ["a"]
        with pytest.raises(ls.ReadOnlyStoreError):
            ls.open(root, readonly=False)
    finally:
        for path in (root, root / CATALOG_NAME):
            path.chmod(0o755)
