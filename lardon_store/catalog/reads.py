"""Catalog reads: every query the other layers make of the catalog, each on a connection they hold.

Entries are read as validated ``Columns`` (``load_columns``): nothing reaches a memory map before ``check_row``
passed on it. Look-ups by id or key, the per-shard listing that gc and verify walk, and the summary counts of
``info`` are here too, so that no other layer writes SQL against the tables.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sqlalchemy import Connection, Select, func, literal, select

from ..errors import LardonStoreError
from ..format.columns import Columns, IdLookup, build_columns, columns_from_texts
from ..format.layout import NEXT_SHARD_KEY
from ..format.metadata import from_json
from .schema import entries, meta_values, shards, sources, store_info

__all__ = [
    "entries_by_shard",
    "id_of",
    "json_values",
    "key_type_counts",
    "keys_of",
    "keys_with_prefix",
    "load_columns",
    "metadata_of",
    "next_shard_floor",
    "query_plan",
    "rows_of",
    "shard_rows",
    "summary",
    "value_counts",
]

_ENTRY_COLUMNS = (entries.c.id, entries.c.key, entries.c.shard_id, entries.c.offset, entries.c.nbytes,
                  entries.c.dtype, entries.c.shape)  # fmt: skip
_COLUMN_TEXTS = (
    "SELECT count(*), group_concat(id), group_concat(shard_id), group_concat(offset), group_concat(nbytes), "
    "group_concat(dtype, char(0)), group_concat(shape, char(0)) FROM entries"
)
_IDS_IN_KEY_ORDER = "SELECT id FROM entries ORDER BY key"
_ID = np.dtype([("id", np.int64)])
_CHUNK = 500  # ids per IN (...) list: well below SQLite's bound-parameter limit


def shard_rows(conn: Connection) -> dict[int, tuple[str, int]]:
    """Every shard: id -> (catalog path, committed size)."""
    return {sid: (path, size) for sid, path, size in conn.execute(select(shards))}


def load_columns(
    conn: Connection, where: str, condition: Any = None, *, order_by: Any = None, limit: int | None = None
) -> Columns:
    """The validated columns of the entries matching an SQLAlchemy ``condition`` (all when None), in key order
    unless ``order_by``; CorruptStoreError naming ``where`` and the entry at fault for a damaged row."""
    shard_map = shard_rows(conn)
    if condition is None and order_by is None and limit is None:
        # Every entry: each column read as one text, checked whole (a second per million entries instead of
        # four); a catalog that fails any check is read again row by row below, to name the row at fault.
        columns = columns_from_texts(tuple(conn.exec_driver_sql(_COLUMN_TEXTS).one()), shard_map)
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
    return build_columns(conn.execute(query).all(), shard_map, where)


def keys_of(conn: Connection, ids: np.ndarray, where: str) -> list[str]:
    """The keys of entry ``ids``, in order; LardonStoreError when one was removed."""
    if len(ids) > 1000:
        found = dict(conn.execute(select(entries.c.id, entries.c.key)).all())
    else:
        found = dict(conn.execute(select(entries.c.id, entries.c.key).where(entries.c.id.in_(ids.tolist()))).all())
    try:
        return [found[i] for i in ids.tolist()]
    except KeyError as exc:
        raise LardonStoreError(
            f"{where}: entry id {exc.args[0]} was removed since this selection was made: select again."
        ) from None


def id_of(conn: Connection, key: str) -> int | None:
    """The id of the entry whose key is ``key``, or None."""
    return conn.execute(select(entries.c.id).where(entries.c.key == key)).scalar()


def keys_with_prefix(conn: Connection, prefix: str) -> list[str]:
    """The keys that start with ``prefix`` (``%`` and ``_`` in it match only themselves)."""
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return [k for (k,) in conn.execute(select(entries.c.key).where(entries.c.key.like(pattern, escape="\\")))]


def metadata_of(conn: Connection, entry_id: int, where: str) -> dict[str, Any]:
    """The metadata dict of entry ``entry_id``; LardonStoreError when it was removed, CorruptStoreError when its
    JSON is not an object."""
    row = conn.execute(select(entries.c.key, entries.c.metadata).where(entries.c.id == entry_id)).first()
    if row is None:
        raise LardonStoreError(f"{where}: entry id {entry_id} was removed since this selection was made.")
    return from_json(row[1], f"{where}: entry {row[0]!r}")


def rows_of(conn: Connection, ids: list[int]) -> dict[int, tuple[str, str]]:
    """id -> (key, metadata JSON) of entry ``ids`` (read in chunks)."""
    found: dict[int, tuple[str, str]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = select(entries.c.id, entries.c.key, entries.c.metadata).where(entries.c.id.in_(chunk))
        found.update((i, (k, m)) for i, k, m in conn.execute(query))
    return found


def entries_by_shard(conn: Connection) -> tuple[dict[int, tuple[str, int]], list]:
    """Every shard (id -> (path, committed size)), and every entry row with its source path, in shard order:
    what verify checks and gc copies."""
    rows = conn.execute(
        select(
            entries.c.id,
            entries.c.key,
            entries.c.shard_id,
            entries.c.offset,
            entries.c.nbytes,
            entries.c.dtype,
            entries.c.shape,
            entries.c.checksum,
            sources.c.path,
        )  # fmt: skip
        .outerjoin(sources, entries.c.source_id == sources.c.id)
        .order_by(entries.c.shard_id, entries.c.offset)
    ).all()
    return shard_rows(conn), rows


def next_shard_floor(conn: Connection) -> int:
    """The lowest number a new shard may take (see ``format.layout.NEXT_SHARD_KEY``)."""
    value = conn.execute(select(store_info.c.value).where(store_info.c.key == NEXT_SHARD_KEY)).scalar()
    return int(value) if value is not None else 1


def summary(conn: Connection) -> dict[str, Any]:
    """The counts ``Store.info`` reports: entries, bytes, dtypes, metadata keys, shards, failed sources."""
    n, nbytes = conn.execute(select(func.count(), func.coalesce(func.sum(entries.c.nbytes), 0))).one()
    dtypes = dict(conn.execute(select(entries.c.dtype, func.count()).group_by(entries.c.dtype)).all())
    keys = [k for (k,) in conn.execute(select(meta_values.c.key).distinct().order_by(meta_values.c.key))]
    shard_count, shard_bytes = conn.execute(
        select(func.count(), func.coalesce(func.sum(shards.c.size), 0)).select_from(shards)
    ).one()
    failures = conn.execute(
        select(sources.c.path, sources.c.error).where(sources.c.status == "failed").order_by(sources.c.path)
    ).all()
    return {
        "entries": int(n),
        "bytes": int(nbytes),
        "dtypes": dtypes,
        "metadata_keys": keys,
        "shards": int(shard_count),
        "shard_bytes": int(shard_bytes),
        "failed_sources": [(p, e) for p, e in failures],
    }


def json_values(conn: Connection, ids: list[int], key: str) -> dict[int, Any]:
    """id -> value of metadata ``key`` for those of entry ``ids`` whose value is a list or dict (kept only in the
    JSON, not in ``meta_values``). ``key`` must be a valid metadata key (it is part of a JSON path)."""
    path = f"$.{key}"
    each = func.json_each(json.dumps(ids)).table_valued("value")
    rows = conn.execute(
        select(entries.c.id, func.json_extract(entries.c.metadata, path)).where(
            entries.c.id.in_(select(each.c.value)),
            func.json_type(entries.c.metadata, path).in_(["array", "object"]),
        )
    ).all()
    return {eid: json.loads(text) for eid, text in rows}


def key_type_counts(conn: Connection) -> list[tuple[str, str, int]]:
    """(key, type, count) of every metadata key and value type: the scalar types of ``meta_values``, and 'list' /
    'dict' for the values kept only in the JSON."""
    mv = meta_values.c
    out = list(conn.execute(select(mv.key, mv.type, func.count()).group_by(mv.key, mv.type)).all())
    each = func.json_each(entries.c.metadata).table_valued("key", "type").alias("j")
    for key, type_, count in conn.execute(
        select(each.c.key, each.c.type, func.count())
        .select_from(entries.join(each, literal(True)))
        .where(each.c.type.in_(["array", "object"]))
        .group_by(each.c.key, each.c.type)
    ):
        out.append((key, "list" if type_ == "array" else "dict", count))
    return sorted(out)


def value_counts(conn: Connection, key: str) -> list[tuple[str, float | None, str | None, int]]:
    """(type, num, text, count) of each distinct scalar value of metadata ``key``."""
    mv = meta_values.c
    query = select(mv.type, mv.num, mv.text, func.count()).where(mv.key == key).group_by(mv.type, mv.num, mv.text)
    return [tuple(row) for row in conn.execute(query)]


def query_plan(conn: Connection, stmt: Select) -> list[str]:
    """SQLite's ``EXPLAIN QUERY PLAN`` of ``stmt``: one line per step."""
    compiled = stmt.compile(conn, compile_kwargs={"render_postcompile": True})
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.string, params).all()
    return [row[-1] for row in rows]
