"""The store handle: one store folder opened in this process, with its catalog engine and shard reader.

``StoreHandle(root, readonly)`` opens an existing store; ``StoreHandle.create(root)`` opens or creates one for
writing. Opening reads no entry row: only the catalog's header (its ``application_id``) and Alembic revision, on a
read-only connection first, so that a catalog this version cannot use is never written. A writable handle upgrades
an older catalog; a read-only one refuses it with ``SchemaOutdatedError`` naming the command that migrates.

A read-only handle also opens a store on read-only media (or in a folder this user cannot write): when SQLite
cannot create the catalog's ``-shm`` file there and nothing is left in its ``-wal``, the catalog is opened as
immutable (``immutable=True`` asks for that directly, for network filesystems nobody writes while it is open).

The catalog is the folder's SQLite file, or the PostgreSQL database the folder's ``catalog.url`` names (see
``catalog/engine.py``): ``catalog=URL`` chooses it when creating, and overrides what the folder says when opening.

Per process: the engine and the shard maps are made anew after ``fork`` (a child never uses its parent's database
connection or maps), and a handle pickles as its path, mode and catalog override.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from .catalog import migrate, reads
from .catalog.engine import (
    CatalogLocation,
    catalog_lock,
    check_application_id,
    check_no_foreign_tables,
    locate,
    make_engine,
    needs_immutable,
    read_errors,
    record_location,
)
from .errors import IncompatibleSchemaError, ReadOnlyStoreError, StoreNotFoundError
from .format.columns import Columns
from .format.layout import BLOBS_DIR, CATALOG_NAME, CATALOG_URL_NAME
from .io.shards import ShardReader

__all__ = ["StoreHandle"]


def _check_catalog_file(location: CatalogLocation) -> None:
    root, path = location.root, location.path
    if location.url is not None:
        if not root.is_dir():
            raise StoreNotFoundError(f"{root}: no store folder here (its catalog would be {location}).")
        return
    if not path.is_file():
        raise StoreNotFoundError(
            f"{root}: no lardon_store catalog ({CATALOG_NAME}) here: create one with "
            "lardon_store.compile(source, target) or `lardon-store compile SRC DST`."
        )
    if path.stat().st_size == 0:
        raise StoreNotFoundError(
            f"{path}: the catalog is empty: the first compile into this store was interrupted; run it again."
        )


class StoreHandle:
    """A store folder opened read-only (the default) or writable: its engine, reader and catalog look-ups."""

    def __init__(
        self, root: str | os.PathLike, readonly: bool = True, immutable: bool = False, catalog: str | None = None
    ):
        self._setup(Path(root).absolute(), readonly or immutable, catalog)
        _check_catalog_file(self.catalog)
        self.immutable = bool(immutable) or (self.readonly and needs_immutable(self.catalog))
        self._check_revision()

    @classmethod
    def create(cls, root: str | os.PathLike, catalog: str | None = None) -> StoreHandle:
        """A writable handle on the store at ``root``, created (folder, ``blobs/``, catalog at head) if missing;
        ``catalog``: the PostgreSQL URL of a new store's catalog (see ``catalog/engine.py``)."""
        handle = cls.__new__(cls)
        handle._setup(Path(root).absolute(), False, catalog)
        (handle.root / BLOBS_DIR).mkdir(parents=True, exist_ok=True)
        location = handle.catalog
        if location.url is not None and location.path.exists():
            raise IncompatibleSchemaError(
                f"{handle.root}: this store's catalog is its {CATALOG_NAME}; it cannot move to {location} (the "
                "arrays it names would be forgotten). Compile into a new folder for a PostgreSQL catalog, or unset "
                "LARDON_STORE_CATALOG."
            )
        if location.url is None and location.path.exists():
            handle._check_revision()
        elif location.url is None:
            migrate.upgrade(handle.engine)
        else:
            new = not (handle.root / CATALOG_URL_NAME).exists()
            with read_errors(location), catalog_lock(handle.engine, location):
                with handle.engine.connect() as conn:
                    current = migrate.check_revision(conn, str(location), readonly=False)
                    if current is None:
                        check_no_foreign_tables(conn, location)
                    elif new:
                        raise IncompatibleSchemaError(
                            f"{location}: this database already holds a lardon_store catalog (of another store "
                            "folder): a store owns its whole database. Create another database for this store."
                        )
                if current != migrate.head_revision():
                    migrate.upgrade(handle.engine)
            record_location(location)
        return handle

    def _setup(self, root: Path, readonly: bool, catalog: str | None = None) -> None:
        self.root = root
        self.readonly = readonly
        self._catalog_arg = catalog
        self.catalog = locate(root, catalog)
        self.immutable = False
        self._engine: Engine | None = None
        self._engine_pid = -1
        self._reader = ShardReader(root)
        self._store_id: str | None = None

    def _check_revision(self) -> None:
        files = (self.root,) if self.catalog.url is not None else (self.root, self.catalog.path)
        if not self.readonly and not all(os.access(p, os.W_OK) for p in files):
            raise ReadOnlyStoreError(
                f"{self.root}: cannot open this store for writing: the folder or its catalog is read-only (a "
                "read-only filesystem, or files you cannot write). Open it read-only with lardon_store.open(path)."
            )
        probe = make_engine(self.catalog, readonly=True, immutable=self.immutable)
        try:
            with read_errors(self.catalog), probe.connect() as conn:
                check_application_id(conn, self.catalog)
                current = migrate.check_revision(conn, str(self.root), self.readonly)
                if current is None:
                    check_no_foreign_tables(conn, self.catalog)
        finally:
            if self.catalog.is_sqlite:  # (PostgreSQL engines are shared within the process)
                probe.dispose()
        if not self.readonly and current != migrate.head_revision():
            with catalog_lock(self.engine, self.catalog):
                migrate.upgrade(self.engine)

    @property
    def engine(self) -> Engine:
        """The catalog's SQLAlchemy engine (one per process)."""
        if self._engine is None or self._engine_pid != os.getpid():
            self._engine = make_engine(self.catalog, self.readonly, self.immutable)
            self._engine_pid = os.getpid()
        return self._engine

    @property
    def engine_pid(self) -> int:
        """The process the current engine was made in (-1 before the first use)."""
        return self._engine_pid

    @property
    def reader(self) -> ShardReader:
        """The shard maps of this process."""
        return self._reader

    def writing(self):
        """A context holding the catalog's single-writer lock (PostgreSQL; a no-op for SQLite, whose writers hold
        the folder's ``write.lock``): StoreLockedError if another writer still holds it after a second."""
        return catalog_lock(self.engine, self.catalog)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": str(self.root), "readonly": self.readonly, "immutable": self.immutable,
                "catalog": self._catalog_arg}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["readonly"], state.get("immutable", False), state.get("catalog"))

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "writable"
        return f"<{type(self).__name__} {self.root} ({mode})>"

    # --- catalog look-ups ------------------------------------------------------------------------------------
    def load_columns(self, condition: Any = None, *, order_by: Any = None, limit: int | None = None) -> Columns:
        """The validated columns of the entries matching an SQLAlchemy ``condition`` (see ``catalog.reads``)."""
        with read_errors(self.catalog), self.engine.connect() as conn:
            return reads.load_columns(conn, str(self.root), condition, order_by=order_by, limit=limit)

    def keys_of(self, ids: np.ndarray, generation: int | None = None) -> list[str]:
        """The keys of entry ``ids``, in order (``generation``: the one they were selected at, for the error that
        says gc reclaimed them)."""
        with read_errors(self.catalog), self.engine.connect() as conn:
            return reads.keys_of(conn, ids, str(self.root), generation)

    def ids_with_key(self, key: str) -> list[int]:
        """The ids of the rows of every generation still kept whose key is ``key``."""
        with self.engine.connect() as conn:
            return reads.ids_with_key(conn, key)

    def metadata_of(self, entry_id: int, generation: int | None = None) -> dict[str, Any]:
        """The metadata dict of entry ``entry_id``."""
        with read_errors(self.catalog), self.engine.connect() as conn:
            return reads.metadata_of(conn, entry_id, str(self.root), generation)

    @property
    def store_id(self) -> str:
        """The store's id: a UUID kept in the catalog, the same on every copy of the store."""
        if self._store_id is None:
            with self.engine.connect() as conn:
                self._store_id = reads.store_value(conn, "store_id") or ""
        return self._store_id

    def revision(self) -> str | None:
        """The catalog's Alembic revision."""
        with self.engine.connect() as conn:
            return migrate.current_revision(conn)
