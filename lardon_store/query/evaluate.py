"""Query evaluation: conditions and metadata look-ups answered as positions, columns and values, never Selections.

Each function takes a store handle and, where it narrows or reorders a set of entries, that set's entry ids; it
returns what the selection layer needs to build its result (``EntryColumns`` of the matching entries with the generation
they are pinned to, positions into the given ids, or one array of values per key). Conditions run on the query
snapshot (``snapshot.py``), which holds every entry row gc has kept: an entry row's content never changes, so a
selection pinned to an older generation is answered from the same snapshot. Ids gc has reclaimed raise
``GenerationExpiredError``. The counts of ``metadata_keys`` and ``distinct`` (live entries) and the query plan of
``explain`` come from the catalog.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from sqlalchemy import select

from ..catalog import reads
from ..catalog.schema import entries
from ..errors import GenerationExpiredError, GenerationNotFoundError, QueryError, UnknownKeyWarning
from ..format.columns import EntryColumns
from ..format.metadata import BOOL, FLOAT, INT, MISSING, NULL, STR, TYPE_CODES
from ..handle import StoreHandle
from .expressions import Expr, check_key, kind
from .parser import as_expr
from .snapshot import Snapshot, snapshot_of

__all__ = [
    "columns_at",
    "columns_of_ids",
    "expired",
    "live_columns",
    "distinct",
    "explain",
    "matching_columns",
    "metadata_columns",
    "metadata_keys",
    "order_positions",
    "refine_positions",
]


def expired(handle: StoreHandle, generation: int, oldest: int) -> GenerationExpiredError:
    """The error for reading generation ``generation`` of ``handle`` after gc reclaimed it."""
    return GenerationExpiredError(
        f"{handle.root}: generation {generation} was reclaimed by gc (the oldest generation kept is {oldest}): its "
        "entries and bytes are gone. Keep generations longer with gc(keep_seconds=...) or `lardon-store gc "
        "--keep-seconds N`."
    )


def live_columns(handle: StoreHandle) -> tuple[EntryColumns, int]:
    """The columns of the live entries, in key order, and the latest generation they belong to (the snapshot's own
    arrays when every row is live: no copy)."""
    snap = snapshot_of(handle)
    live = snap.alive_at(snap.generation)
    return (snap.columns if len(live) == len(snap) else snap.columns.take(live)), snap.generation


def columns_at(handle: StoreHandle, generation: int) -> EntryColumns:
    """The columns of the entries alive at ``generation``, in key order."""
    snap = snapshot_of(handle)
    if isinstance(generation, bool) or not isinstance(generation, (int, np.integer)):
        raise TypeError(f"a generation is an int, not {type(generation).__name__}")
    if not 1 <= generation <= snap.generation:
        raise GenerationNotFoundError(
            f"{handle.root}: generation {generation} does not exist (the latest is {snap.generation}): see "
            "store.history() or `lardon-store history`."
        )
    if generation < snap.oldest:
        raise expired(handle, generation, snap.oldest)
    return snap.columns.take(snap.alive_at(int(generation)))


def _positions(handle: StoreHandle, snap: Snapshot, ids: np.ndarray, generation: int) -> np.ndarray:
    """The snapshot positions of ``ids`` (rows pinned at ``generation``); GenerationExpiredError if gc took one."""
    found, pos = snap.positions(ids)
    if not found.all():
        raise expired(handle, generation, snap.oldest)
    return pos


def columns_of_ids(handle: StoreHandle, ids: np.ndarray, generation: int) -> EntryColumns:
    """The columns of entry rows ``ids``, in that order, as read now (their bytes may have moved since)."""
    snap = snapshot_of(handle)
    return snap.columns.take(_positions(handle, snap, np.asarray(ids, np.int64), generation))


def warn_unknown_keys(handle: StoreHandle, snap: Snapshot, expr: Expr) -> None:
    """An UnknownKeyWarning for each key of ``expr`` that no entry holds, naming the closest keys the store has."""
    for key in sorted(expr.keys()):
        if (snap.keys[key].type != MISSING).any():
            continue
        with handle.engine.connect() as conn:
            if reads.has_key(conn, key):
                continue
            known = reads.scalar_keys(conn)
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        close += [k for k in known if k.lower() == key.lower() and k not in close]
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else "."
        warnings.warn(
            f"{handle.root}: no entry has the metadata key {key!r}, so a condition on it matches nothing{hint}",
            UnknownKeyWarning,
            stacklevel=4,
        )


def matching_columns(handle: StoreHandle, expr: Expr) -> tuple[EntryColumns, int]:
    """The columns of the live entries matching ``expr``, in key order, and their generation."""
    snap = snapshot_of(handle, expr.keys())
    warn_unknown_keys(handle, snap, expr)
    live = snap.alive_at(snap.generation)
    return snap.columns.take(live[expr.mask(snap)[live]]), snap.generation


def refine_positions(handle: StoreHandle, ids: np.ndarray, expr: Expr, generation: int) -> np.ndarray:
    """The positions in ``ids`` (rows pinned at ``generation``) of the entries matching ``expr``, in order."""
    snap = snapshot_of(handle, expr.keys())
    warn_unknown_keys(handle, snap, expr)
    return np.flatnonzero(expr.mask(snap)[_positions(handle, snap, ids, generation)])


def _key_values(
    handle: StoreHandle, ids: np.ndarray, keys: Iterable[str], generation: int
) -> tuple[Snapshot, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """For each key, the type code and snapshot position of its value at each of ``ids``."""
    keys = [check_key(k) for k in keys]
    snap = snapshot_of(handle, set(keys))
    pos = _positions(handle, snap, ids, generation)
    return snap, {k: (snap.keys[k].type[pos], pos) for k in keys}


def _scalar(code: int, num: float, rank: int, texts: list[str]) -> Any:
    """The Python value of a snapshot cell (None for null and for no value)."""
    if code == STR:
        return texts[rank]
    if code == INT:
        return int(num)
    if code == FLOAT:
        return num
    if code == BOOL:
        return bool(num)
    return None


def _value(type_: str, num: float | None, text: str | None) -> Any:
    """The Python value of a ``meta_values`` row."""
    return _scalar(TYPE_CODES.get(type_, NULL), num if num is not None else 0.0, 0, [text])


def _narrow(values: list[Any], present: np.ndarray) -> np.ndarray:
    if len(values) and present.all():
        kinds = {type(v) for v in values}
        if kinds == {bool}:
            return np.array(values, bool)
        if kinds == {int} and all(-(2**63) <= v < 2**63 for v in values):
            return np.array(values, np.int64)
        if kinds <= {int, float}:
            return np.array(values, np.float64)
        if kinds == {str}:
            return np.array(values, str)
    out = np.empty(len(values), object)
    out[:] = values
    return out


def metadata_columns(
    handle: StoreHandle, ids: np.ndarray, keys: Iterable[str], generation: int
) -> dict[str, np.ndarray]:
    """One numpy array per key over entry ``ids``: int64, float64, bool or str when every entry holds a value of
    that type (ints and floats together give float64), else an object array with None where the key is missing.
    Lists and dicts are returned whole (parsed from the entry's JSON)."""
    snap, found = _key_values(handle, ids, keys, generation)
    out: dict[str, np.ndarray] = {}
    for key, (types, pos) in found.items():
        c = snap.keys[key]
        values = [
            _scalar(t, x, r, c.texts) for t, x, r in zip(types.tolist(), c.num[pos].tolist(), c.rank[pos].tolist())
        ]
        present = types != MISSING
        # Lists and dicts are only in the JSON: look for them among the entries without a scalar value.
        absent = np.flatnonzero(~present)
        if len(absent):
            with handle.engine.connect() as conn:
                rows = reads.json_values(conn, ids[absent].tolist(), key)
            for i, eid in zip(absent.tolist(), ids[absent].tolist()):
                if eid in rows:
                    values[i], present[i] = rows[eid], True
        out[key] = _narrow(values, present)
    return out


_GROUP = np.array([4, 0, 0, 1, 2, 3], np.int8)  # by type code: numbers, then bools, strings, nulls, no value


def order_positions(
    handle: StoreHandle, ids: np.ndarray, key: str, generation: int, descending: bool = False
) -> np.ndarray:
    """The order of ``ids`` sorted by the value of ``key``: numbers, then bools, then strings, then nulls, then
    entries without a scalar value; ties keep the given order. ``descending`` reverses the values, not the groups."""
    snap, found = _key_values(handle, ids, [key], generation)
    types, pos = found[key]
    c = snap.keys[key]
    num = np.where((types > MISSING) & (types <= BOOL), c.num[pos], 0.0)
    rank = np.where(types == STR, c.rank[pos], 0)
    sign = -1 if descending else 1
    return np.lexsort((np.arange(len(ids)), sign * rank, sign * num, _GROUP[types]))


def metadata_keys(handle: StoreHandle) -> dict[str, dict[str, int]]:
    """Each metadata key with the number of entries per value type ('int', 'float', 'bool', 'str', 'null', and
    'list' / 'dict' for values kept only in the JSON)."""
    out: dict[str, dict[str, int]] = {}
    with handle.engine.connect() as conn:
        for key, type_, count in reads.key_type_counts(conn):
            out.setdefault(key, {})[type_] = count
    return out


def distinct(handle: StoreHandle, key: str, by_type: bool = False) -> dict[Any, int]:
    """Each scalar value of ``key`` with its number of entries, most frequent first. Ints and floats that are equal
    are one value (they match the same queries); with ``by_type=True`` the keys are ``(type, value)`` pairs, which
    keeps ``True`` and ``1`` apart."""
    key = check_key(key)
    with handle.engine.connect() as conn:
        rows = reads.value_counts(conn, key)
    counts: dict[Any, int] = {}
    kinds: dict[Any, str] = {}
    for type_, num, text_, count in rows:
        value = _value(type_, num, text_)
        k = (type_, value) if by_type else value
        if not by_type and kinds.setdefault(k, kind(value)) != kind(value):
            raise QueryError(
                f"metadata key {key!r} holds both {value!r} and a {kinds[k]} equal to it in Python: call "
                f"distinct({key!r}, by_type=True) to count them apart."
            )
        counts[k] = counts.get(k, 0) + count
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def explain(handle: StoreHandle, condition: Expr | str) -> list[str]:
    """SQLite's query plan (``EXPLAIN QUERY PLAN``) for selecting ``condition``: one line per step."""
    with handle.engine.connect() as conn:
        return reads.query_plan(conn, select(entries.c.id).where(as_expr(condition).sql()))
