"""The catalog writer: rows committed only after the bytes they point at are durable, one generation per commit.

``CatalogWriter.add`` appends an item's bytes to the shards at once and keeps its rows (entry, metadata values, and
the source row) pending; ``commit`` fsyncs the shards, then inserts every pending row in one transaction. A crash
anywhere leaves only unreferenced bytes (which gc reclaims) and never a row pointing at incomplete data. Compile,
``LardonParser`` and the legacy importer all write through it, holding the store's lock (``io.lock``).

A compile sends a batch once it holds ``BATCH_BYTES`` of array data or ``BATCH_SOURCES`` sources (``full()``):
``send`` starts the batch's fsync on the shard writer's syncer thread and queues its rows, and the compile goes on
running callbacks and appending bytes while the disk syncs. ``commit_ready`` commits the queued batches whose fsync
has completed, in the order they were sent; ``commit`` waits for all of them. Rows never commit before their bytes
are durable, and a failed fsync fails every later batch.

Generations: each commit is one new generation (a ``generations`` row naming the operation and the entries added
and removed). New entry rows are born at it, with ids taken from ``store_info.next_entry_id`` (never reused, even
after gc deletes rows); entries removed or replaced are not deleted but retired (``died`` set to it), so that older
generations stay readable until gc's retention lets them go. Keys are unique among live rows.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import ColumnElement, Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from ..errors import InvalidDataError, StoreWriteError
from ..format.codecs import shape_to_text
from ..format.fields import ALIGN_KEY, FIELDS_KEY, UNNAMED, Alignment, fields_to_json
from ..format.layout import DEFAULT_MAX_SHARD_BYTES
from ..format.metadata import scalar_rows, to_json
from ..io.crash import crash_point
from ..io.shards import ShardWriter
from .dialect import driver_many
from .engine import locate
from .reads import current_generation, has_arrays, next_shard_floor, shard_rows, store_value
from .schema import entries, generations, shards, sources, store_info

__all__ = [
    "BATCH_BYTES",
    "BATCH_SOURCES",
    "CatalogWriter",
    "MAX_SENT",
    "catalog_write_error",
    "allocate_ids",
    "next_generation",
    "record_generation",
    "retire",
    "retire_all",
    "retire_keys",
    "retire_sources",
    "set_store_value",
]

_INSERT_ENTRIES = 'INSERT INTO entries (id, "key", source_id, metadata, born) VALUES (?, ?, ?, ?, ?)'
_INSERT_ARRAYS = (
    'INSERT INTO arrays (entry_id, field, shard_id, "offset", nbytes, dtype, shape, checksum) '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_META_VALUES = 'INSERT INTO meta_values (entry_id, "key", type, num, text) VALUES (?, ?, ?, ?, ?)'
BATCH_BYTES = 256 << 20
BATCH_SOURCES = 512
MAX_SENT = 2  # batches sent (syncing) whose rows have not committed, at most
_CHUNK = 500  # values per IN (...) list


def catalog_write_error(exc: OperationalError, root: Path) -> Exception:
    """A StoreWriteError naming the catalog for SQLite's disk errors (SQLITE_IOERR, SQLITE_FULL); others as they are."""
    text = str(exc.orig if exc.orig is not None else exc).lower()
    if "disk" not in text and "full" not in text and "i/o" not in text:
        return exc
    return StoreWriteError(
        f"{locate(root)}: writing the catalog failed ({exc.orig}): the disk may be full or a file size limit "
        "reached. The transaction was rolled back; free space and run the command again."
    )


@dataclass(slots=True)
class _Batch:
    """The rows of one commit, waiting for the fsync of the bytes they point at (``durable``: a future of the
    synced shards' sizes)."""

    sources: list[dict]
    entries: list[tuple[str, dict, dict]]  # (source path or "", entry row, metadata)
    retired_sources: list[int]
    existing_shards: dict[str, int]
    record_fields: bool
    alignment: Alignment | None
    before_rows: Callable[[Connection, int], int] | None
    durable: Future
    after_rows: Callable[[Connection], None] | None


class CatalogWriter:
    """Buffers catalog rows for entries whose bytes are being written, and commits them after an fsync."""

    def __init__(
        self, engine: Engine, root: Path, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, operation: str = "compile"
    ):
        self.engine, self.root, self.operation = engine, root, operation
        with engine.connect() as conn:
            known = shard_rows(conn)
            floor = next_shard_floor(conn)
            recorded = store_value(conn, FIELDS_KEY)
            self.fields: tuple[str, ...] | None = (
                tuple(json.loads(recorded)) if recorded else (UNNAMED,) if has_arrays(conn) else None
            )
        self._record_fields = False
        self.alignment: Alignment | None = None  # recorded with the next commit when set
        self.shard_ids = {path: sid for sid, (path, _) in known.items()}
        self.writer = ShardWriter(
            root, {path: size for path, size in known.values()}, max_shard_bytes, min_number=floor
        )
        self.pending_sources: list[dict] = []
        self.pending_entries: list[tuple[str, dict, dict]] = []  # (source path or "", entry row, metadata)
        self.pending_bytes = 0
        self.placed_bytes = 0  # bytes of the shards that compile tasks wrote (see add_placed)
        self._placed_shards: set[str] = set()
        self.entries_written = 0
        self.existing_shards: dict[str, int] = {}
        self.retired_sources: list[int] = []
        self.generations: list[int] = []
        self._sent: deque[_Batch] = deque()  # batches whose bytes are being synced, their rows not committed

    def retire_sources(self, source_ids: Sequence[int]) -> None:
        """Remove these sources (and retire their entries) at the next ``commit``."""
        self.retired_sources += list(source_ids)

    def check_fields(self, names: tuple[str, ...], where: str) -> None:
        """InvalidDataError naming ``where`` unless an entry with fields ``names`` (sorted) fits this store: every
        entry of a store has the same fields (the first entry written decides them)."""
        if self.fields is None:
            self.fields, self._record_fields = names, True
        elif names != self.fields:
            raise InvalidDataError(
                f"{where}: the callback returned {_describe(names)}, but this store's entries have "
                f"{_describe(self.fields)}: every entry of a store has the same fields. Return them all, or compile "
                "into a new store."
            )

    def add(self, source_row: dict | None, items: list[tuple[str, np.ndarray | dict[str, np.ndarray], dict]]) -> None:
        """Append the items' bytes now; their rows (and ``source_row``) wait for the next ``commit``. An item is
        ``(key, array or {field: array}, metadata)``."""
        source_path = source_row["path"] if source_row else ""
        for key, data, _ in items:
            self.check_fields(tuple(sorted(data)) if isinstance(data, dict) else (UNNAMED,), source_path or key)
        if source_row is not None:
            self.pending_sources.append(source_row)
        for key, data, md in items:
            fields = sorted(data.items()) if isinstance(data, dict) else [(UNNAMED, data)]
            placed = []
            for name, array in fields:
                shard_path, offset, nbytes, crc = self.writer.append(array)
                placed.append((name, shard_path, offset, nbytes, array.dtype.str, shape_to_text(array.shape), crc))
                self.pending_bytes += nbytes
            self.pending_entries.append((source_path, {"key": key, "arrays": placed, "metadata": to_json(md)}, md))

    def add_placed(
        self, source_row: dict, shard: str | None, shard_size: int, items: list[tuple[str, list[tuple], dict]]
    ) -> None:
        """Reference entries whose bytes another process already wrote and fsynced into the new shard ``shard``
        (``shard_size`` bytes): a compile task's. An item is ``(key, [(field, offset, nbytes, dtype, shape text,
        checksum)], metadata)``; its rows (and ``source_row``) wait for the next ``commit``."""
        for _, arrays, _ in items:
            self.check_fields(tuple(a[0] for a in arrays), source_row["path"])
        self.pending_sources.append(source_row)
        if shard is not None:
            self.existing_shards[shard] = shard_size
            if shard not in self._placed_shards:
                self._placed_shards.add(shard)
                self.placed_bytes += shard_size
        for key, arrays, md in items:
            placed = [
                (name, shard, offset, nbytes, dtype, shape, crc) for name, offset, nbytes, dtype, shape, crc in arrays
            ]
            self.pending_entries.append(
                (source_row["path"], {"key": key, "arrays": placed, "metadata": to_json(md)}, md)
            )
            self.pending_bytes += sum(a[2] for a in arrays)

    def add_existing(self, key: str, relpath: str, size: int, dtype: np.dtype, shape: tuple, crc: str, md: dict):
        """Reference a whole file already inside the store (a legacy lardon file) as the bytes of entry ``key``."""
        self.check_fields((UNNAMED,), key)
        self.existing_shards[relpath] = size
        placed = [(UNNAMED, relpath, 0, size, dtype.str, shape_to_text(shape), crc)]
        self.pending_entries.append(("", {"key": key, "arrays": placed, "metadata": to_json(md)}, md))

    def full(self) -> bool:
        """Whether the pending batch is large enough to commit."""
        return self.pending_bytes >= BATCH_BYTES or len(self.pending_sources) >= BATCH_SOURCES

    def send(
        self,
        before_rows: Callable[[Connection, int], int] | None = None,
        after_rows: Callable[[Connection], None] | None = None,
    ) -> None:
        """Start the fsync of the bytes appended so far (on the shard writer's syncer thread) and queue the pending
        rows behind it: they commit, in order, one generation per batch, at a later ``commit_ready`` or ``commit``
        once their bytes are durable. The caller goes on appending meanwhile. At most ``MAX_SENT`` batches wait:
        sending one more first commits the oldest."""
        crash_point("before_sync")
        durable = self.writer.sync_async()
        self._sent.append(
            _Batch(
                self.pending_sources,
                self.pending_entries,
                self.retired_sources,
                self.existing_shards,
                self._record_fields,
                self.alignment,
                before_rows,
                durable,
                after_rows,
            )
        )
        self.pending_sources, self.pending_entries, self.pending_bytes = [], [], 0
        self._record_fields, self.alignment = False, None
        self.existing_shards, self.retired_sources = {}, []
        while len(self._sent) > MAX_SENT:
            self._commit_sent()

    def commit_ready(self) -> None:
        """Commit the sent batches whose bytes are durable already (without waiting for the others)."""
        while self._sent and self._sent[0].durable.done():
            self._commit_sent()

    def commit(
        self,
        before_rows: Callable[[Connection, int], int] | None = None,
        after_rows: Callable[[Connection], None] | None = None,
    ) -> int | None:
        """fsync the bytes, then commit every pending row: the batches sent before, then the pending one, each in
        one transaction, one new generation each. Return the pending batch's generation (None when it had nothing
        to commit).

        ``before_rows(conn, generation)`` runs first inside the pending batch's transaction (e.g. to retire the
        entries being replaced) and returns how many entries it retired; ``after_rows(conn)`` runs last in it (not at
        all when the pending batch had nothing to commit).
        """
        self.send(before_rows, after_rows)
        generation = None
        while self._sent:
            generation = self._commit_sent()
        return generation

    def _commit_sent(self) -> int | None:
        """Wait for the oldest sent batch's bytes to be durable, then commit its rows; its generation, or None when
        it had nothing to commit. After a failure the batches sent later are dropped (their bytes stay for gc)."""
        batch = self._sent.popleft()
        try:
            return self._commit_batch(batch)
        except BaseException:
            self._sent.clear()
            raise

    def _commit_batch(self, batch: _Batch) -> int | None:
        sizes = dict(batch.durable.result())
        sizes.update(batch.existing_shards)
        crash_point("after_write")
        pending = batch.sources or batch.entries or batch.retired_sources or batch.alignment is not None
        if batch.before_rows is None and not sizes and not pending:
            return None
        try:
            with self.engine.begin() as conn:
                generation = next_generation(conn)
                removed = batch.before_rows(conn, generation) if batch.before_rows is not None else 0
                removed += retire_sources(conn, generation, batch.retired_sources)
                added, replaced = self._insert_rows(conn, batch, sizes, generation)
                record_generation(conn, generation, self.operation, added, removed + replaced)
                if batch.after_rows is not None:
                    batch.after_rows(conn)
                crash_point("before_commit")
        except OperationalError as exc:
            raise catalog_write_error(exc, self.root) from exc
        self.entries_written += len(batch.entries)
        self.generations.append(generation)
        return generation

    def _insert_rows(self, conn: Connection, batch: _Batch, sizes: dict[str, int], generation: int) -> tuple[int, int]:
        """Insert the batch's shard, source and entry rows; return (entries added, entries retired)."""
        for path, size in sizes.items():
            if path in self.shard_ids:
                conn.execute(update(shards).where(shards.c.path == path).values(size=size))
            else:
                self.shard_ids[path] = conn.execute(insert(shards).values(path=path, size=size)).inserted_primary_key[0]
        source_ids: dict[str, int] = {}
        retired = 0
        if batch.sources:
            paths = [row["path"] for row in batch.sources]
            for i in range(0, len(paths), _CHUNK):
                old = select(sources.c.id).where(sources.c.path.in_(paths[i : i + _CHUNK]))
                retired += retire(conn, generation, entries.c.source_id.in_(old))
                conn.execute(delete(sources).where(sources.c.path.in_(paths[i : i + _CHUNK])))
            returned = conn.execute(
                insert(sources).returning(sources.c.id, sources.c.path, sort_by_parameter_order=True),
                batch.sources,
            )
            source_ids = {path: sid for sid, path in returned}
        if batch.record_fields:
            set_store_value(conn, FIELDS_KEY, fields_to_json(self.fields))
        if batch.alignment is not None:
            set_store_value(conn, ALIGN_KEY, batch.alignment.to_json())
        if not batch.entries:
            return 0, retired
        ids = allocate_ids(conn, len(batch.entries))
        values, placed = [], []
        for eid, (source_path, row, _) in zip(ids, batch.entries):
            values.append((eid, row["key"], source_ids.get(source_path), row["metadata"], generation))
            for name, shard_path, offset, nbytes, dtype, shape, crc in row["arrays"]:
                crc = crc.result() if isinstance(crc, Future) else crc
                placed.append((eid, name, self.shard_ids[shard_path], offset, nbytes, dtype, shape, crc))
        try:
            with conn.begin_nested():  # (a savepoint: after a failed insert PostgreSQL refuses any statement)
                driver_many(conn, _INSERT_ENTRIES, values)  # (the driver's executemany: a few µs a row)
        except IntegrityError:
            raise _duplicate_key_error(conn, batch.entries) from None
        driver_many(conn, _INSERT_ARRAYS, placed)
        rows = [(eid, *value) for eid, (_, _, md) in zip(ids, batch.entries) for value in scalar_rows(md)]
        if rows:
            driver_many(conn, _INSERT_META_VALUES, rows)
        return len(ids), retired

    def close(self) -> None:
        """Close the shard being written (rows not committed are dropped; their bytes stay for gc)."""
        self._sent.clear()
        self.writer.close()


def _duplicate_key_error(conn: Connection, pending: list[tuple[str, dict, dict]]) -> InvalidDataError:
    seen: dict[str, str] = {}
    for source_path, row, _ in pending:
        key = row["key"]
        live = select(entries.c.id).where(entries.c.key == key, entries.c.died.is_(None))
        if key in seen or conn.execute(live).first() is not None:
            break
        seen[key] = source_path
    else:
        key, source_path = "?", ""
    return InvalidDataError(
        f"{source_path or 'registered data'}: entry key {key!r} is already used by another entry: rename the "
        "source or the key."
    )


def _describe(names: tuple[str, ...]) -> str:
    return "bare arrays" if names == (UNNAMED,) else "fields " + ", ".join(map(repr, names))


def next_generation(conn: Connection) -> int:
    """The number the generation being written in this transaction takes."""
    return current_generation(conn) + 1


def record_generation(conn: Connection, generation: int, operation: str, added: int, removed: int) -> None:
    """Write the ``generations`` row of ``generation`` (UTC time now)."""
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    conn.execute(
        insert(generations).values(
            generation=generation,
            created_at=now,
            operation=operation,
            added=added,
            removed=removed,
            token=uuid.uuid4().hex,
        )
    )


def set_store_value(conn: Connection, key: str, value: str) -> None:
    """Set the ``store_info`` value of ``key``."""
    conn.execute(delete(store_info).where(store_info.c.key == key))
    conn.execute(insert(store_info).values(key=key, value=value))


def allocate_ids(conn: Connection, n: int) -> range:
    """``n`` new entry ids, never used before in this store (taken from ``store_info.next_entry_id``)."""
    first = int(store_value(conn, "next_entry_id") or 1)
    conn.execute(update(store_info).where(store_info.c.key == "next_entry_id").values(value=str(first + n)))
    return range(first, first + n)


def retire(conn: Connection, generation: int, condition: ColumnElement) -> int:
    """Mark the live entries matching ``condition`` removed at ``generation``; return how many."""
    return conn.execute(update(entries).where(entries.c.died.is_(None), condition).values(died=generation)).rowcount


def retire_keys(conn: Connection, generation: int, keys: Sequence[str]) -> int:
    """Retire the live entries whose key is in ``keys``; return how many."""
    keys = list(keys)
    return sum(retire(conn, generation, entries.c.key.in_(keys[i : i + _CHUNK])) for i in range(0, len(keys), _CHUNK))


def retire_all(conn: Connection, generation: int) -> int:
    """Retire every live entry and forget every source; return how many entries."""
    count = retire(conn, generation, entries.c.id.is_not(None))
    conn.execute(delete(sources))
    return count


def retire_sources(conn: Connection, generation: int, source_ids: Sequence[int]) -> int:
    """Retire the live entries of these sources and delete the sources' rows; return how many entries."""
    ids, count = list(source_ids), 0
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        count += retire(conn, generation, entries.c.source_id.in_(chunk))
        conn.execute(delete(sources).where(sources.c.id.in_(chunk)))
    return count
