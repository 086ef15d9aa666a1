"""Selections: a columnar set of entries, lazy views of one entry, and lists scattered along an axis.

A Selection holds its entries as numpy columns (ids, shard, offset, nbytes, dtype code, shape), never one Python
object per entry, so a million-entry selection costs a few arrays. Reading entry ``i`` places an ndarray on the
shard's memory map and lets numpy index it; only the touched bytes are copied out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..catalog.reads import rows_of
from ..errors import CorruptStoreError, EntryNotFoundError, ShardMissingError
from ..format.columns import Columns
from ..handle import StoreHandle
from ..query.evaluate import columns_of_ids, metadata_columns, order_positions, refine_positions
from ..query.expressions import Expr
from ..query.parser import combine
from .batching import batch, check_mode
from .indexing import has_random, resolve, stand_in, view_shape
from .pictures import distribution_figure, entry_figure
from .transforms import apply_transforms, check_transform, list_shape, shape_ranges

__all__ = ["MANIFEST_FORMAT", "Entry", "ScatteredSelection", "Selection", "item_dims", "scatter"]

MANIFEST_FORMAT = "lardon_store.manifest/1"


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
        store: StoreHandle,
        columns: Columns,
        batch_mode: str = "list",
        batch_args: dict[str, Any] | None = None,
        seed: int | None = None,
        dtype: Any = None,
        return_metadata: bool = False,
        return_indices: bool = False,
        transforms: tuple[tuple[str, int], ...] = (),
        *,
        generation: int,
        query: str | None = None,
    ):
        self._store = store
        self._columns = columns
        self._generation = int(generation)
        self._query = query
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
        return (
            f"<{type(self).__name__} of {len(self)} entries from {self._store.root} at generation {self._generation}>"
        )

    @property
    def store(self) -> StoreHandle:
        """The store the entries belong to."""
        return self._store

    @property
    def generation(self) -> int:
        """The generation this selection is pinned to: its keys, metadata, shapes and bytes are those of it."""
        return self._generation

    @property
    def query(self) -> str | None:
        """The query this selection was made by (``store.where``), or None."""
        return self._query

    def manifest(self) -> dict[str, Any]:
        """What this selection is, as JSON-ready data: the store's id, the generation, the entry ids in order, and
        the query. Save it beside a checkpoint; ``store.from_manifest(m)`` gives the same entries and bytes back for
        as long as gc's retention keeps the generation."""
        return {
            "format": MANIFEST_FORMAT,
            "store_id": self._store.store_id,
            "generation": self._generation,
            "query": self._query,
            "entries": len(self),
            "ids": self.ids.tolist(),
        }

    @property
    def columns(self) -> Columns:
        """The entries' catalog columns (read-only numpy arrays: ids, shard, offset, nbytes, dtype, ndim, dims)."""
        return self._columns

    @property
    def ids(self) -> np.ndarray:
        """The catalog ids of the entries (``entries.id``), in order."""
        return self._columns.ids

    @property
    def keys(self) -> list[str]:
        """The entries' keys, in order."""
        return self._store.keys_of(self._columns.ids, self._generation)

    def shape_of(self, i: int) -> tuple[int, ...]:
        """The stored shape of entry ``i``."""
        i = self._position(i)
        return tuple(self._columns.dims[i, : self._columns.ndim[i]].tolist())

    def item_shape(self, i: int) -> tuple[int, ...]:
        """The shape of entry ``i`` as read, after the ``expand_dims``/``squeeze`` transforms: the coordinates an
        index after the entry's position counts in."""
        shape = self.shape_of(i)
        if not self._transforms:
            return shape
        return np.shape(apply_transforms(stand_in(shape), self._transforms))

    def dtype_of(self, i: int) -> np.dtype:
        """The stored dtype of entry ``i``."""
        return self._columns.dtypes[self._columns.dtype[self._position(i)]]

    @property
    def nbytes(self) -> int:
        """Bytes of array data the selection covers."""
        return int(self._columns.nbytes.sum())

    def metadata(self, i: int) -> dict[str, Any]:
        """The metadata dict of entry ``i``."""
        return self._store.metadata_of(int(self._columns.ids[self._position(i)]), self._generation)

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
        return Selection(self._store, columns, **self.options(), generation=self._generation)

    def options(self) -> dict[str, Any]:
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
        """A new list whose items are the sub-arrays of each item along ``axis`` (see ``scatter``)."""
        return scatter(self, axis)

    # --- metadata queries (see the query package) -----------------------------------------------------------
    def where(self, *conditions: Expr | str, **equals: Any) -> Selection:
        """The entries of this selection matching every condition (``meta`` expressions, query strings, or
        ``key=value`` equalities), in this selection's order, at this selection's generation."""
        expr = combine(conditions, equals)
        positions = refine_positions(self._store, self.ids, expr, self._generation)
        result = self.take(positions)
        result._query = f"({self._query}) and ({expr})" if self._query is not None else None
        return result

    def order_by(self, key: str, descending: bool = False) -> Selection:
        """This selection sorted by metadata ``key``: numbers, then bools, strings, nulls, and entries without a
        value for it last; ties keep this selection's order."""
        result = self.take(order_positions(self._store, self.ids, key, self._generation, descending))
        result._query = self._query
        return result

    def limit(self, n: int) -> Selection:
        """The first ``n`` entries of this selection."""
        return self.take(slice(0, max(int(n), 0)))

    def metadata_columns(self, keys: list[str]) -> dict[str, np.ndarray]:
        """One numpy array of values per metadata key (object dtype with None where mixed or missing)."""
        return metadata_columns(self._store, self.ids, keys, self._generation)

    def show(self, i: int | str):
        """A matplotlib Figure of entry ``i`` (a position or a key): a line, an image with a colour bar, or a grid
        of slices (see ``pictures.py``); ``fig.savefig("x.png")`` writes it. Needs the ``plot`` extra."""
        entry = self.by_key(i) if isinstance(i, str) else self.entry(i)
        return entry_figure(entry.key, np.asarray(entry), entry.metadata)

    def plot(self, key: str):
        """A matplotlib Figure of how metadata ``key`` is spread over this selection: a histogram for numbers, bars
        of counts for strings, with the number of entries without a value. Needs the ``plot`` extra."""
        values = self.metadata_columns([key])[key]
        what = f"{len(self)} entries" + (f" where {self._query}" if self._query else "")
        return distribution_figure(key, np.asarray(values, dtype=object), what)

    def rows(self) -> list[dict[str, Any]]:
        """``{"key", "shape", "dtype", "metadata"}`` for each entry, in order (what ``lardon-store ls`` prints)."""
        ids = self.ids.tolist()
        with self._store.engine.connect() as conn:
            found = rows_of(conn, ids)
        out = []
        for pos, eid in enumerate(ids):
            key, md = found[eid]
            out.append({"key": key, "shape": list(self.shape_of(pos)), "dtype": self.dtype_of(pos).str,
                        "metadata": json.loads(md)})  # fmt: skip
        return out

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
            mm = self._store.reader.get(c.shard_paths[s], int(c.shard_sizes[s]))
        except ShardMissingError:
            c = self._relocate(i)  # (gc moved the bytes since this selection was made)
            s = c.shard[i]
            mm = self._store.reader.get(c.shard_paths[s], int(c.shard_sizes[s]))
        except CorruptStoreError as exc:
            key = self._store.keys_of(c.ids[i : i + 1])[0]
            raise CorruptStoreError(f"entry {key!r}: {exc}") from exc
        return np.ndarray(shape, dtype, buffer=mm, offset=int(c.offset[i]))

    def _relocate(self, i: int) -> Columns:
        """This selection's columns read again by id: an entry's bytes never change, but gc moves them to new
        shards. GenerationExpiredError when gc reclaimed them; CorruptStoreError when entry ``i``'s shard is still
        missing."""
        columns = columns_of_ids(self._store, self._columns.ids, self._generation)
        s = columns.shard[i]
        if columns.shard_paths[s] == self._columns.shard_paths[self._columns.shard[i]]:
            key = self._store.keys_of(columns.ids[i : i + 1])[0]
            raise ShardMissingError(
                f"entry {key!r}: {self._store.root / columns.shard_paths[s]}: shard file is missing; run "
                "`lardon-store verify`."
            )
        self._columns = columns
        return columns

    def _read_item(self, i: int, index: tuple) -> tuple[np.ndarray, tuple]:
        """Entry ``i`` transformed (``expand_dims`` and ``squeeze`` only make views), indexed by ``index`` in the
        coordinates ``shape`` reports (randslices drawn), then converted; and the index used."""
        x = self._mapped(i)
        if self._transforms:
            x = apply_transforms(x, self._transforms)
        if index:
            if has_random(index):
                try:
                    index = resolve(index, x.shape, self.rng())
                except IndexError as exc:
                    key = self._store.keys_of(self._columns.ids[i : i + 1], self._generation)[0]
                    raise IndexError(f"entry {key!r} of shape {x.shape}: {exc}") from None
            x = x[index]
        if self._dtype is not None:
            x = np.array(x, dtype=self._dtype)
        elif isinstance(x, np.ndarray):
            x = x.copy()
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
        where = np.flatnonzero(np.isin(self._columns.ids, self._store.ids_with_key(key)))
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
        return self._sel.store.keys_of(self._sel.ids[self._pos : self._pos + 1])[0]

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


class ScatteredSelection(Selection):
    """A list whose items are the sub-arrays of another list's items along one axis (built by ``scatter``)."""

    def __init__(self, base: Selection, base_pos: np.ndarray, sub: np.ndarray, axis: int, **options: Any):
        super().__init__(base.store, base.columns.take(base_pos), **options, generation=base.generation)
        self._base, self._base_pos, self._sub, self._axis = base, base_pos, sub, axis

    def _mapped(self, i: int) -> np.ndarray:
        x = self._base._mapped(int(self._base_pos[i]))
        return x[(slice(None),) * self._axis + (int(self._sub[i]),)]

    def shape_of(self, i: int) -> tuple[int, ...]:
        i = self._position(i)
        shape = self._base.shape_of(int(self._base_pos[i]))
        return shape[: self._axis] + shape[self._axis + 1 :]

    def dtype_of(self, i: int) -> np.dtype:
        return self._base.dtype_of(int(self._base_pos[self._position(i)]))

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(self.shape_of(i), dtype=np.int64)) * self.dtype_of(i).itemsize for i in range(len(self)))

    def _item_ranges(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return shape_ranges(*item_dims(self))

    def take(self, positions: Any) -> Selection | Entry:
        if isinstance(positions, (int, np.integer)) and not isinstance(positions, (bool, np.bool_)):
            return self.entry(positions)
        positions = np.atleast_1d(np.arange(len(self))[positions])
        return ScatteredSelection(
            self._base, self._base_pos[positions], self._sub[positions], self._axis, **self.options()
        )

    def _derive(self, columns: Columns) -> Selection:
        raise TypeError("a scattered list can only be narrowed with take(); filter the list before scatter().")


def item_dims(sel: Selection) -> tuple[np.ndarray, np.ndarray]:
    """The stored shapes of a list's items as columns: ndim per item, and sizes padded with 0 to the widest."""
    if isinstance(sel, ScatteredSelection):
        ndim, dims = item_dims(sel._base)
        return ndim[sel._base_pos] - 1, np.delete(dims[sel._base_pos], sel._axis, axis=1)
    return sel.columns.ndim.astype(np.int64), sel.columns.dims


def scatter(sel: Selection, axis: int = 0) -> Selection:
    """The list of every item's sub-arrays along ``axis``: item ``k`` of shape ``(..., n, ...)`` gives ``n`` items.

    This is what the seed's ``OfflineEntry.scatter(axis)`` did for one entry, applied to every item of the list, in
    order (the seed's list-level ``scatter`` ignored its axis and failed). ``axis`` counts in the stored item;
    the new list keeps the batch mode, dtype and return options. It cannot start from a list with
    ``expand_dims``/``squeeze`` transforms (their axes would change meaning): scatter first, then transform.
    """
    if sel.transforms:
        raise ValueError("scatter() on a list with expand_dims/squeeze transforms: call scatter first, then transform.")
    ndim, dims = item_dims(sel)
    n = len(ndim)
    if axis < 0:
        if len(np.unique(ndim)) > 1:
            raise ValueError(f"scatter({axis}): the items have different numbers of dimensions; give a positive axis")
        axis += int(ndim[0]) if n else 0
    short = np.flatnonzero(ndim <= axis)
    if axis < 0 or len(short):
        i = int(short[0]) if len(short) else 0
        raise np.exceptions.AxisError(f"scatter({axis}): item {i} has only {int(ndim[i])} dimensions")
    sizes = dims[:, axis] if n else np.zeros(0, np.int64)
    base_pos = np.repeat(np.arange(n, dtype=np.int64), sizes)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    sub = np.arange(len(base_pos), dtype=np.int64) - starts
    return ScatteredSelection(sel, base_pos, sub, axis, **sel.options())
