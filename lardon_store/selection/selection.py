"""Selections: a columnar set of entries, lazy views of one entry, and lists scattered along an axis.

A Selection holds its entries as numpy columns (ids, shard, offset, nbytes, dtype code, shape), never one Python
object per entry, so a million-entry selection costs a few arrays. Reading entry ``i`` places an ndarray on the
shard's memory map and lets numpy index it; only the touched bytes are copied out.

Fields: in a store whose entries have named fields (a callback that returned ``{field: array}``), a Selection
reads whole entries as dicts of arrays, and ``sel.field(name)`` is the Selection of one field, with every feature
of a list of arrays. With an alignment spec (``format/fields.py``), ``crop`` and ``random_crop`` read the windows
of every field that line up at step ``start``, each placed on its memory map: only those bytes are touched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..catalog.reads import rows_of
from ..errors import CorruptStoreError, EntryNotFoundError, FieldError, ShardMissingError
from ..format.columns import Columns, EntryColumns, single
from ..format.fields import UNNAMED, field_axis
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
    When the entries have named fields, ``sel[i]`` is a dict of whole arrays and ``sel.field(name)`` the list of
    one field's arrays.

    The lardon-style options: ``dtype`` converts each item read; ``return_metadata`` makes an item ``(data,
    metadata)``; ``return_indices`` appends the index actually read (randslice draws included), so ``sel[index]``
    reads the same data again; ``transforms`` are ``(name, axis)`` pairs (see ``expand_dims``, ``squeeze``) applied
    to each item before batching.
    """

    def __init__(
        self,
        store: StoreHandle,
        columns: EntryColumns | Columns,
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
        field: str | None = None,
    ):
        self._store = store
        self._entries = columns if isinstance(columns, EntryColumns) else single(columns)
        if field is None and not self._entries.named:
            field = UNNAMED
        if field is not None and field not in self._entries.names:
            raise self._no_field(field)
        self._field = field
        self._columns = self._entries.part(field if field is not None else self._entries.names[0])
        self._steps: np.ndarray | None = None  # (shapes never change: computed once)
        self._views: dict[str, Selection] = {}
        self._plans: dict[tuple[str, ...] | None, list] = {}
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
        """The catalog columns of the field this selection reads (read-only numpy arrays: ids, shard, offset,
        nbytes, dtype, ndim, dims); of the first field when it reads whole entries of several fields."""
        return self._columns

    @property
    def entry_columns(self) -> EntryColumns:
        """The catalog columns of every field of the entries, and the store's alignment."""
        return self._entries

    # --- fields and aligned crops ---------------------------------------------------------------------------
    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the entries' fields, sorted (``()`` for entries that are bare arrays)."""
        return self._entries.names if self._entries.named else ()

    def _no_field(self, name: Any) -> FieldError:
        if not self._entries.named:
            return FieldError(
                f"{self._store.root}: the entries are bare arrays, with no named fields (asked for {name!r}): index "
                "the selection directly."
            )
        return FieldError(
            f"{self._store.root}: no field {name!r}; the entries have fields {', '.join(map(repr, self.fields))}."
        )

    def field(self, name: str) -> Selection:
        """The Selection of field ``name`` of these entries: a list of arrays with every feature of one (indexing,
        batching, randslice, scatter, transforms), at the same generation."""
        if not self._entries.named or name not in self._entries.names:
            raise self._no_field(name)
        return Selection(self._store, self._entries, **{**self.options(), "field": name}, generation=self._generation)

    def one_field_error(self, what: str) -> FieldError:
        """The error for ``what``, which needs one field of entries that have several."""
        first = self.fields[0]
        return FieldError(
            f"{what} needs one field: the entries have fields {', '.join(map(repr, self.fields))}; choose one with "
            f"sel.field(name) (e.g. sel.field({first!r})), or entry[{first!r}] for one entry's view."
        )

    @property
    def field_name(self) -> str | None:
        """The field this selection reads (``""`` for bare arrays), or None when it reads whole entries of named
        fields (as dicts)."""
        return self._field

    def _check_one_field(self, what: str) -> None:
        if self._field is None:
            raise self.one_field_error(what)

    @property
    def alignment(self) -> dict[str, tuple[int, int]]:
        """The store's alignment spec: ``{field: (axis, rate)}`` (empty when the store has none)."""
        a = self._entries.alignment
        return {f: (a.axes[f], a.rates[f]) for f in sorted(a.rates)}

    @property
    def steps(self) -> np.ndarray:
        """Each entry's aligned length in steps (int64): the minimum over the aligned fields of
        ``shape[axis] // rate``."""
        if not self._entries.alignment:
            raise FieldError(
                f"{self._store.root}: the store has no alignment spec, so its entries have no steps: compile with "
                "align={field: (axis, rate)}."
            )
        if self._steps is None:
            self._steps = self._entries.steps()
        return self._steps

    def crop(self, i: int, start: int, length: int, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The window of ``length`` steps from step ``start`` of entry ``i``: each aligned field's samples
        ``[start * rate, (start + length) * rate)`` on its time axis (other axes whole), each other field whole;
        only ``fields`` when given (the others are not read). IndexError when the window is not inside the
        entry's steps."""
        steps = self.steps
        i = self._position(i)
        start, length = _step_count("start", start), _step_count("length", length)
        if start < 0 or length < 0 or start + length > steps[i]:
            raise IndexError(
                f"entry {self._key(i)!r}: crop [{start}, {start + length}) is outside its {int(steps[i])} steps."
            )
        return self._window(i, start, length, length, fields)

    def random_crop(
        self,
        i: int,
        length: int,
        rng: np.random.Generator | None = None,
        pad: bool = False,
        fields: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """A crop of ``length`` steps of entry ``i`` from a start drawn uniformly by ``rng`` (by default the
        selection's generator, see ``rng()``). An entry shorter than ``length`` steps raises IndexError naming it,
        unless ``pad=True``: then its whole aligned length is read and each aligned field is padded with zeros at
        the end of its time axis to ``length * rate`` samples."""
        i = self._position(i)
        n = int(self.steps[i])
        length = _step_count("length", length)
        if n < length:
            if not pad:
                raise IndexError(
                    f"entry {self._key(i)!r} has {n} steps, fewer than the crop's {length}: select longer entries "
                    "(sel.where(...)), or pass pad=True to pad it with zeros."
                )
            return self._window(i, 0, n, length, fields)
        if length < 0:
            raise IndexError(f"a crop's length is a number of steps >= 0, not {length}")
        start = int((rng if rng is not None else self.rng()).integers(0, n - length + 1))
        return self._window(i, start, length, length, fields)

    def _window(
        self, i: int, start: int, length: int, padded: int, fields: Sequence[str] | None
    ) -> dict[str, np.ndarray]:
        """Each of ``fields`` (all when None) of entry ``i``: the aligned ones cut to ``length`` steps from
        ``start`` and zero-padded to ``padded`` steps, the others whole."""
        out = {}
        for name, view, axis, rate in self._crop_plan(fields):
            x = view._mapped(i)
            if rate:
                axis = field_axis(axis, x.ndim)
                x = x[(slice(None),) * axis + (slice(start * rate, (start + length) * rate),)]
                if padded > length:
                    widths = [(0, 0)] * x.ndim
                    widths[axis] = (0, (padded - length) * rate)
                    out[name] = np.pad(x, widths).astype(self._dtype or x.dtype, copy=False)
                    continue
            out[name] = np.array(x, dtype=self._dtype) if self._dtype is not None else x.copy()
        return out

    def _crop_plan(self, fields: Sequence[str] | None) -> list[tuple[str, Selection, int, int]]:
        """``(name, field's selection, time axis, rate)`` of each of ``fields``; rate 0 for an unaligned field."""
        key = None if fields is None else tuple(fields)
        plan = self._plans.get(key)
        if plan is None:
            a = self._entries.alignment
            plan = [(n, self._view(n), a.axes.get(n, 0), a.rates.get(n, 0)) for n in self.check_fields(fields)]
            self._plans[key] = plan
        return plan

    def check_fields(self, fields: Sequence[str] | None) -> tuple[str, ...]:
        """``fields`` (all of the entries' fields when None), each checked to be one of them."""
        if fields is None:
            return self._entries.names
        if isinstance(fields, str):
            raise TypeError(f"fields is a list of field names, not the string {fields!r}: write ({fields!r},)")
        for name in fields:
            if name not in self.fields:
                raise self._no_field(name)
        return tuple(fields)

    def _view(self, name: str) -> Selection:
        """The selection of field ``name`` (kept: crops read it for every entry)."""
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = self if name == self._field else self.field(name)
        return view

    def _key(self, i: int) -> str:
        return self._store.keys_of(self._columns.ids[i : i + 1], self._generation)[0]

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
        self._check_one_field("sel.shape_of(i)")
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
        self._check_one_field("sel.dtype_of(i)")
        return self._columns.dtypes[self._columns.dtype[self._position(i)]]

    @property
    def nbytes(self) -> int:
        """Bytes of array data the selection covers (of every field, when it reads whole entries)."""
        parts = self._entries.parts if self._field is None else (self._columns,)
        return sum(int(c.nbytes.sum()) for c in parts)

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
        return self._derive(self._entries.take(np.atleast_1d(positions)))

    def _derive(self, columns: EntryColumns) -> Selection:
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
            "field": self._field,
        }

    # --- the list view of the seed project (shape, dtype, transforms, scatter) --------------------------------
    def _item_ranges(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per ndim present, the (min, max) stored size of each axis of the items."""
        self._check_one_field("sel.shape")
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
        self._check_one_field("sel.dtype")
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
        self._check_one_field("sel.show(i)")
        entry = self.by_key(i) if isinstance(i, str) else self.entry(i)
        return entry_figure(entry.key, np.asarray(entry), entry.metadata)

    def plot(self, key: str):
        """A matplotlib Figure of how metadata ``key`` is spread over this selection: a histogram for numbers, bars
        of counts for strings, with the number of entries without a value. Needs the ``plot`` extra."""
        values = self.metadata_columns([key])[key]
        what = f"{len(self)} entries" + (f" where {self._query}" if self._query else "")
        return distribution_figure(key, np.asarray(values, dtype=object), what)

    def rows(self) -> list[dict[str, Any]]:
        """``{"key", "shape", "dtype", "metadata"}`` for each entry, in order (what ``lardon-store ls`` prints);
        entries with named fields have ``"fields": {name: {"shape", "dtype"}}`` instead of shape and dtype."""
        ids = self.ids.tolist()
        with self._store.engine.connect() as conn:
            found = rows_of(conn, ids)
        views = [(name, self._view(name)) for name in self.fields] if self._field is None else []
        out = []
        for pos, eid in enumerate(ids):
            key, md = found[eid]
            if views:
                described = {"fields": {n: {"shape": list(v.shape_of(pos)), "dtype": v.dtype_of(pos).str}
                                        for n, v in views}}  # fmt: skip
            else:
                described = {"shape": list(self.shape_of(pos)), "dtype": self.dtype_of(pos).str}
            out.append({"key": key, **described, "metadata": json.loads(md)})
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
        entries = columns_of_ids(self._store, self._columns.ids, self._generation)
        columns = entries.part(self._field if self._field is not None else entries.names[0])
        s = columns.shard[i]
        if columns.shard_paths[s] == self._columns.shard_paths[self._columns.shard[i]]:
            key = self._store.keys_of(columns.ids[i : i + 1])[0]
            raise ShardMissingError(
                f"entry {key!r}: {self._store.root / columns.shard_paths[s]}: shard file is missing; run "
                "`lardon-store verify`."
            )
        self._entries, self._columns = entries, columns
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
        if self._field is None:
            if index:
                raise self.one_field_error("sel[i, ...]")
            x, used = {name: self._view(name)._read(i, ()) for name in self._entries.names}, ()
        else:
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
            if self._field is None and self.batch_mode != "list":
                raise self.one_field_error(f"batch_mode={self.batch_mode!r}")
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
        state["_rng_state"], state["_views"], state["_plans"] = None, {}, {}
        return state


def _step_count(name: str, value: Any) -> int:
    """``value`` as an int: a crop's start or length."""
    if type(value) is int:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, np.integer):
        raise TypeError(f"crop {name} must be an int, not {type(value).__name__}")
    return int(value)


class Entry:
    """A lazy view of one entry: indexing composes numpy indices; ``np.asarray(entry)`` reads the bytes."""

    __slots__ = ("_sel", "_pos", "_chain", "_shape")

    def __init__(self, selection: Selection, position: int, chain: tuple[tuple, ...]):
        self._sel = selection
        self._pos = position
        self._chain = chain
        self._shape = view_shape(selection.shape_of(position), chain) if selection.field_name is not None else None

    def __getitem__(self, index: Any) -> Entry:
        if isinstance(index, str) and not self._chain:
            return self._sel.field(index).entry(self._pos)  # (one field of an entry with named fields)
        if self._shape is None:
            raise self._sel.one_field_error("entry[...]")
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
        if self._shape is None:
            raise self._sel.one_field_error("entry.shape")
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._sel.dtype_of(self._pos)

    @property
    def nbytes(self) -> int:
        """Bytes of this view once read."""
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize

    @property
    def metadata(self) -> dict[str, Any]:
        return self._sel.metadata(self._pos)

    def __len__(self) -> int:
        if self._shape is None:
            raise self._sel.one_field_error("len(entry)")
        if not self._shape:
            raise TypeError("len() of a 0-d entry view")
        return self._shape[0]

    def read(self) -> np.ndarray | dict[str, np.ndarray]:
        """The view's values as a new array (a numpy scalar for a 0-d view); a dict of whole arrays for an entry
        with named fields."""
        if self._shape is None:
            return self._sel[self._pos]
        x = self._sel._mapped(self._pos)
        for index in self._chain:
            x = x[index]
        return x.copy() if isinstance(x, np.ndarray) else x

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if self._shape is None:
            raise self._sel.one_field_error("np.asarray(entry)")
        x = np.asarray(self.read())
        return x.astype(dtype, copy=False) if dtype is not None else x

    def __repr__(self) -> str:
        if self._shape is None:
            return f"<Entry {self._pos} fields={self._sel.fields}>"
        return f"<Entry {self._pos} shape={self._shape} dtype={self.dtype}>"


class ScatteredSelection(Selection):
    """A list whose items are the sub-arrays of another list's items along one axis (built by ``scatter``)."""

    def __init__(self, base: Selection, base_pos: np.ndarray, sub: np.ndarray, axis: int, **options: Any):
        super().__init__(base.store, base.entry_columns.take(base_pos), **options, generation=base.generation)
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
    if sel.field_name is None:
        raise sel.one_field_error("sel.scatter(axis)")
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
