"""Stores: open a compiled store, and read its catalog.

A Store is the handle on one store folder (``catalog.sqlite`` + ``blobs/``). It behaves as the Selection of all its
entries, loaded on first use, so ``store[3, :, 10:20]`` and ``len(store)`` work directly. Opening reads no entry
row: only the catalog's header and revision.
"""

from __future__ import annotations

import json
import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import DatabaseError

from . import catalog, migrate, query
from .catalog import entries, shards
from .errors import CorruptStoreError, IncompatibleSchemaError, LardonStoreError, StoreNotFoundError
from .selection import Columns, IdLookup, Selection, build_columns, columns_from_texts
from .shards import ShardReader
from .snapshot import SnapshotCache

__all__ = ["Store", "migrate_store", "open_store"]

_ENTRY_COLUMNS = (entries.c.id, entries.c.key, entries.c.shard_id, entries.c.offset, entries.c.nbytes,
                  entries.c.dtype, entries.c.shape)  # fmt: skip

_COLUMN_TEXTS = (
    "SELECT count(*), group_concat(id), group_concat(shard_id), group_concat(offset), group_concat(nbytes), "
    "group_concat(dtype, char(0)), group_concat(shape, char(0)) FROM entries"
)
_IDS_IN_KEY_ORDER = "SELECT id FROM entries ORDER BY key"
_ID = np.dtype([("id", np.int64)])


def _check_catalog_file(root: Path) -> Path:
    path = catalog.catalog_path(root)
    if not path.is_file():
        raise StoreNotFoundError(
            f"{root}: no lardon_store catalog ({catalog.CATALOG_NAME}) here: create one with "
            "lardon_store.compile(source, target) or `lardon-store compile SRC DST`."
        )
    if path.stat().st_size == 0:
        raise StoreNotFoundError(
            f"{path}: the catalog is empty: the first compile into this store was interrupted; run it again."
        )
    return path


def _check_application_id(conn: Connection, path: Path) -> None:
    # Read through SQLite, never with open(): closing any descriptor of the catalog would drop the locks that this
    # process's SQLite connections hold on it (POSIX locks are per process), letting a writer reset the WAL under them.
    try:
        app_id = conn.exec_driver_sql("PRAGMA application_id").scalar()
    except DatabaseError as exc:
        raise IncompatibleSchemaError(f"{path}: this file is not a lardon_store catalog ({exc.orig}).") from None
    if app_id not in (catalog.APPLICATION_ID, 0):
        raise IncompatibleSchemaError(f"{path}: this file is not a lardon_store catalog (application_id {app_id}).")


class Store:
    """A store folder, opened read-only (the default) or writable."""

    def __init__(self, root: str | os.PathLike, readonly: bool = True, *, _create: bool = False):
        self.root = Path(root).absolute()
        self.readonly = readonly
        if _create:
            (self.root / catalog.BLOBS_DIR).mkdir(parents=True, exist_ok=True)
        else:
            _check_catalog_file(self.root)
        self._engine: Engine | None = None
        self._engine_pid = -1
        self._reader = ShardReader(self.root)
        self._all: Selection | None = None
        self._snapshots = SnapshotCache()
        weakref.finalize(self, self._snapshots.close)  # (close its connection once this store is gone)
        self.last_compile = None
        where = str(self.root)
        if _create and not catalog.catalog_path(self.root).exists():
            migrate.upgrade(self.engine)
            return
        # The revision is checked on a read-only connection first: a catalog we cannot use is never written.
        probe = catalog.make_engine(self.root, readonly=True)
        try:
            with probe.connect() as conn:
                _check_application_id(conn, catalog.catalog_path(self.root))
                current = migrate.check_revision(conn, where, readonly)
        finally:
            probe.dispose()
        if not readonly and current != migrate.head_revision():
            migrate.upgrade(self.engine)

    @property
    def engine(self) -> Engine:
        """The catalog's SQLAlchemy engine (one per process)."""
        if self._engine is None or self._engine_pid != os.getpid():
            self._engine = catalog.make_engine(self.root, self.readonly)
            self._engine_pid = os.getpid()
        return self._engine

    def __getstate__(self) -> dict[str, Any]:
        return {"root": str(self.root), "readonly": self.readonly}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["readonly"])

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "writable"
        return f"<Store {self.root} ({mode})>"

    # --- selections -----------------------------------------------------------------------------------------
    def select(self, condition=None, *, order_by=None, limit: int | None = None, **options: Any) -> Selection:
        """The Selection of the entries matching an SQLAlchemy ``condition`` on ``entries`` (all when None)."""
        with self.engine.connect() as conn:
            columns = self._load_columns(conn, condition, order_by=order_by, limit=limit)
        return Selection(self, columns, **options)

    def _load_columns(self, conn: Connection, condition=None, *, order_by=None, limit: int | None = None) -> Columns:
        """The validated columns of the matching entries, read on ``conn`` (in key order unless ``order_by``)."""
        shard_rows = {sid: (path, size) for sid, path, size in conn.execute(select(shards))}
        if condition is None and order_by is None and limit is None:
            # Every entry: each column read as one text, checked whole (a second per million entries instead of
            # four); a catalog that fails any check is read again row by row below, to name the row at fault.
            columns = columns_from_texts(tuple(conn.exec_driver_sql(_COLUMN_TEXTS).one()), shard_rows)
            if columns is not None:
                in_key_order = np.fromiter(conn.connection.driver_connection.execute(_IDS_IN_KEY_ORDER), _ID)["id"]
                found, at = IdLookup(columns.ids).find(in_key_order)
                if len(at) == len(columns.ids) and found.all():
                    return columns.take(at)
        query = select(*_ENTRY_COLUMNS)
        if condition is not None:
            query = query.where(condition)
        query = query.order_by(*(order_by if order_by is not None else [entries.c.key]))
        if limit is not None:
            query = query.limit(limit)
        return build_columns(conn.execute(query).all(), shard_rows, str(self.root))

    def where(self, *conditions: query.Expr | str, **equals: Any) -> Selection:
        """The entries matching every condition: ``meta`` expressions, query strings, or ``key=value`` equalities.

        Example: ``store.where(meta.instrument == "violin", "pitch > 60", split="train")``.
        """
        return query.store_where(self, conditions, equals)

    def metadata_keys(self) -> dict[str, dict[str, int]]:
        """Each metadata key with the number of entries holding it, per value type."""
        return query.metadata_keys(self)

    def distinct(self, key: str, by_type: bool = False) -> dict[Any, int]:
        """Each value of metadata ``key`` with its number of entries, most frequent first."""
        return query.distinct(self, key, by_type)

    def all(self) -> Selection:
        """The Selection of every entry, in key order (loaded once, then cached; see ``refresh``)."""
        if self._all is None:
            self._all = Selection(self, self._snapshots.get(self, set()).columns)
        return self._all

    def refresh(self) -> Store:
        """Forget the cached selection of all entries (and free the query snapshot), so the next use sees the
        catalog as it is now. Queries need no refresh: each one checks that its snapshot is current."""
        self._all = None
        self._snapshots.close()
        return self

    def __len__(self) -> int:
        return len(self.all())

    def __getitem__(self, key: Any):
        return self.all()[key]

    def __iter__(self):
        return iter(self.all())

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.all(), name)

    # --- catalog look-ups used by selections -----------------------------------------------------------------
    def _keys_of(self, ids: np.ndarray) -> list[str]:
        with self.engine.connect() as conn:
            if len(ids) > 1000:
                found = dict(conn.execute(select(entries.c.id, entries.c.key)).all())
            else:
                found = dict(
                    conn.execute(select(entries.c.id, entries.c.key).where(entries.c.id.in_(ids.tolist()))).all()
                )
        try:
            return [found[i] for i in ids.tolist()]
        except KeyError as exc:
            raise LardonStoreError(
                f"{self.root}: entry id {exc.args[0]} was removed since this selection was made: select again."
            ) from None

    def _id_of(self, key: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(entries.c.id).where(entries.c.key == key)).scalar()

    def _metadata_of(self, entry_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(entries.c.key, entries.c.metadata).where(entries.c.id == entry_id)).first()
        if row is None:
            raise LardonStoreError(f"{self.root}: entry id {entry_id} was removed since this selection was made.")
        key, raw = row
        try:
            found = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise CorruptStoreError(
                f"{self.root}: entry {key!r} has malformed metadata {raw!r:.80}: it must be a JSON object; "
                "run `lardon-store verify`."
            )
        return found

    # --- summary ----------------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """A summary: entries, bytes, dtypes, shape ranges per ndim, metadata keys, shards, failed sources."""
        with self.engine.connect() as conn:
            n, nbytes = conn.execute(select(func.count(), func.coalesce(func.sum(entries.c.nbytes), 0))).one()
            dtypes = dict(conn.execute(select(entries.c.dtype, func.count()).group_by(entries.c.dtype)).all())
            keys = [k for (k,) in conn.execute(text("SELECT DISTINCT key FROM meta_values ORDER BY key"))]
            shard_count, shard_bytes = conn.execute(
                select(func.count(), func.coalesce(func.sum(shards.c.size), 0)).select_from(shards)
            ).one()
            failures = conn.execute(text("SELECT path, error FROM sources WHERE status = 'failed' ORDER BY path")).all()
            revision = migrate.current_revision(conn)
        sel = self.all()
        ranges: dict[int, tuple[list[int], list[int]]] = {}
        c = sel._columns
        for nd in np.unique(c.ndim).tolist():
            rows = c.dims[c.ndim == nd, :nd]
            ranges[nd] = (rows.min(axis=0).tolist(), rows.max(axis=0).tolist())
        return {
            "root": str(self.root),
            "revision": revision,
            "entries": int(n),
            "bytes": int(nbytes),
            "dtypes": dtypes,
            "shape_ranges": ranges,
            "metadata_keys": keys,
            "shards": int(shard_count),
            "shard_bytes": int(shard_bytes),
            "failed_sources": [{"path": p, "error": e} for p, e in failures],
        }

    # --- maintenance ------------------------------------------------------------------------------------------
    def gc(self) -> int:
        """Reclaim dead shard bytes (see ``lardon_store.gc``); return the bytes freed. Takes the write lock."""
        from .gc import gc_store

        freed = gc_store(self.root)
        self.refresh()
        return freed

    def verify(self):
        """Check every shard and entry checksum; return a VerifyReport naming damaged entries and sources."""
        from .verify import verify_store

        return verify_store(self.root)


def open_store(path: str | os.PathLike, readonly: bool = True) -> Store:
    """Open the store at ``path``: read-only by default (``readonly=False`` to write, upgrading an old catalog)."""
    return Store(path, readonly=readonly)


def migrate_store(path: str | os.PathLike) -> str:
    """Upgrade the catalog at ``path`` to this version's schema (a no-op when current); return its revision."""
    store = Store(path, readonly=False)
    with store.engine.connect() as conn:
        return migrate.current_revision(conn) or ""
