"""Selections: a columnar set of entries, and lazy views of one entry.

A Selection holds its entries as numpy columns (ids, shard, offset, nbytes, dtype code, shape), never one Python
object per entry, so a million-entry selection costs a few arrays. Reading entry ``i`` places an ndarray on the
shard's memory map and lets numpy index it; only the touched bytes are copied out.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import query
from .batching import batch, check_mode
from .errors import CorruptStoreError, EntryNotFoundError
from .indexing import has_random, resolve, view_shape
from .shards import descr_to_dtype
from .transforms import apply_transforms, check_transform, list_shape, shape_ranges

if TYPE_CHECKING:
    from .store import Store

_MAX_NBYTES = 1 << 62


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


_INT_CHARS = re.compile(r"[0-9,-]*")  # no "+", no spaces: what SQLite writes for integers
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
        shape = shapes[i]
        if not isinstance(shape, list) or len(shape) > 64 or not all(type(d) is int and d >= 0 for d in shape):
            raise CorruptStoreError(f"{where}: entry {key!r} has an invalid shape {shape_text!r}.")
        if not (type(off) is int and type(nb) is int and 0 <= off < _MAX_NBYTES and 0 <= nb < _MAX_NBYTES):
            raise CorruptStoreError(f"{where}: entry {key!r} has an invalid offset/nbytes ({off!r}, {nb!r}).")
        expected = dtypes[code].itemsize
        for d in shape:
            expected *= d
        if expected != nb:
            raise CorruptStoreError(
                f"{where}: entry {key!r} says {nb} bytes, but shape {tuple(shape)} of {descr} needs {expected}."
            )
        path, size = shards[sid]
        if off + nb > size:
            raise CorruptStoreError(
                f"{where}: entry {key!r} ends at byte {off + nb} of {path}, past its committed size {size}."
            )
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


def parse_ints(text: str | None, count: int) -> np.ndarray | None:
    """The ``count`` integers of a comma-separated text (as SQLite's ``group_concat`` writes them), else None."""
    if not count:
        return np.empty(0, np.int64)
    if type(text) is not str or not _INT_CHARS.fullmatch(text):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns when a text does not parse to its end
        try:
            found = np.fromstring(text, np.int64, sep=",")
        except (ValueError, DeprecationWarning):
            return None
    if len(found) != count or (found >= 10**18).any() or (found <= -(10**18)).any():
        return None  # (a number past int64 would have been clipped without a word)
    return found


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


def columns_from_texts(
    texts: tuple[int, str, str, str, str, str, str], shards: dict[int, tuple[str, int]]
) -> Columns | None:
    """Columns from the catalog columns read as one text each: ``(count, ids, shard ids, offsets, nbytes, dtypes,
    shapes)``, numbers comma-separated, dtypes and shapes NUL-separated, all in the same row order.

    The checks are those of ``build_columns``, made on whole columns. None when a text does not parse or any row
    fails a check: the caller then reads the rows one by one with ``build_columns``, whose error names the row.
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
    if not np.isin(sid, shard_ids).all() or (off < 0).any() or (nb < 0).any():
        return None
    if (off >= _MAX_NBYTES).any() or (nb >= _MAX_NBYTES).any():
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
    if dims.shape[1] > 64 or (dims.size and dims.max() >= _MAX_NBYTES):
        return None
    itemsize = np.array([d.itemsize for d in dtypes], np.int64)[codes]
    if (np.prod(dims.astype(np.float64), axis=1) * itemsize > _MAX_NBYTES).any():
        return None
    if not (np.prod(dims, axis=1) * itemsize == nb).all():
        return None
    shard_pos = np.searchsorted(shard_ids, sid)
    sizes = np.array([shards[x][1] for x in shard_ids], np.int64)
    if not (off + nb <= sizes[shard_pos]).all():
        return None
    return Columns(
        ids,
        shard_pos.astype(np.int32),
        off,
        nb,
        codes,
        ndims.astype(np.int8),
        dims,
        tuple(shards[x][0] for x in shard_ids),
        sizes,
        tuple(dtypes),
    )


class Selection:
    """An ordered set of a store's entries. Index it like a list of numpy arrays.

    ``sel[i]`` reads entry ``i``; ``sel[i, ...idx]`` reads only ``entry[idx]``; ``sel[a:b]``, ``sel[[i, j]]`` and
    boolean or integer arrays read several entries, combined by ``batch_mode`` (``"list"``, ``"pad"``, ``"crop"``).

    The lardon-style options: ``dtype`` converts each item read; ``return_metadata`` makes an item ``(data,
    metadata)``; ``return_indices`` appends the index actually read (randslice draws included), so ``sel[index]``
    reads the same data again; ``transforms`` are ``(name, axis)`` pairs (see ``expand_dims``, ``squeeze``) applied
    to each item before batching.
    """

    def __init__(
        self,
        store: Store,
        columns: Columns,
        batch_mode: str = "list",
        batch_args: dict[str, Any] | None = None,
        seed: int | None = None,
        dtype: Any = None,
        return_metadata: bool = False,
        return_indices: bool = False,
        transforms: tuple[tuple[str, int], ...] = (),
    ):
        self._store = store
        self._columns = columns
        self.batch_mode = check_mode(batch_mode)
        self.batch_args = dict(batch_args or {})
        self._seed = seed
        self._rng_state: tuple[int, np.random.Generator] | None = None
        self._dtype = np.dtype(dtype) if dtype is not None else None
        self.return_metadata = bool(return_metadata)
        self.return_indices = bool(return_indices)
        self._transforms = tuple(transforms)

    # --- size and order -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._columns.ids)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self)} entries from {self._store.root}>"

    @property
    def store(self) -> Store:
        """The store the entries belong to."""
        return self._store

    @property
    def ids(self) -> np.ndarray:
        """The catalog ids of the entries (``entries.id``), in order."""
        return self._columns.ids

    @property
    def keys(self) -> list[str]:
        """The entries' keys, in order."""
        return self._store._keys_of(self._columns.ids)

    def shape_of(self, i: int) -> tuple[int, ...]:
        """The stored shape of entry ``i``."""
        i = self._position(i)
        return tuple(self._columns.dims[i, : self._columns.ndim[i]].tolist())

    def dtype_of(self, i: int) -> np.dtype:
        """The stored dtype of entry ``i``."""
        return self._columns.dtypes[self._columns.dtype[self._position(i)]]

    @property
    def nbytes(self) -> int:
        """Bytes of array data the selection covers."""
        return int(self._columns.nbytes.sum())

    def metadata(self, i: int) -> dict[str, Any]:
        """The metadata dict of entry ``i``."""
        return self._store._metadata_of(int(self._columns.ids[self._position(i)]))

    def entry(self, i: int) -> Entry:
        """A lazy view of entry ``i``: index it to compose views, ``np.asarray`` it to read."""
        return Entry(self, self._position(i), ())

    def take(self, positions: Any) -> Selection | Entry:
        """The selection of the entries at ``positions`` (int array, list, slice or boolean mask), in that order.

        A single int gives that entry's lazy view, as the seed project's ``take`` did.
        """
        if isinstance(positions, (int, np.integer)) and not isinstance(positions, (bool, np.bool_)):
            return self.entry(positions)
        positions = np.arange(len(self))[positions]
        return self._derive(self._columns.take(np.atleast_1d(positions)))

    def _derive(self, columns: Columns) -> Selection:
        return Selection(self._store, columns, **self._options())

    def _options(self) -> dict[str, Any]:
        """The reading options a derived selection keeps."""
        return {
            "batch_mode": self.batch_mode,
            "batch_args": self.batch_args,
            "seed": self._seed,
            "dtype": self._dtype,
            "return_metadata": self.return_metadata,
            "return_indices": self.return_indices,
            "transforms": self._transforms,
        }

    # --- the list view of the seed project (shape, dtype, transforms, scatter) --------------------------------
    def _item_ranges(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per ndim present, the (min, max) stored size of each axis of the items."""
        return shape_ranges(self._columns.ndim, self._columns.dims)

    @property
    def shape(self) -> tuple:
        """``(len, *dims)`` of the items after transforms; a dimension that varies is ``(min, max)``."""
        return list_shape(len(self), self._item_ranges(), self._transforms)

    @property
    def ndim(self) -> int:
        """``len(self.shape)``: one for the list axis plus the items' number of dimensions."""
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        """The dtype items are read as: the ``dtype`` option when given, else numpy's common type of the entries."""
        if self._dtype is not None:
            return self._dtype
        codes = np.unique(self._columns.dtype).tolist()
        if not codes:
            return np.dtype(np.float64)
        return np.result_type(*(self._columns.dtypes[c] for c in codes))

    @dtype.setter
    def dtype(self, value: Any) -> None:
        self._dtype = np.dtype(value) if value is not None else None

    @property
    def entries(self) -> list[Entry]:
        """A lazy view of each entry, in order (one Python object per entry: prefer indexing for large lists)."""
        return [Entry(self, i, ()) for i in range(len(self))]

    @property
    def transforms(self) -> tuple[tuple[str, int], ...]:
        """The per-item transforms, as ``(name, axis)`` pairs applied in order."""
        return self._transforms

    def expand_dims(self, axis: int) -> Selection:
        """Insert an axis of size 1 at ``axis`` of each item read from now on (in place, as in the seed); self."""
        self._transforms += (check_transform(self._item_ranges(), self._transforms, "expand_dims", axis),)
        return self

    def squeeze(self, axis: int) -> Selection:
        """Remove ``axis`` (of size 1 in every item) from each item read from now on (in place); self."""
        self._transforms += (check_transform(self._item_ranges(), self._transforms, "squeeze", axis),)
        return self

    def scatter(self, axis: int = 0) -> Selection:
        """A new list whose items are the sub-arrays of each item along ``axis`` (see lardon.scatter)."""
        from .lardon import scatter

        return scatter(self, axis)

    # --- metadata queries (see query.py) --------------------------------------------------------------------
    def where(self, *conditions: query.Expr | str, **equals: Any) -> Selection:
        """The entries of this selection matching every condition (``meta`` expressions, query strings, or
        ``key=value`` equalities), in this selection's order."""
        return query.refine(self, conditions, equals)

    def order_by(self, key: str, descending: bool = False) -> Selection:
        """This selection sorted by metadata ``key``; entries without a value for it come last."""
        return query.order_selection(self, key, descending)

    def limit(self, n: int) -> Selection:
        """The first ``n`` entries of this selection."""
        return self.take(slice(0, max(int(n), 0)))

    def metadata_columns(self, keys: list[str]) -> dict[str, np.ndarray]:
        """One numpy array of values per metadata key (object dtype with None where mixed or missing)."""
        return query.metadata_columns(self, keys)

    # --- reading --------------------------------------------------------------------------------------------
    def rng(self) -> np.random.Generator:
        """The generator randslice draws from: seeded when a seed was given, re-created in each new process."""
        pid = os.getpid()
        if self._rng_state is None or self._rng_state[0] != pid:
            if self._seed is None:
                gen = np.random.default_rng()
            elif self._rng_state is None:
                gen = np.random.default_rng(self._seed)
            else:
                gen = np.random.default_rng([self._seed, pid])
            self._rng_state = (pid, gen)
        return self._rng_state[1]

    def _position(self, i: Any) -> int:
        n = len(self._columns.ids)
        if not isinstance(i, (int, np.integer)) or isinstance(i, (bool, np.bool_)):
            raise TypeError(f"entry positions are integers, not {type(i).__name__}")
        j = int(i)
        if j < -n or j >= n:
            raise IndexError(f"index {j} is out of bounds for axis 0 with size {n}")
        return j + n if j < 0 else j

    def _mapped(self, i: int) -> np.ndarray:
        """Entry ``i`` as a read-only ndarray on its shard's memory map (no bytes read yet)."""
        c = self._columns
        shape = tuple(c.dims[i, : c.ndim[i]].tolist())
        dtype = c.dtypes[c.dtype[i]]
        nbytes = int(c.nbytes[i])
        if nbytes == 0:
            return np.empty(shape, dtype)
        s = c.shard[i]
        try:
            mm = self._store._reader.get(c.shard_paths[s], int(c.shard_sizes[s]))
        except CorruptStoreError as exc:
            key = self._store._keys_of(c.ids[i : i + 1])[0]
            raise CorruptStoreError(f"entry {key!r}: {exc}") from exc
        return np.ndarray(shape, dtype, buffer=mm, offset=int(c.offset[i]))

    def _read_item(self, i: int, index: tuple) -> tuple[np.ndarray, tuple]:
        """Entry ``i`` indexed by ``index`` (randslices drawn), converted and transformed; and the index used."""
        x = self._mapped(i)
        if index:
            if has_random(index):
                index = resolve(index, x.shape, self.rng())
            x = x[index]
        if self._dtype is not None:
            x = np.array(x, dtype=self._dtype)
        elif isinstance(x, np.ndarray):
            x = x.copy()
        if self._transforms:
            x = apply_transforms(x, self._transforms)
        return x, index

    def _read(self, i: int, index: tuple) -> np.ndarray:
        return self._read_item(i, index)[0]

    def _item(self, i: int, index: tuple):
        x, used = self._read_item(i, index)
        if not (self.return_metadata or self.return_indices):
            return x
        out = (x,)
        if self.return_metadata:
            out += (self.metadata(i),)
        if self.return_indices:
            out += ((i, *used),)
        return out

    def __getitem__(self, key: Any):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if isinstance(first, np.ndarray) and first.ndim == 0 and first.dtype.kind in "iu":
            first = first.item()  # numpy indexes with a 0-d integer array as with an int
        if isinstance(first, (int, np.integer)) and not isinstance(first, (bool, np.bool_)):
            return self._item(self._position(first), rest)
        if isinstance(first, (slice, list, np.ndarray)):
            positions = np.arange(len(self))[first]
            items = [self._item(int(p), rest) for p in np.atleast_1d(positions)]
            if not (self.return_metadata or self.return_indices):
                return batch(items, self.batch_mode, self.batch_args)
            columns = list(zip(*items)) if items else [[]] * (1 + self.return_metadata + self.return_indices)
            return (batch(list(columns[0]), self.batch_mode, self.batch_args), *(list(c) for c in columns[1:]))
        if isinstance(first, str):
            return self._item(self.by_key(first)._pos, rest)
        raise TypeError(
            f"the first index of a selection picks entries: use an int, slice, int list or array, or a key "
            f"string, not {type(first).__name__}"
        )

    def by_key(self, key: str) -> Entry:
        """The lazy view of the entry whose key is ``key`` (EntryNotFoundError when the selection has none)."""
        eid = self._store._id_of(key)
        where = np.flatnonzero(self._columns.ids == eid) if eid is not None else []
        if len(where) == 0:
            raise EntryNotFoundError(f"no entry with key {key!r} in this selection of {self._store.root}")
        return Entry(self, int(where[0]), ())

    # --- pickling: columns and the store's path, never open handles -----------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_rng_state"}
        state["_rng_state"] = None
        return state


class Entry:
    """A lazy view of one entry: indexing composes numpy indices; ``np.asarray(entry)`` reads the bytes."""

    __slots__ = ("_sel", "_pos", "_chain", "_shape")

    def __init__(self, selection: Selection, position: int, chain: tuple[tuple, ...]):
        self._sel = selection
        self._pos = position
        self._chain = chain
        self._shape = view_shape(selection.shape_of(position), chain)

    def __getitem__(self, index: Any) -> Entry:
        index = index if isinstance(index, tuple) else (index,)
        if has_random(index):
            index = resolve(index, self._shape, self._sel.rng())
        return Entry(self._sel, self._pos, self._chain + (index,))

    @property
    def key(self) -> str:
        """The entry's key."""
        return self._sel.store._keys_of(self._sel.ids[self._pos : self._pos + 1])[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of this view."""
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def dtype(self) -> np.dtype:
        return self._sel.dtype_of(self._pos)

    @property
    def nbytes(self) -> int:
        """Bytes of this view once read."""
        return int(np.prod(self._shape, dtype=object)) * self.dtype.itemsize

    @property
    def metadata(self) -> dict[str, Any]:
        return self._sel.metadata(self._pos)

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d entry view")
        return self._shape[0]

    def read(self) -> np.ndarray:
        """The view's values as a new array (a numpy scalar for a 0-d view)."""
        x = self._sel._mapped(self._pos)
        for index in self._chain:
            x = x[index]
        return x.copy() if isinstance(x, np.ndarray) else x

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        x = np.asarray(self.read())
        return x.astype(dtype, copy=False) if dtype is not None else x

    def __repr__(self) -> str:
        return f"<Entry {self._pos} shape={self._shape} dtype={self.dtype}>"
