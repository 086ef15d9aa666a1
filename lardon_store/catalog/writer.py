"""The catalog writer: rows committed only after the bytes they point at are durable.

``CatalogWriter.add`` appends an item's bytes to the shards at once and keeps its rows (entry, metadata values, and
the source row) pending; ``commit`` fsyncs the shards, then inserts every pending row in one transaction. A crash
anywhere leaves only unreferenced bytes (which gc reclaims) and never a row pointing at incomplete data. Compile,
``LardonParser`` and the legacy importer all write through it, holding the store's lock (``io.lock``).

A batch commits once it holds ``BATCH_BYTES`` of array data or ``BATCH_SOURCES`` sources (``full()``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from ..errors import InvalidDataError, StoreWriteError
from ..format.codecs import shape_to_text
from ..format.layout import DEFAULT_MAX_SHARD_BYTES
from ..format.metadata import scalar_rows, to_json
from ..io.crash import crash_point
from ..io.shards import ShardWriter
from .engine import catalog_path
from .reads import next_shard_floor, shard_rows
from .schema import entries, meta_values, shards, sources

__all__ = [
    "BATCH_BYTES",
    "BATCH_SOURCES",
    "CatalogWriter",
    "catalog_write_error",
    "delete_entries",
    "delete_everything",
]

BATCH_BYTES = 64 << 20
BATCH_SOURCES = 512


def catalog_write_error(exc: OperationalError, root: Path) -> Exception:
    """A StoreWriteError naming the catalog for SQLite's disk errors (SQLITE_IOERR, SQLITE_FULL); others as they are."""
    text = str(exc.orig if exc.orig is not None else exc).lower()
    if "disk" not in text and "full" not in text and "i/o" not in text:
        return exc
    return StoreWriteError(
        f"{catalog_path(root)}: writing the catalog failed ({exc.orig}): the disk may be full or a file size limit "
        "reached. The transaction was rolled back; free space and run the command again."
    )


class CatalogWriter:
    """Buffers catalog rows for entries whose bytes are being written, and commits them after an fsync."""

    def __init__(self, engine: Engine, root: Path, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES):
        self.engine, self.root = engine, root
        with engine.connect() as conn:
            known = shard_rows(conn)
            floor = next_shard_floor(conn)
        self.shard_ids = {path: sid for sid, (path, _) in known.items()}
        self.writer = ShardWriter(
            root, {path: size for path, size in known.values()}, max_shard_bytes, min_number=floor
        )
        self.pending_sources: list[dict] = []
        self.pending_entries: list[tuple[str, dict, dict]] = []  # (source path or "", entry row, metadata)
        self.pending_bytes = 0
        self.entries_written = 0
        self.existing_shards: dict[str, int] = {}

    def add(self, source_row: dict | None, items: list[tuple[str, np.ndarray, dict]]) -> None:
        """Append the items' bytes now; their rows (and ``source_row``) wait for the next ``commit``."""
        source_path = source_row["path"] if source_row else ""
        if source_row is not None:
            self.pending_sources.append(source_row)
        for key, array, md in items:
            shard_path, offset, nbytes, crc = self.writer.append(array)
            row = {
                "key": key,
                "shard_path": shard_path,
                "offset": offset,
                "nbytes": nbytes,
                "dtype": array.dtype.str,
                "shape": shape_to_text(array.shape),
                "checksum": crc,
                "metadata": to_json(md),
            }
            self.pending_entries.append((source_path, row, md))
            self.pending_bytes += nbytes

    def add_existing(self, key: str, relpath: str, size: int, dtype: np.dtype, shape: tuple, crc: str, md: dict):
        """Reference a whole file already inside the store (a legacy lardon file) as the bytes of entry ``key``."""
        self.existing_shards[relpath] = size
        row = {
            "key": key,
            "shard_path": relpath,
            "offset": 0,
            "nbytes": size,
            "dtype": dtype.str,
            "shape": shape_to_text(shape),
            "checksum": crc,
            "metadata": to_json(md),
        }
        self.pending_entries.append(("", row, md))

    def full(self) -> bool:
        """Whether the pending batch is large enough to commit."""
        return self.pending_bytes >= BATCH_BYTES or len(self.pending_sources) >= BATCH_SOURCES

    def commit(self, before_rows: Callable[[Connection], None] | None = None) -> None:
        """fsync the bytes, then commit every pending row in one transaction.

        ``before_rows(conn)`` runs first inside that transaction (e.g. to delete the entries being replaced).
        """
        crash_point("before_sync")
        sizes = self.writer.sync()
        sizes.update(self.existing_shards)
        crash_point("after_write")
        if before_rows is None and not sizes and not self.pending_sources and not self.pending_entries:
            return
        try:
            with self.engine.begin() as conn:
                if before_rows is not None:
                    before_rows(conn)
                self._insert_rows(conn, sizes)
                crash_point("before_commit")
        except OperationalError as exc:
            raise catalog_write_error(exc, self.root) from exc
        self.entries_written += len(self.pending_entries)
        self.pending_sources, self.pending_entries, self.pending_bytes = [], [], 0
        self.existing_shards = {}

    def _insert_rows(self, conn: Connection, sizes: dict[str, int]) -> None:
        for path, size in sizes.items():
            if path in self.shard_ids:
                conn.execute(update(shards).where(shards.c.path == path).values(size=size))
            else:
                self.shard_ids[path] = conn.execute(insert(shards).values(path=path, size=size)).inserted_primary_key[0]
        source_ids: dict[str, int] = {}
        if self.pending_sources:
            paths = [row["path"] for row in self.pending_sources]
            for i in range(0, len(paths), 500):
                conn.execute(delete(sources).where(sources.c.path.in_(paths[i : i + 500])))
            returned = conn.execute(
                insert(sources).returning(sources.c.id, sources.c.path, sort_by_parameter_order=True),
                self.pending_sources,
            )
            source_ids = {path: sid for sid, path in returned}
        if not self.pending_entries:
            return
        values = []
        for source_path, row, _ in self.pending_entries:
            value = dict(row)
            value["shard_id"] = self.shard_ids[value.pop("shard_path")]
            value["source_id"] = source_ids.get(source_path)
            values.append(value)
        try:
            ids = conn.execute(insert(entries).returning(entries.c.id, sort_by_parameter_order=True), values)
            ids = [eid for (eid,) in ids]
        except IntegrityError:
            raise self._duplicate_key_error(conn) from None
        rows = [
            {"entry_id": eid, "key": k, "type": t, "num": n, "text": s}
            for eid, (_, _, md) in zip(ids, self.pending_entries)
            for k, t, n, s in scalar_rows(md)
        ]
        if rows:
            conn.execute(insert(meta_values), rows)

    def _duplicate_key_error(self, conn: Connection) -> InvalidDataError:
        seen: dict[str, str] = {}
        for source_path, row, _ in self.pending_entries:
            key = row["key"]
            if key in seen or conn.execute(select(entries.c.id).where(entries.c.key == key)).first() is not None:
                break
            seen[key] = source_path
        else:
            key, source_path = "?", ""
        return InvalidDataError(
            f"{source_path or 'registered data'}: entry key {key!r} is already used by another entry: rename the "
            "source or the key."
        )

    def close(self) -> None:
        """Close the shard being written (rows not committed are dropped; their bytes stay for gc)."""
        self.writer.close()


def delete_entries(conn: Connection, keys: list[str]) -> None:
    """Delete the entries whose key is in ``keys`` (their metadata values go with them)."""
    for i in range(0, len(keys), 500):
        conn.execute(delete(entries).where(entries.c.key.in_(keys[i : i + 500])))


def delete_everything(conn: Connection) -> None:
    """Delete every entry and source row (the shards stay, for gc)."""
    conn.execute(delete(entries))
    conn.execute(delete(sources))
