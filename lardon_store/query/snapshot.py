"""The query snapshot: an in-memory, columnar copy of the catalog that ``Store.where`` evaluates with numpy.

A SQLite index answers one key's condition with an id list, but intersecting lists and then fetching and checking
each matching entry row costs microseconds per entry in SQLite and Python: about 90 ms for 10,000 matches out of a
million. The snapshot holds instead, per process and per store:

- the validated columns of every entry, in key order (also the Selection of ``store.all()``);
- for each key a query has named, one value per entry position: its type code (0 when the entry has no scalar value
  for the key), its number (ints, floats, and bools as 0/1) and the rank of its string among the key's distinct
  strings, sorted by code point (SQLite's BINARY order on UTF-8).

A query is then a few boolean masks over those arrays (see ``Expr.mask`` in ``query.py``), and its Selection a
``take`` of the entry columns.

Freshness: the snapshot is read on one persistent connection per process (used only to read), inside one read
transaction, and tagged with that connection's ``PRAGMA data_version``. SQLite changes that number whenever another
connection (any writer, any process) has committed. Each query first reads it, again in a read transaction, and
reloads everything when it differs, so a query never sees a catalog older than its own start. The connection is also
reopened when the catalog file is replaced (a new inode) or the process has forked.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from bisect import bisect_left, bisect_right
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Connection

from ..catalog.dialect import driver_rows, ints_text, is_sqlite, joined_texts, texts_text
from ..catalog.engine import read_errors
from ..catalog.reads import (
    current_generation,
    entry_lives,
    generation_token,
    load_columns,
    shard_rows,
    store_alignment,
    store_fields,
    store_value,
)
from ..errors import CorruptStoreError, StoreNotFoundError
from ..format.codecs import parse_ints
from ..format.columns import EntryColumns, IdLookup
from ..format.metadata import BOOL, FLOAT, INT, STR, TYPE_CODES
from ..handle import StoreHandle
from . import persisted

__all__ = ["KEY_QUERIES", "KeyColumns", "Snapshot", "SnapshotCache", "release", "snapshot_of"]


@dataclass(frozen=True, slots=True)
class KeyColumns:
    """One key's value at each entry position of a snapshot."""

    type: np.ndarray  # int8: a TYPE_CODES value, or MISSING
    num: np.ndarray  # float64: the number of ints, floats and bools (0/1); NaN elsewhere
    rank: np.ndarray  # int64: position of the string in `texts`; -1 elsewhere
    texts: list[str]  # the key's distinct strings, sorted

    def is_num(self) -> np.ndarray:
        return (self.type == INT) | (self.type == FLOAT)

    def text_compare(self, op: str, value: str) -> np.ndarray:
        """Entries holding a string s with ``s op value``, by rank: ranks below ``lo`` are the strings < value,
        ranks below ``hi`` those <= value."""
        lo, hi, r = bisect_left(self.texts, value), bisect_right(self.texts, value), self.rank
        match op:
            case "==":
                hit = (r >= lo) & (r < hi)
            case "!=":
                hit = (r < lo) | (r >= hi)
            case "<":
                hit = r < lo
            case "<=":
                hit = r < hi
            case ">":
                hit = r >= hi
            case _:
                hit = r >= lo
        return hit & (self.type == STR)

    def text_between(self, low: str, high: str) -> np.ndarray:
        """Entries holding a string s with low <= s <= high."""
        return (self.rank >= bisect_left(self.texts, low)) & (self.rank < bisect_right(self.texts, high))

    def text_ranks(self, values: list[str]) -> np.ndarray:
        """The ranks of those of ``values`` that some entry holds."""
        ranks = [bisect_left(self.texts, v) for v in values]
        return np.array([r for r, v in zip(ranks, values) if r < len(self.texts) and self.texts[r] == v], np.int64)


@dataclass(slots=True)
class Snapshot:
    """The catalog as of one ``data_version``: every entry row kept (live, and retired ones gc has not reclaimed),
    the generations each lived in, and the values of the keys loaded so far."""

    version: int | str  # see _version
    generation: int  # the store's latest generation
    oldest: int  # the oldest generation gc kept: rows alive at any generation from it on are here
    store_id: str
    columns: EntryColumns
    born: np.ndarray  # int64, per row: the generation that added it
    died: np.ndarray  # int64, per row: the generation that removed it, 0 while live
    keys: dict[str, KeyColumns] = field(default_factory=dict)
    token: str = ""  # the random token of `generation`
    kept_in: Path | None = None  # the store folder whose snapshot/ may hold this snapshot's files (None: memory only)
    _lookup: IdLookup | None = None
    _live: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.columns.ids)

    def alive_at(self, generation: int) -> np.ndarray:
        """Positions (in key order) of the rows alive at ``generation`` (the latest one: the live rows)."""
        if generation == self.generation:
            if self._live is None:
                self._live = np.flatnonzero(self.died == 0)
            return self._live
        return np.flatnonzero((self.born <= generation) & ((self.died == 0) | (self.died > generation)))

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For entry ``ids``: which are in the snapshot (mask), and their positions (valid where the mask is)."""
        if self._lookup is None:
            self._lookup = IdLookup(self.columns.ids)
        return self._lookup.find(ids)

    def load_key(self, conn: Connection, key: str, where: str) -> None:
        """Read ``key``'s values into a KeyColumns: from the kept snapshot files when they hold it, else from the
        ``meta_values`` rows (inside the snapshot's read transaction), then kept for the next process."""
        if self.kept_in is not None:
            kept = persisted.load_key(self.kept_in, self.store_id, self.generation, self.token, key, len(self))
            if kept is not None:
                self.keys[key] = KeyColumns(*kept)
                return
        self._read_key(conn, key, where)
        if self.kept_in is not None:
            persisted.save_key(self.kept_in, self.store_id, self.generation, self.token, key, self.keys[key])

    def _read_key(self, conn: Connection, key: str, where: str) -> None:
        """Ids, type codes, whole numbers and strings come as one text each; other numbers as (id, number) pairs."""
        sql = _KEY_SQL[is_sqlite(conn)]
        n = len(self)
        types, nums, ranks = np.zeros(n, np.int8), np.full(n, np.nan), np.full(n, -1, np.int64)
        count, id_text, code_text = _one(conn, sql["types"], key)
        ids, codes = parse_ints(id_text, count), parse_ints(code_text, count)
        if ids is None or codes is None:
            raise self._bad_row(conn, key, where, "SELECT entry_id, type FROM meta_values WHERE key = ?", (str,))
        known, pos = self.positions(ids)
        if not known.all() or (codes < 0).any():
            i = int(np.flatnonzero(~known | (codes < 0))[0])
            raise _corrupt(where, key, f"entry id {ids[i]} has an unknown type or no entry")
        types[pos] = codes
        count, id_text, int_text = _one(conn, sql["ints"], key)
        int_ids, ints = parse_ints(id_text, count), parse_ints(int_text, count)
        if int_ids is None or ints is None:
            raise _corrupt(where, key, "its whole numbers do not read back")
        try:
            others = int(np.isin(codes, _NUMERIC).sum()) - count
            pairs = np.fromiter(driver_rows(conn, sql["others"], (key,)), _PAIR, count=others)
        except (TypeError, ValueError):
            raise self._bad_row(conn, key, where, sql["others"], (int, float)) from None
        if not np.isfinite(pairs["num"]).all():
            i = int(np.flatnonzero(~np.isfinite(pairs["num"]))[0])
            raise _corrupt(where, key, f"entry id {pairs['id'][i]} has the number {pairs['num'][i]}")
        for found, values in ((int_ids, ints), (pairs["id"], pairs["num"])):
            nums[self.positions(found)[1]] = values
        ids, strings = self._strings(conn, sql, key, where)
        known, pos = self.positions(ids)
        if len(strings) != (codes == STR).sum() or not (known.all() and (types[pos] == STR).all()):
            raise _corrupt(where, key, "its string rows do not agree with its types")
        distinct = sorted(set(strings))
        index = {t: r for r, t in enumerate(distinct)}
        ranks[pos] = [index[t] for t in strings]
        self.keys[key] = KeyColumns(types, nums, ranks, distinct)

    @classmethod
    def _strings(cls, conn: Connection, sql: dict[str, str], key: str, where: str) -> tuple[np.ndarray, list[str]]:
        """The ids and strings of ``key``'s 'str' rows: one text when it splits cleanly, else row by row."""
        try:
            count, id_text, joined = _one(conn, sql["strings"], key)
            joined = joined_texts(conn, joined)
            ids, strings = parse_ints(id_text, count), joined.split("\0") if count else []
            if ids is not None and len(strings) == count:
                return ids, strings
        except sqlite3.OperationalError:  # a text that is not UTF-8 (SQLite only: PostgreSQL's text is UTF-8)
            pass
        ids, strings = [], []
        for entry_id, data in driver_rows(conn, sql["bytes"], (key,)):
            data = bytes(data) if isinstance(data, memoryview) else data
            try:
                strings.append(data.decode())
            except (AttributeError, UnicodeDecodeError):
                what = f"entry id {entry_id} has the value {data!r:.40} where a str belongs"
                raise _corrupt(where, key, what) from None
            ids.append(entry_id)
        return np.array(ids, np.int64), strings

    @staticmethod
    def _bad_row(conn: Connection, key: str, where: str, sql: str, value_type: tuple[type, ...]) -> CorruptStoreError:
        """The error naming the first row ``(entry_id, value)`` of ``sql`` whose value is not of ``value_type``."""
        for entry_id, value in driver_rows(conn, sql, (key,)):
            if type(value) not in value_type:
                return _corrupt(where, key, f"entry id {entry_id} has the value {value!r:.40} where a "
                                f"{' or '.join(t.__name__ for t in value_type)} belongs")  # fmt: skip
        return _corrupt(where, key, "its rows changed while they were read")


def _corrupt(where: str, key: str, what: str) -> CorruptStoreError:
    return CorruptStoreError(
        f"{where}: the metadata index of key {key!r} is damaged ({what}): run `lardon-store verify`, then recompile."
    )


_TYPE_CASE = "CASE type " + " ".join(f"WHEN '{t}' THEN {c}" for t, c in TYPE_CODES.items()) + " ELSE -1 END"


def _key_statements(sqlite: bool) -> dict[str, str]:
    """The statements a key load runs (in SQLite's form, ``?`` for the key), for SQLite or PostgreSQL."""
    ints, texts = (lambda c: ints_text(sqlite, c)), (lambda c: texts_text(sqlite, c))
    # Whole numbers below 2**53 (every int and bool, in practice) read exactly as integer text; the rest as
    # (id, num). (PostgreSQL would fail to cast a larger number: its range is tested first.)
    if sqlite:
        integral = "type IN ('int', 'bool') AND num = CAST(num AS INTEGER) AND abs(num) < 9007199254740992"
    else:
        integral = "type IN ('int', 'bool') AND abs(num) < 9007199254740992 AND num = trunc(num)"
    # Only 'str' rows hold a text: reading them by `text IS NOT NULL` uses the covering (key, text, entry_id) index.
    str_rows = "FROM meta_values WHERE key = ? AND text IS NOT NULL"
    as_bytes = "CAST(text AS BLOB)" if sqlite else "convert_to(text, 'UTF8')"
    return {
        "types": f"SELECT count(*), {ints('entry_id')}, {ints(_TYPE_CASE)} FROM meta_values WHERE key = ?",
        "ints": f"SELECT count(*), {ints('entry_id')}, {ints('CAST(num AS BIGINT)')} FROM meta_values "
        f"WHERE key = ? AND {integral}",
        "others": "SELECT entry_id, num FROM meta_values WHERE key = ? AND type IN ('int', 'float', 'bool') "
        f"AND NOT coalesce(({integral}), false)",
        "strings": f"SELECT count(*), {ints('entry_id')}, {texts('text')} {str_rows}",
        "bytes": f"SELECT entry_id, {as_bytes} {str_rows}",
    }


_KEY_SQL = {True: _key_statements(True), False: _key_statements(False)}
_NUMERIC = (INT, FLOAT, BOOL)
# The statements a key load runs on SQLite, each with the key as its one parameter (a test checks each searches an
# index).
KEY_QUERIES = tuple(_KEY_SQL[True][k] for k in ("types", "ints", "others", "strings"))


def _one(conn: Connection, sql: str, key: str) -> tuple:
    """The one row of an aggregate statement ``sql`` on ``key``."""
    return tuple(next(iter(driver_rows(conn, sql, (key,)))))


_PAIR = np.dtype([("id", np.int64), ("num", np.float64)])


class SnapshotCache:
    """A store's query snapshot in this process, with the connection that checks it is current."""

    def __init__(self):
        self._pid = -1
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._raw: sqlite3.Connection | None = None  # the sqlite3 connection under _conn
        self._path = ""
        self._file_id: tuple[int, int] | None = None
        self._snapshot: Snapshot | None = None

    def get(self, store: StoreHandle, keys: set[str] | frozenset[str]) -> Snapshot:
        """The snapshot of ``store``'s catalog as it is now, with ``keys`` loaded."""
        snap = self._snapshot
        if snap is not None and self._pid == os.getpid() and keys <= snap.keys.keys():
            with self._lock:
                if self._unchanged(store, snap):
                    return snap
        if self._pid != os.getpid():
            # After fork the parent's connection and lock are not ours: start over, and never close theirs.
            _abandon(self._conn)
            self._pid, self._lock, self._conn, self._snapshot = os.getpid(), threading.Lock(), None, None
        with self._lock, ExitStack() as borrowed:
            if store.catalog.is_sqlite:
                file_id = _file_id(store)
                if self._conn is None or file_id != self._file_id:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn, self._file_id, self._snapshot = store.engine.connect(), file_id, None
                    self._raw, self._path = self._conn.connection.driver_connection, os.fspath(store.catalog.path)
                conn = self._conn
            else:  # (a pooled connection, given back at once: a handle keeps at most one open to the server)
                with read_errors(store.catalog):
                    conn = borrowed.enter_context(store.engine.connect())
            with read_errors(store.catalog), conn.begin():
                # Read inside the transaction, the version names the very catalog state this transaction reads.
                version = _version(conn)
                snap = self._snapshot
                if snap is None or snap.version != version:
                    # The kept files are trusted on a first load, or once the generation moved; a change without a
                    # new generation (a row edited by another program) is read from the catalog itself.
                    moved = snap is None or current_generation(conn) != snap.generation
                    snap = self._snapshot = _load(conn, version, store.root, use_kept=moved)
                for key in sorted(keys - snap.keys.keys()):
                    snap.load_key(conn, key, str(store.root))
            return snap

    def _unchanged(self, store: StoreHandle, snap: Snapshot) -> bool:
        """Whether nothing committed since ``snap`` was read: on SQLite the same catalog file and ``data_version``
        (read outside a transaction: a few microseconds); on PostgreSQL the same latest generation and token (one
        indexed query)."""
        if self._snapshot is not snap:
            return False
        if not store.catalog.is_sqlite:
            with read_errors(store.catalog), store.engine.connect() as conn, conn.begin():
                return _version(conn) == snap.version
        if self._conn is None:
            return False
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return False
        if (stat.st_dev, stat.st_ino) != self._file_id:
            return False
        return self._raw.execute("PRAGMA data_version").fetchone()[0] == snap.version

    def close(self) -> None:
        """Drop the snapshot and close the connection (a no-op in a forked child)."""
        if self._pid != os.getpid():
            _abandon(self._conn)
            self._conn, self._snapshot = None, None
            return
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn, self._snapshot = None, None


def _file_id(store: StoreHandle) -> tuple[int, int] | None:
    """The SQLite catalog file's (device, inode): a new one means the file was replaced. None for PostgreSQL."""
    if not store.catalog.is_sqlite:
        return None
    try:
        stat = os.stat(store.catalog.path)
    except FileNotFoundError:
        raise StoreNotFoundError(
            f"{store.root}: the catalog ({store.catalog.path.name}) is gone: the store was deleted or moved since it "
            "was opened; open it again where it is now."
        ) from None
    return (stat.st_dev, stat.st_ino)


def _version(conn: Connection) -> int | str:
    """What changes with every commit: SQLite's ``data_version`` (any commit by another connection, even one that
    made no generation); on PostgreSQL the latest generation and its token."""
    if is_sqlite(conn):
        return conn.exec_driver_sql("PRAGMA data_version").scalar()
    generation = current_generation(conn)
    return f"{generation}:{generation_token(conn, generation)}"


def _load(conn: Connection, version: int | str, root: Path, use_kept: bool) -> Snapshot:
    """Every entry row of the catalog and its generations, read on ``conn`` (inside its read transaction): from the
    kept snapshot files of this generation when ``use_kept`` and they pass their checks, else from the catalog
    (and then kept)."""
    generation = current_generation(conn)
    oldest = int(store_value(conn, "oldest_generation") or 1)
    store_id = store_value(conn, "store_id") or ""
    token = generation_token(conn, generation)
    where = str(root)
    names, alignment = store_fields(conn, where), store_alignment(conn, where)
    kept = (
        persisted.load_entries(root, store_id, generation, token, shard_rows(conn), names, alignment)
        if use_kept
        else None
    )
    if kept is not None:
        columns, born, died = kept
    else:
        columns = load_columns(conn, where)
        born, died = entry_lives(conn, columns.ids, where)
        persisted.save_entries(root, store_id, generation, token, columns, born, died)
    kept_in = root if use_kept else None
    return Snapshot(version, generation, oldest, store_id, columns, born, died, token=token, kept_in=kept_in)


# Connections inherited through fork: kept referenced so that the child never closes them (closing runs SQLite's
# WAL clean-up on a connection that belongs to the parent).
_INHERITED: list[Connection] = []


def _abandon(conn: Connection | None) -> None:
    if conn is not None:
        _INHERITED.append(conn)


_CACHES: weakref.WeakKeyDictionary[StoreHandle, SnapshotCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def snapshot_of(handle: StoreHandle, keys: set[str] | frozenset[str] = frozenset()) -> Snapshot:
    """The query snapshot of ``handle``'s catalog as it is now, with ``keys`` loaded (one cache per handle)."""
    cache = _CACHES.get(handle)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.get(handle)
            if cache is None:
                cache = _CACHES[handle] = SnapshotCache()
                weakref.finalize(handle, cache.close)  # (close its connection once the handle is gone)
    return cache.get(handle, keys)


def release(handle: StoreHandle) -> None:
    """Drop ``handle``'s snapshot and close its connection; the next query loads a new one."""
    with _CACHES_LOCK:
        cache = _CACHES.get(handle)
    if cache is not None:
        cache.close()
