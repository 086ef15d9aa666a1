"""Catalog reads: every query the other layers make of the catalog, each on a connection they hold.

Entries are read as validated ``Columns`` (``load_columns``): nothing reaches a memory map before ``check_row``
passed on it. Look-ups by id or key, the per-shard listing that gc and verify walk, the summary counts of ``info``
and the generations are here too, so that no other layer writes SQL against the tables.

Entry rows are versioned (see ``schema.py``): a row's content never changes, so look-ups by id answer for any
generation; look-ups by key, counts and summaries see the live rows (``died IS NULL``) unless they say otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sqlalchemy import Connection, Integer, Select, cast, func, literal, select
from sqlalchemy.dialects.postgresql import JSONB

from ..errors import CorruptStoreError, GenerationExpiredError
from ..format.codecs import parse_ints
from ..format.columns import EntryColumns, IdLookup, build_columns, columns_from_texts
from ..format.fields import ALIGN_KEY, FIELDS_KEY, Alignment, align_from_json, fields_from_json
from ..format.layout import NEXT_SHARD_KEY
from ..format.metadata import from_json
from .dialect import driver_rows, driver_sql, ints_text, is_sqlite, joined_texts, texts_text
from .schema import arrays, entries, generations, meta_values, shards, sources, store_info

__all__ = [
    "current_generation",
    "generation_token",
    "entries_by_shard",
    "entries_with_other_fields",
    "entry_lives",
    "history",
    "id_of",
    "ids_with_key",
    "json_values",
    "key_type_counts",
    "keys_of",
    "keys_with_prefix",
    "has_arrays",
    "has_key",
    "scalar_keys",
    "load_columns",
    "metadata_of",
    "next_shard_floor",
    "query_plan",
    "rows_of",
    "shard_rows",
    "store_alignment",
    "store_fields",
    "store_value",
    "summary",
    "value_counts",
]

_ENTRY_COLUMNS = (entries.c.id, entries.c.key, arrays.c.shard_id, arrays.c.offset, arrays.c.nbytes,
                  arrays.c.dtype, arrays.c.shape)  # fmt: skip
_IDS_IN_KEY_ORDER = "SELECT id FROM entries ORDER BY key, id"


def _column_texts(conn: Connection, field: str) -> tuple:
    """``(count, ids, shard ids, offsets, nbytes, dtypes, shapes)`` of field ``field``'s rows, one text each."""
    i, t = (lambda c: ints_text(conn, c)), (lambda c: texts_text(conn, c))
    offset = '"offset"'  # (a reserved word on PostgreSQL)
    sql = (
        f"SELECT count(*), {i('entry_id')}, {i('shard_id')}, {i(offset)}, {i('nbytes')}, "
        f"{t('dtype')}, {t('shape')} FROM arrays WHERE field = ?"
    )
    n, *rest = next(iter(driver_rows(conn, sql, (field,))))
    return (n, *rest[:4], joined_texts(conn, rest[4]), joined_texts(conn, rest[5]))


_LIVE = entries.c.died.is_(None)
_ID = np.dtype([("id", np.int64)])
_CHUNK = 500  # ids per IN (...) list: well below SQLite's bound-parameter limit


def shard_rows(conn: Connection) -> dict[int, tuple[str, int]]:
    """Every shard: id -> (catalog path, committed size)."""
    return {sid: (path, size) for sid, path, size in conn.execute(select(shards))}


def has_arrays(conn: Connection) -> bool:
    """Whether any array row exists (of any generation)."""
    return conn.execute(select(literal(1)).select_from(arrays).limit(1)).first() is not None


def store_fields(conn: Connection, where: str) -> tuple[str, ...]:
    """The store's field names, sorted (``("",)`` for a store of bare arrays, or before the first write)."""
    return fields_from_json(store_value(conn, FIELDS_KEY), where)


def store_alignment(conn: Connection, where: str) -> Alignment:
    """The store's alignment spec (empty when none was given)."""
    return align_from_json(store_value(conn, ALIGN_KEY), where)


def load_columns(
    conn: Connection, where: str, condition: Any = None, *, order_by: Any = None, limit: int | None = None
) -> EntryColumns:
    """The validated columns of every field of the entry rows matching an SQLAlchemy ``condition`` on ``entries``
    (every row, of every generation, when None), in (key, id) order unless ``order_by``; CorruptStoreError naming
    ``where`` and the entry at fault for a damaged row, or for an entry that lacks one of the store's fields."""
    shard_map = shard_rows(conn)
    names = store_fields(conn, where)
    parts = []
    in_key_order = None
    for name in names:
        columns = None
        if condition is None and order_by is None and limit is None:
            # Every entry: each column read as one text, checked whole (a second per million entries instead of
            # four); a catalog that fails any check is read again row by row below, to name the row at fault.
            columns = columns_from_texts(_column_texts(conn, name), shard_map)
            if columns is not None:
                if in_key_order is None:
                    in_key_order = np.fromiter(driver_rows(conn, _IDS_IN_KEY_ORDER), _ID)["id"]
                found, at = IdLookup(columns.ids).find(in_key_order)
                columns = columns.take(at) if len(at) == len(columns.ids) and found.all() else None
        if columns is None:
            query = select(*_ENTRY_COLUMNS).select_from(entries.join(arrays, arrays.c.entry_id == entries.c.id))
            query = query.where(arrays.c.field == name)
            if condition is not None:
                query = query.where(condition)
            query = query.order_by(*(order_by if order_by is not None else [entries.c.key, entries.c.id]))
            if limit is not None:
                query = query.limit(limit)
            columns = build_columns(conn.execute(query).all(), shard_map, where)
        if parts and not np.array_equal(columns.ids, parts[0].ids):
            raise _missing_field(conn, where, names, parts[0].ids, columns.ids)
        parts.append(columns)
    return EntryColumns(names, tuple(parts), store_alignment(conn, where))


def _missing_field(conn: Connection, where: str, names: tuple[str, ...], a: np.ndarray, b: np.ndarray):
    """The error for entries that do not hold a row for every field of the store."""
    odd = sorted(set(a.tolist()) ^ set(b.tolist())) or [int(a[np.flatnonzero(a != b)[0]])]
    key = conn.execute(select(entries.c.key).where(entries.c.id == odd[0])).scalar()
    have = [f for (f,) in conn.execute(select(arrays.c.field).where(arrays.c.entry_id == odd[0]))]
    return CorruptStoreError(
        f"{where}: entry {key!r} has arrays for fields {have}, but the store's fields are {list(names)}: run "
        "`lardon-store verify`, then recompile its source."
    )


def entry_lives(conn: Connection, ids: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(born, died)`` of each of entry ``ids`` (rows of any generation; died is 0 for a live row), in order."""
    i = lambda c: ints_text(conn, c)  # noqa: E731
    sql = f"SELECT count(*), {i('id')}, {i('born')}, {i('coalesce(died, 0)')} FROM entries"
    count, id_text, born_text, died_text = next(iter(driver_rows(conn, sql)))
    found_ids, born, died = (parse_ints(t, count) for t in (id_text, born_text, died_text))
    if found_ids is None or born is None or died is None:
        raise CorruptStoreError(
            f"{where}: the generations of the entry rows do not read back: run `lardon-store verify`."
        )
    found, at = IdLookup(found_ids).find(ids)
    if not found.all():
        raise CorruptStoreError(f"{where}: entry rows changed while they were read; try again.")
    return born[at], died[at]


def current_generation(conn: Connection) -> int:
    """The store's latest generation."""
    return int(conn.execute(select(func.max(generations.c.generation))).scalar() or 0)


def generation_token(conn: Connection, generation: int) -> str:
    """The random token of ``generation`` ("" when there is no such generation)."""
    return conn.execute(select(generations.c.token).where(generations.c.generation == generation)).scalar() or ""


def history(conn: Connection) -> list[tuple[int, str, str, int, int]]:
    """(generation, created_at, operation, added, removed) of every generation, oldest first."""
    g = generations.c
    query = select(g.generation, g.created_at, g.operation, g.added, g.removed).order_by(g.generation)
    return [tuple(r) for r in conn.execute(query)]


def store_value(conn: Connection, key: str) -> str | None:
    """The ``store_info`` value of ``key`` (``store_id``, ``next_entry_id``, ``oldest_generation``...), or None."""
    return conn.execute(select(store_info.c.value).where(store_info.c.key == key)).scalar()


def keys_of(conn: Connection, ids: np.ndarray, where: str, generation: int | None = None) -> list[str]:
    """The keys of entry ``ids`` (rows of any generation), in order; GenerationExpiredError when gc reclaimed one."""
    if len(ids) > 1000:
        found = dict(conn.execute(select(entries.c.id, entries.c.key)).all())
    else:
        found = dict(conn.execute(select(entries.c.id, entries.c.key).where(entries.c.id.in_(ids.tolist()))).all())
    try:
        return [found[i] for i in ids.tolist()]
    except KeyError as exc:
        raise GenerationExpiredError(
            f"{where}: entry id {exc.args[0]}{_of(generation)} was reclaimed by gc since this selection was made: "
            "select again, and keep generations longer with gc(keep_seconds=...)."
        ) from None


def id_of(conn: Connection, key: str) -> int | None:
    """The id of the live entry whose key is ``key``, or None."""
    return conn.execute(select(entries.c.id).where(entries.c.key == key, _LIVE)).scalar()


def ids_with_key(conn: Connection, key: str) -> list[int]:
    """The ids of every row (of any generation still kept) whose key is ``key``."""
    return [i for (i,) in conn.execute(select(entries.c.id).where(entries.c.key == key))]


def keys_with_prefix(conn: Connection, prefix: str) -> list[str]:
    """The live keys that start with ``prefix`` (``%`` and ``_`` in it match only themselves)."""
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    query = select(entries.c.key).where(entries.c.key.like(pattern, escape="\\"), _LIVE)
    return [k for (k,) in conn.execute(query)]


def _of(generation: int | None) -> str:
    return f" of generation {generation}" if generation is not None else ""


def metadata_of(conn: Connection, entry_id: int, where: str, generation: int | None = None) -> dict[str, Any]:
    """The metadata dict of entry ``entry_id`` (a row of any generation); GenerationExpiredError when gc reclaimed
    it, CorruptStoreError when its JSON is not an object."""
    row = conn.execute(select(entries.c.key, entries.c.metadata).where(entries.c.id == entry_id)).first()
    if row is None:
        raise GenerationExpiredError(
            f"{where}: entry id {entry_id}{_of(generation)} was reclaimed by gc since this selection was made: "
            "select again, and keep generations longer with gc(keep_seconds=...)."
        )
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
    """Every shard (id -> (path, committed size)), and every array row (of every generation still kept) with its
    entry's key, generations and source path, in shard order: what verify checks and gc copies."""
    rows = conn.execute(
        select(
            entries.c.id,
            entries.c.key,
            arrays.c.field,
            arrays.c.shard_id,
            arrays.c.offset,
            arrays.c.nbytes,
            arrays.c.dtype,
            arrays.c.shape,
            arrays.c.checksum,
            entries.c.died,
            sources.c.path,
        )  # fmt: skip
        .select_from(arrays.join(entries, arrays.c.entry_id == entries.c.id))
        .outerjoin(sources, entries.c.source_id == sources.c.id)
        .order_by(arrays.c.shard_id, arrays.c.offset)
    ).all()
    return shard_rows(conn), rows


def entries_with_other_fields(conn: Connection, names: tuple[str, ...]) -> list[tuple[str, bool, str | None, list]]:
    """``(key, live, source path, its fields)`` of every entry row (of any generation kept) whose array rows are not
    one per field of ``names``: what verify reports as damage."""
    odd = (
        select(entries.c.id)
        .select_from(entries.outerjoin(arrays, arrays.c.entry_id == entries.c.id))
        .group_by(entries.c.id)
        .having((func.count(arrays.c.field) != len(names)) | (func.sum(arrays.c.field.not_in(names).cast(Integer)) > 0))
    )
    rows = conn.execute(
        select(entries.c.id, entries.c.key, entries.c.died, sources.c.path)
        .outerjoin(sources, entries.c.source_id == sources.c.id)
        .where(entries.c.id.in_(odd))
        .order_by(entries.c.key, entries.c.id)
    ).all()
    out = []
    for eid, key, died, path in rows:
        fields = [
            f for (f,) in conn.execute(select(arrays.c.field).where(arrays.c.entry_id == eid).order_by(arrays.c.field))
        ]
        out.append((key, died is None, path, fields))
    return out


def next_shard_floor(conn: Connection) -> int:
    """The lowest number a new shard may take (see ``format.layout.NEXT_SHARD_KEY``)."""
    value = conn.execute(select(store_info.c.value).where(store_info.c.key == NEXT_SHARD_KEY)).scalar()
    return int(value) if value is not None else 1


def summary(conn: Connection) -> dict[str, Any]:
    """The counts ``Store.info`` reports of the live entries: entries, bytes, dtypes, metadata keys, shards, failed
    sources, generation."""
    n = conn.execute(select(func.count()).where(_LIVE)).scalar()
    live_arrays = arrays.join(entries, arrays.c.entry_id == entries.c.id)
    nbytes = conn.execute(
        select(func.coalesce(func.sum(arrays.c.nbytes), 0)).select_from(live_arrays).where(_LIVE)
    ).scalar()
    dtypes = {}
    for name, dtype, count in conn.execute(
        select(arrays.c.field, arrays.c.dtype, func.count())
        .select_from(live_arrays)
        .where(_LIVE)
        .group_by(arrays.c.field, arrays.c.dtype)
    ):
        dtypes[f"{name}: {dtype}" if name else dtype] = count
    live_ids = select(entries.c.id).where(_LIVE)
    keys = [
        k
        for (k,) in conn.execute(
            select(meta_values.c.key).where(meta_values.c.entry_id.in_(live_ids)).distinct().order_by(meta_values.c.key)
        )
    ]
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
        "generation": current_generation(conn),
    }


def json_values(conn: Connection, ids: list[int], key: str) -> dict[int, Any]:
    """id -> value of metadata ``key`` for those of entry ``ids`` whose value is a list or dict (kept only in the
    JSON, not in ``meta_values``). ``key`` must be a valid metadata key (it is part of a JSON path)."""
    if not is_sqlite(conn):
        found: dict[int, Any] = {}
        value = _jsonb(entries.c.metadata)[key]
        for start in range(0, len(ids), _CHUNK):
            query = select(entries.c.id, value.astext).where(
                entries.c.id.in_(ids[start : start + _CHUNK]), func.jsonb_typeof(value).in_(["array", "object"])
            )
            found.update((eid, json.loads(text)) for eid, text in conn.execute(query))
        return found
    path = f"$.{key}"
    each = func.json_each(json.dumps(ids)).table_valued("value")
    rows = conn.execute(
        select(entries.c.id, func.json_extract(entries.c.metadata, path)).where(
            entries.c.id.in_(select(each.c.value)),
            func.json_type(entries.c.metadata, path).in_(["array", "object"]),
        )
    ).all()
    return {eid: json.loads(text) for eid, text in rows}


def _jsonb(column: Any) -> Any:
    """A text column of JSON as PostgreSQL's ``jsonb``."""
    return cast(column, JSONB)


def key_type_counts(conn: Connection) -> list[tuple[str, str, int]]:
    """(key, type, count) of every metadata key and value type: the scalar types of ``meta_values``, and 'list' /
    'dict' for the values kept only in the JSON."""
    mv = meta_values.c
    live = mv.entry_id.in_(select(entries.c.id).where(_LIVE))
    out = list(conn.execute(select(mv.key, mv.type, func.count()).where(live).group_by(mv.key, mv.type)).all())
    if is_sqlite(conn):
        each = func.json_each(entries.c.metadata).table_valued("key", "type").alias("j")
        kind = each.c.type
    else:
        each = func.jsonb_each(_jsonb(entries.c.metadata)).table_valued("key", "value").alias("j")
        kind = func.jsonb_typeof(each.c.value)
    for key, type_, count in conn.execute(
        select(each.c.key, kind, func.count())
        .select_from(entries.join(each, literal(True)))
        .where(kind.in_(["array", "object"]), _LIVE)
        .group_by(each.c.key, kind)
    ):
        out.append((key, "list" if type_ == "array" else "dict", count))
    return sorted(out)


def has_key(conn: Connection, key: str) -> bool:
    """Whether any live entry's metadata holds ``key`` (a scalar in ``meta_values``, or a list or dict in the JSON)."""
    mv = meta_values.c
    if conn.execute(select(literal(1)).where(mv.key == key).limit(1)).first() is not None:
        return True
    if is_sqlite(conn):
        path = f"$.{key}"  # (a valid key: see format.metadata.is_key)
        held = func.json_type(entries.c.metadata, path).is_not(None)
    else:
        held = _jsonb(entries.c.metadata).has_key(key)
    query = select(literal(1)).where(_LIVE, held).limit(1)
    return conn.execute(query).first() is not None


def scalar_keys(conn: Connection) -> list[str]:
    """Every key that some row of ``meta_values`` holds (from its index)."""
    return [k for (k,) in conn.execute(select(meta_values.c.key).distinct())]


def value_counts(conn: Connection, key: str) -> list[tuple[str, float | None, str | None, int]]:
    """(type, num, text, count) of each distinct scalar value of metadata ``key`` among the live entries."""
    mv = meta_values.c
    live = mv.entry_id.in_(select(entries.c.id).where(_LIVE))
    query = select(mv.type, mv.num, mv.text, func.count()).where(mv.key == key, live).group_by(mv.type, mv.num, mv.text)
    return [tuple(row) for row in conn.execute(query)]


def query_plan(conn: Connection, stmt: Select) -> list[str]:
    """The database's plan of ``stmt``, one line per step: SQLite's ``EXPLAIN QUERY PLAN``, PostgreSQL's
    ``EXPLAIN``."""
    if not is_sqlite(conn):
        compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        return [row[0] for row in conn.exec_driver_sql(driver_sql(conn, "EXPLAIN " + str(compiled)))]
    compiled = stmt.compile(conn, compile_kwargs={"render_postcompile": True})
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.string, params).all()
    return [row[-1] for row in rows]
