"""The store handle: one store folder opened in this process, with its catalog engine and shard reader.

``StoreHandle(root, readonly)`` opens an existing store; ``StoreHandle.create(root)`` opens or creates one for
writing. Opening reads no entry row: only the catalog's header (its ``application_id``) and Alembic revision, on a
read-only connection first, so that a catalog this version cannot use is never written. A writable handle upgrades
an older catalog; a read-only one refuses it with ``SchemaOutdatedError`` naming the command that migrates.

A read-only handle also opens a store on read-only media (or in a folder this user cannot write): when SQLite
cannot create the catalog's ``-shm`` file there and nothing is left in its ``-wal``, the catalog is opened as
immutable (``immutable=True`` asks for that directly, for network filesystems nobody writes while it is open).

Per process: the engine and the shard maps are made anew after ``fork`` (a child never uses its parent's sqlite3
connection or maps), and a handle pickles as its path and mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from .catalog import migrate, reads
from .catalog.engine import (
    catalog_path,
    check_application_id,
    check_no_foreign_tables,
    make_engine,
    needs_immutable,
    read_errors,
)
from .errors import ReadOnlyStoreError, StoreNotFoundError
from .format.columns import Columns
from .format.layout import BLOBS_DIR, CATALOG_NAME
from .io.shards import ShardReader

__all__ = ["StoreHandle"]


def _check_catalog_file(root: Path) -> None:
    path = catalog_path(root)
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

    def __init__(self, root: str | os.PathLike, readonly: bool = True, immutable: bool = False):
        self._setup(Path(root).absolute(), readonly or immutable)
        _check_catalog_file(self.root)
        self.immutable = bool(immutable) or (self.readonly and needs_immutable(self.root))
        self._check_revision()

    @classmethod
    def create(cls, root: str | os.PathLike) -> StoreHandle:
        """A writable handle on the store at ``root``, created (folder, ``blobs/``, catalog at head) if missing."""
        handle = cls.__new__(cls)
        handle._setup(Path(root).absolute(), readonly=False)
        (handle.root / BLOBS_DIR).mkdir(parents=True, exist_ok=True)
        if catalog_path(handle.root).exists():
            handle._check_revision()
        else:
            migrate.upgrade(handle.engine)
        return handle

    def _setup(self, root: Path, readonly: bool) -> None:
        self.root = root
        self.readonly = readonly
        self.immutable = False
        self._engine: Engine | None = None
        self._engine_pid = -1
        self._reader = ShardReader(root)
        self._store_id: str | None = None

    def _check_revision(self) -> None:
        if not self.readonly and not all(os.access(p, os.W_OK) for p in (self.root, catalog_path(self.root))):
            raise ReadOnlyStoreError(
                f"{self.root}: cannot open this store for writing: the folder or its catalog is read-only (a "
                "read-only filesystem, or files you cannot write). Open it read-only with lardon_store.open(path)."
            )
        probe = make_engine(self.root, readonly=True, immutable=self.immutable)
        try:
            with probe.connect() as conn:
                check_application_id(conn, catalog_path(self.root))
                current = migrate.check_revision(conn, str(self.root), self.readonly)
                if current is None:
                    check_no_foreign_tables(conn, catalog_path(self.root))
        finally:
            probe.dispose()
        if not self.readonly and current != migrate.head_revision():
            migrate.upgrade(self.engine)

    @property
    def engine(self) -> Engine:
        """The catalog's SQLAlchemy engine (one per process)."""
        if self._engine is None or self._engine_pid != os.getpid():
            self._engine = make_engine(self.root, self.readonly, self.immutable)
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

    def __getstate__(self) -> dict[str, Any]:
        return {"root": str(self.root), "readonly": self.readonly, "immutable": self.immutable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["readonly"], state.get("immutable", False))

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "writable"
        return f"<{type(self).__name__} {self.root} ({mode})>"

    # --- catalog look-ups ------------------------------------------------------------------------------------
    def load_columns(self, condition: Any = None, *, order_by: Any = None, limit: int | None = None) -> Columns:
        """The validated columns of the entries matching an SQLAlchemy ``condition`` (see ``catalog.reads``)."""
        with read_errors(catalog_path(self.root)), self.engine.connect() as conn:
            return reads.load_columns(conn, str(self.root), condition, order_by=order_by, limit=limit)

    def keys_of(self, ids: np.ndarray, generation: int | None = None) -> list[str]:
        """The keys of entry ``ids``, in order (``generation``: the one they were selected at, for the error that
        says gc reclaimed them)."""
        with read_errors(catalog_path(self.root)), self.engine.connect() as conn:
            return reads.keys_of(conn, ids, str(self.root), generation)

    def ids_with_key(self, key: str) -> list[int]:
        """The ids of the rows of every generation still kept whose key is ``key``."""
        with self.engine.connect() as conn:
            return reads.ids_with_key(conn, key)

    def metadata_of(self, entry_id: int, generation: int | None = None) -> dict[str, Any]:
        """The metadata dict of entry ``entry_id``."""
        with read_errors(catalog_path(self.root)), self.engine.connect() as conn:
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
