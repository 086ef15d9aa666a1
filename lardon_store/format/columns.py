"""Catalog rows as columns: the one validator of entry rows, and the columnar form every selection is made of.

An entry row is ``(id, key, shard_id, offset, nbytes, dtype, shape)`` (see ``codecs`` for the dtype and shape texts).
``check_row`` is the only place that decides whether such a row may be mapped: a numeric dtype with explicit byte
order, a shape of at most ``MAX_NDIM`` non-negative ints, ``0 <= offset``, ``0 <= nbytes``, both below
``MAX_NBYTES``, ``prod(shape) * itemsize == nbytes`` in Python ints, and ``offset + nbytes`` within the shard's
committed size (or, for ``verify``, within the file). Reads (``build_columns``), the query snapshot (through
``build_columns``) and ``verify`` all call it; ``columns_from_texts`` makes the same checks on whole columns at once
and falls back to ``build_columns`` when any fails, so that the error names the row at fault.

``Columns`` holds a set of entries as numpy arrays (never one Python object per entry): a million-entry selection
costs a few arrays, and a DataLoader worker that touches them copies no per-entry objects.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CorruptStoreError
from .codecs import descr_to_dtype, parse_ints
from .fields import UNNAMED, Alignment
from .layout import ALIGNMENT, MAX_NBYTES, MAX_NDIM

__all__ = [
    "Columns",
    "EntryColumns",
    "IdLookup",
    "build_columns",
    "check_arrays",
    "check_row",
    "columns_from_texts",
    "parse_shape",
    "single",
]


def parse_shape(text: Any) -> Any:
    """The JSON value of a shape text, or None when it is not JSON (``check_row`` then refuses it)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def check_row(
    where: str, key: str, dtype: np.dtype, shape: Any, shape_text: Any, offset: Any, nbytes: Any, path: str,
    limit: int, limit_name: str = "its committed size",
) -> tuple[int, ...]:  # fmt: skip
    """The shape of a valid entry row; CorruptStoreError naming ``where`` and ``key`` for anything else.

    ``dtype`` comes from ``descr_to_dtype``, ``shape`` is the parsed ``shape_text``; the bytes must end within
    ``limit`` bytes of shard ``path`` (its committed size, or the file's real size).
    """
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
        raise CorruptStoreError(f"{where}: entry {key!r} has an invalid shape {shape_text!r}.")
    extent = dtype.itemsize
    for d in shape:
        extent *= max(d, 1)  # (numpy refuses a shape whose non-zero dimensions overflow, even with a zero among them)
    if extent >= MAX_NBYTES:
        raise CorruptStoreError(f"{where}: entry {key!r} has an impossible shape {shape_text!r}.")
    if not (type(offset) is int and type(nbytes) is int and 0 <= offset < MAX_NBYTES and 0 <= nbytes < MAX_NBYTES):
        raise CorruptStoreError(f"{where}: entry {key!r} has an invalid offset/nbytes ({offset!r}, {nbytes!r}).")
    if offset % ALIGNMENT:
        raise CorruptStoreError(
            f"{where}: entry {key!r} starts at byte {offset}, not a multiple of {ALIGNMENT}: no writer puts it there."
        )
    expected = dtype.itemsize
    for d in shape:
        expected *= d
    if expected != nbytes:
        raise CorruptStoreError(
            f"{where}: entry {key!r} says {nbytes} bytes, but shape {tuple(shape)} of {dtype.str} needs {expected}."
        )
    if offset + nbytes > limit:
        raise CorruptStoreError(
            f"{where}: entry {key!r} ends at byte {offset + nbytes} of {path}, past {limit_name} ({limit} bytes)."
        )
    return tuple(shape)


@dataclass(frozen=True, slots=True)
class Columns:
    """The catalog columns of a set of entries, validated, in key order."""

    ids: np.ndarray  # int64
    shard: np.ndarray  # int32: position in `shard_paths`
    offset: np.ndarray  # int64
    nbytes: np.ndarray  # int64
    dtype: np.ndarray  # int16: position in `dtypes`
    ndim: np.ndarray  # int8
    dims: np.ndarray  # int64, (n, max ndim), padded with 0
    shard_paths: tuple[str, ...]
    shard_sizes: np.ndarray  # int64: committed size of each shard
    dtypes: tuple[np.dtype, ...]

    def take(self, positions: np.ndarray) -> Columns:
        return Columns(
            self.ids[positions],
            self.shard[positions],
            self.offset[positions],
            self.nbytes[positions],
            self.dtype[positions],
            self.ndim[positions],
            self.dims[positions],
            self.shard_paths,
            self.shard_sizes,
            self.dtypes,
        )


@dataclass(frozen=True, slots=True)
class EntryColumns:
    """The columns of a set of entries with all their fields: one ``Columns`` per field (``names``, sorted; a
    store of bare arrays has the one field ``""``), every one in the same entry order, and the store's alignment."""

    names: tuple[str, ...]
    parts: tuple[Columns, ...]
    alignment: Alignment

    @property
    def ids(self) -> np.ndarray:
        return self.parts[0].ids

    def __len__(self) -> int:
        return len(self.parts[0].ids)

    @property
    def named(self) -> bool:
        """Whether the fields have names (then an entry reads as a dict of arrays)."""
        return self.names != (UNNAMED,)

    def part(self, name: str) -> Columns:
        """The columns of field ``name``."""
        return self.parts[self.names.index(name)]

    def take(self, positions: np.ndarray) -> EntryColumns:
        return EntryColumns(self.names, tuple(p.take(positions) for p in self.parts), self.alignment)

    def steps(self) -> np.ndarray:
        """Each entry's length in steps (int64): the minimum over the aligned fields of ``shape[axis] // rate``."""
        a = self.alignment
        out = np.full(len(self), np.iinfo(np.int64).max, np.int64)
        for name in a.rates:
            c = self.part(name)
            axis = np.where(a.axes[name] < 0, c.ndim.astype(np.int64) + a.axes[name], a.axes[name])
            out = np.minimum(out, c.dims[np.arange(len(c.ids)), axis] // a.rates[name])
        return out


def single(columns: Columns) -> EntryColumns:
    """The EntryColumns of a store of bare arrays (one unnamed field)."""
    return EntryColumns((UNNAMED,), (columns,), Alignment({}, {}))


class IdLookup:
    """Positions of entry ids in a column of distinct ids: a direct table when the ids are small non-negative
    integers (as the catalog's rowids are), else a binary search."""

    def __init__(self, ids: np.ndarray):
        self._n = len(ids)
        if self._n and ids.min() >= 0 and ids.max() <= 4 * self._n + 1_000_000:
            self._table = np.full(int(ids.max()) + 1, -1, np.int64)
            self._table[ids] = np.arange(self._n)
        else:
            self._table = None
            self._order = np.argsort(ids, kind="stable")
            self._sorted = ids[self._order]

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, positions)``: which ``ids`` are in the column, and where (positions valid where found)."""
        if not self._n:
            return np.zeros(len(ids), bool), np.zeros(len(ids), np.int64)
        if self._table is not None:
            inside = (ids >= 0) & (ids < len(self._table))
            pos = np.where(inside, self._table[np.where(inside, ids, 0)], -1)
            return pos >= 0, np.maximum(pos, 0)
        at = np.minimum(np.searchsorted(self._sorted, ids), self._n - 1)
        return self._sorted[at] == ids, self._order[at]


_SHAPE_CHARS = re.compile(r"[0-9, \n\[\]]*")


def _parse_shapes(texts: list) -> list:
    """The shape lists of ``texts``, parsed in one go when each is a plain ``[d0,d1,...]``; else one by one, with
    None for a text that is not JSON (so that the row at fault, not its neighbours, is reported)."""
    if not texts:
        return []
    if all(type(t) is str for t in texts):
        joined, n = "\n".join(texts), len(texts)
        # One line per text, each one "[" + digits, commas and spaces + "]": then one parse splits them exactly.
        if (
            _SHAPE_CHARS.fullmatch(joined)
            and joined.count("\n") == joined.count("\n[") == joined.count("]\n") == n - 1
            and joined.count("[") == joined.count("]") == n
            and joined.startswith("[")
            and joined.endswith("]")
        ):
            try:
                return json.loads("[" + joined.replace("\n", ",") + "]")
            except ValueError:
                pass
    out = []
    for text in texts:
        try:
            out.append(json.loads(text))
        except (TypeError, ValueError):
            out.append(None)
    return out


def build_columns(rows: list[tuple], shards: dict[int, tuple[str, int]], where: str) -> Columns:
    """Columns from catalog rows ``(id, key, shard_id, offset, nbytes, dtype, shape)``, each validated.

    A row whose dtype, shape, size or place is impossible raises CorruptStoreError naming its key: nothing is
    mapped before every row of the selection passed.
    """
    n = len(rows)
    shard_ids = sorted(shards)
    shard_pos = {sid: i for i, sid in enumerate(shard_ids)}
    descrs: dict[str, int] = {}
    dtypes: list[np.dtype] = []
    ids = np.empty(n, np.int64)
    shard = np.empty(n, np.int32)
    offset = np.empty(n, np.int64)
    nbytes = np.empty(n, np.int64)
    dcode = np.empty(n, np.int16)
    shapes = _parse_shapes([r[6] for r in rows])
    for i, (eid, key, sid, off, nb, descr, shape_text) in enumerate(rows):
        code = descrs.get(descr)
        if code is None:
            dtypes.append(descr_to_dtype(descr, f"{where}: entry {key!r}"))
            code = descrs[descr] = len(dtypes) - 1
        if sid not in shard_pos:
            raise CorruptStoreError(f"{where}: entry {key!r} names shard {sid}, which the catalog does not list.")
        path, size = shards[sid]
        check_row(where, key, dtypes[code], shapes[i], shape_text, off, nb, path, size)
        ids[i], shard[i], offset[i], nbytes[i], dcode[i] = eid, shard_pos[sid], off, nb, code
    ndims, dims = _padded(shapes)
    return Columns(
        ids,
        shard,
        offset,
        nbytes,
        dcode,
        ndims.astype(np.int8),
        dims,
        tuple(shards[s][0] for s in shard_ids),
        np.array([shards[s][1] for s in shard_ids], np.int64),
        tuple(dtypes),
    )


_SHAPE_BYTES = np.zeros(256, bool)
_SHAPE_BYTES[list(b"0123456789,[]\0")] = True
_OPEN, _CLOSE, _COMMA, _ZERO = b"[],0"


def _shape_columns(text: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(ndim, dims)`` of ``n`` NUL-separated shape texts, each a JSON list of non-negative ints; None when one is
    anything else. The common case (no empty shape) is parsed from the bytes as one array, the rest with json."""
    try:
        b = np.frombuffer(text.encode("ascii"), np.uint8)
    except UnicodeEncodeError:
        return None
    if not len(b) or not _SHAPE_BYTES[b].all():
        return None
    opens, closes, seps = np.flatnonzero(b == _OPEN), np.flatnonzero(b == _CLOSE), np.flatnonzero(b == 0)
    if len(opens) != n or len(closes) != n or len(seps) != n - 1 or opens[0] != 0 or closes[-1] != len(b) - 1:
        return None
    if (opens[1:] != seps + 1).any() or (closes[:-1] != seps - 1).any() or (closes <= opens).any():
        return None  # (each piece is "[" ... "]" with no bracket inside)
    if (closes == opens + 1).any():
        return _shape_columns_json(text.split("\0"))  # an empty shape "[]"
    prev, nxt = b[:-1], b[1:]
    bad = ((prev == _OPEN) | (prev == _COMMA)) & ((nxt == _COMMA) | (nxt == _CLOSE))  # "[,", ",,", ",]"
    bad[1:] |= ((prev[:-1] == _OPEN) | (prev[:-1] == _COMMA)) & (prev[1:] == _ZERO) & (nxt[1:] - 48 < 10)  # "01"
    if bad.any():
        return None  # (json.loads, which the row-by-row check uses, refuses those too)
    ndim = np.add.reduceat((b == _COMMA).astype(np.int64), opens) + 1
    flat = parse_ints(text.translate(_SHAPE_TO_INTS), int(ndim.sum()))
    if flat is None:
        return None
    dims = np.zeros((n, int(ndim.max())), np.int64)
    row = np.repeat(np.arange(n), ndim)
    dims[row, np.arange(len(flat)) - np.repeat(np.cumsum(ndim) - ndim, ndim)] = flat
    return ndim, dims


_SHAPE_TO_INTS = str.maketrans({"[": None, "]": None, "\0": ","})


def _shape_columns_json(texts: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    shapes = _parse_shapes(texts)
    if not all(isinstance(x, list) and all(type(d) is int and d >= 0 for d in x) for x in shapes):
        return None
    try:
        return _padded(shapes)
    except OverflowError:
        return None


def _padded(shapes: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(ndim, dims)``: each shape's length, and the shapes as rows of one int64 matrix padded with 0."""
    ndim = np.array([len(x) for x in shapes], np.int64)
    dims = np.zeros((len(shapes), int(ndim.max(initial=0))), np.int64)
    for i, x in enumerate(shapes):
        dims[i, : len(x)] = x
    return ndim, dims


def _distinct(ids: np.ndarray) -> bool:
    """Whether the int64 ``ids`` are distinct: counted in a table when they are small non-negative integers (as the
    catalog's are: milliseconds for a million), else sorted."""
    if ids.min() >= 0 and ids.max() <= 4 * len(ids) + 1_000_000:
        return int(np.bincount(ids).max()) <= 1
    return len(np.unique(ids)) == len(ids)


def check_arrays(c: Columns) -> bool:
    """Whether columns held as arrays (read from whole-column texts, or from a kept snapshot) pass every check of
    ``check_row`` on every row: the array dtypes and lengths, dtype codes and shard positions in range, offsets and
    sizes in ``[0, MAX_NBYTES)``, at most ``MAX_NDIM`` non-negative dimensions, ``prod(shape) * itemsize ==
    nbytes``, and each entry inside its shard's committed size. Ids must be distinct."""
    n = len(c.ids)
    arrays = ((c.ids, np.int64), (c.shard, np.int32), (c.offset, np.int64), (c.nbytes, np.int64),
              (c.dtype, np.int16), (c.ndim, np.int8))  # fmt: skip
    if any(not isinstance(x, np.ndarray) or x.dtype != t or x.shape != (n,) for x, t in arrays):
        return False
    dims, sizes = c.dims, c.shard_sizes
    if not isinstance(dims, np.ndarray) or dims.dtype != np.int64 or dims.ndim != 2 or dims.shape[0] != n:
        return False
    if not isinstance(sizes, np.ndarray) or sizes.dtype != np.int64 or sizes.shape != (len(c.shard_paths),):
        return False
    if not n:
        return True
    if not _distinct(c.ids) or (c.shard < 0).any() or (c.shard >= len(sizes)).any():
        return False
    if (c.dtype < 0).any() or (c.dtype >= len(c.dtypes)).any() or (c.ndim < 0).any() or (c.ndim > MAX_NDIM).any():
        return False
    if (c.offset < 0).any() or (c.nbytes < 0).any() or (c.offset >= MAX_NBYTES).any() or (c.nbytes >= MAX_NBYTES).any():
        return False
    if dims.shape[1] > MAX_NDIM or (dims.size and ((dims < 0).any() or dims.max() >= MAX_NBYTES)):
        return False
    inside = np.arange(dims.shape[1]) < c.ndim[:, None]
    if (dims[~inside] != 0).any():
        return False  # (padding is zeros)
    used = np.where(inside, dims, 1)
    itemsize = np.array([d.itemsize for d in c.dtypes], np.int64)[c.dtype]
    if (np.prod(np.maximum(used, 1).astype(np.float64), axis=1) * itemsize >= MAX_NBYTES).any():
        return False
    if (c.offset % ALIGNMENT).any():
        return False
    return bool((np.prod(used, axis=1) * itemsize == c.nbytes).all() and (c.offset + c.nbytes <= sizes[c.shard]).all())


def columns_from_texts(
    texts: tuple[int, str, str, str, str, str, str], shards: dict[int, tuple[str, int]]
) -> Columns | None:
    """Columns from the catalog columns read as one text each: ``(count, ids, shard ids, offsets, nbytes, dtypes,
    shapes)``, numbers comma-separated, dtypes and shapes NUL-separated, all in the same row order.

    The checks are those of ``build_columns``, made on whole columns by ``check_arrays``. None when a text does not
    parse or any row fails a check: the caller then reads the rows one by one with ``build_columns``, whose error
    names the row.
    """
    n, *rest = texts
    if not n or any(type(t) is not str for t in rest):
        return None
    ids, sid, off, nb = (parse_ints(t, n) for t in rest[:4])
    dtype_text, shape_text = rest[4:]
    descr_list = dtype_text.split("\0")
    if any(x is None for x in (ids, sid, off, nb)) or len(descr_list) != n:
        return None
    shard_ids = sorted(shards)
    if not np.isin(sid, shard_ids).all():
        return None
    descrs: list[str] = sorted(set(descr_list))  # (a store rarely holds more than a few dtypes)
    if len(descrs) == 1:
        codes = np.zeros(n, np.int16)
    else:
        codes = np.searchsorted(np.array(descrs), np.array(descr_list)).astype(np.int16)
    try:
        dtypes = [descr_to_dtype(d, "") for d in descrs]
    except CorruptStoreError:
        return None
    parsed = _shape_columns(shape_text, n)
    if parsed is None:
        return None
    ndims, dims = parsed
    if dims.shape[1] > MAX_NDIM or (ndims > MAX_NDIM).any():
        return None
    columns = Columns(
        ids,
        np.searchsorted(shard_ids, sid).astype(np.int32),
        off,
        nb,
        codes,
        ndims.astype(np.int8),
        dims,
        tuple(shards[x][0] for x in shard_ids),
        np.array([shards[x][1] for x in shard_ids], np.int64),
        tuple(dtypes),
    )
    return columns if check_arrays(columns) else None
