"""The public façade: ``Store``, and the functions that return one (``open_store``, ``compile``, ``migrate_store``).

A Store is the handle on one store folder (``catalog.sqlite`` + ``blobs/``) with the query and selection API on
top. It offers the list view of all its entries directly (``store[3, :, 10:20]``, ``len(store)``, ``store.keys``),
each method written out on the class, so that a typo is an AttributeError naming Store. Opening reads no entry row:
only the catalog's header and revision.

A Store is always current: each call sees the latest committed generation (one cheap check when nothing changed).
A Selection it returns is pinned to the generation it was made at; ``at(g)`` and ``from_manifest(m)`` give older
ones back while gc's retention keeps them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import and_

from .catalog.engine import read_errors
from .catalog.reads import current_generation, history, load_columns, summary
from .catalog.schema import entries
from .compiler.callback import Callback, default_callback
from .compiler.pipeline import CompileSummary, compile_store
from .errors import LardonStoreError, ReadOnlyStoreError
from .format.columns import Columns
from .format.layout import DEFAULT_MAX_SHARD_BYTES
from .handle import StoreHandle
from .info import Generation, StoreInfo
from .maintenance.gc import DEFAULT_KEEP_SECONDS, gc_store
from .maintenance.verify import VerifyReport, verify_store
from .query.evaluate import columns_at, columns_of_ids, distinct, live_columns, matching_columns, metadata_keys
from .query.expressions import Expr
from .query.parser import combine
from .query.snapshot import release, snapshot_of
from .selection.selection import MANIFEST_FORMAT, Entry, Selection

__all__ = ["Store", "compile", "migrate_store", "open_store"]


class Store(StoreHandle):
    """A store folder, opened read-only (the default) or writable."""

    def __init__(
        self, root: str | os.PathLike, readonly: bool = True, immutable: bool = False, catalog: str | None = None
    ):
        super().__init__(root, readonly, immutable, catalog)
        self._all: tuple[object, Selection] | None = None
        self.last_compile: CompileSummary | None = None

    # --- generations ----------------------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """The latest committed generation (it grows with every compile batch, gc, parser block, import)."""
        return snapshot_of(self).generation

    def history(self) -> list[Generation]:
        """Every generation: its number, UTC time, operation, and the entries it added and removed."""
        with read_errors(self.catalog), self.engine.connect() as conn:
            rows = history(conn)
        return [Generation(g, datetime.fromisoformat(t), op, a, r) for g, t, op, a, r in rows]

    def at(self, generation: int) -> Selection:
        """The Selection of the entries live at ``generation`` (GenerationExpiredError once gc reclaimed it)."""
        return Selection(self, columns_at(self, generation), generation=int(generation))

    def from_manifest(self, manifest: dict[str, Any]) -> Selection:
        """The Selection a manifest (``Selection.manifest()``) describes: the same entries, in the same order, with
        the same bytes. LardonStoreError for a manifest of another store, GenerationExpiredError once gc reclaimed
        its generation."""
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise LardonStoreError(f"not a lardon_store manifest (its 'format' must be {MANIFEST_FORMAT!r}).")
        if manifest.get("store_id") != self.store_id:
            raise LardonStoreError(
                f"{self.root}: the manifest is of store {manifest.get('store_id')!r}, this is store "
                f"{self.store_id!r}: open the store the manifest was made from (or a copy of it)."
            )
        generation, ids = manifest.get("generation"), manifest.get("ids")
        if not isinstance(ids, list) or not all(type(i) is int for i in ids):
            raise LardonStoreError("the manifest's 'ids' must be a list of entry ids.")
        alive = columns_at(self, generation).ids  # (checks that the generation exists and is kept)
        wanted = np.array(ids, np.int64)
        if not np.isin(wanted, alive).all():
            raise LardonStoreError(
                f"{self.root}: the manifest names entries that were not live at generation {generation}: it was not "
                "made from this store's history."
            )
        columns = columns_of_ids(self, wanted, generation)
        return Selection(self, columns, generation=generation, query=manifest.get("query"))

    # --- selections -----------------------------------------------------------------------------------------
    def select(
        self, condition: Any = None, *, order_by: Any = None, limit: int | None = None, **options: Any
    ) -> Selection:
        """The Selection of the live entries matching an SQLAlchemy ``condition`` on ``entries`` (all when None), in
        key order unless ``order_by``; ``options`` are Selection's reading options (``batch_mode``, ``dtype``...)."""
        if condition is None and order_by is None and limit is None:
            columns, generation = live_columns(self)
            return Selection(self, columns, **options, generation=generation)
        live = entries.c.died.is_(None)
        with self.engine.begin() as conn:  # (one read transaction: the rows and their generation agree)
            generation = current_generation(conn)
            where = live if condition is None else and_(live, condition)
            columns = load_columns(conn, str(self.root), where, order_by=order_by, limit=limit)
        return Selection(self, columns, **options, generation=generation)

    def where(self, *conditions: Expr | str, **equals: Any) -> Selection:
        """The live entries matching every condition: ``meta`` expressions, query strings, or ``key=value``
        equalities, pinned to the latest generation.

        Example: ``store.where(meta.instrument == "violin", "pitch > 60", split="train")``.
        """
        expr = combine(conditions, equals)
        columns, generation = matching_columns(self, expr)
        return Selection(self, columns, generation=generation, query=str(expr))

    def metadata_keys(self) -> dict[str, dict[str, int]]:
        """Each metadata key with the number of entries holding it, per value type."""
        return metadata_keys(self)

    def distinct(self, key: str, by_type: bool = False) -> dict[Any, int]:
        """Each value of metadata ``key`` with its number of entries, most frequent first."""
        return distinct(self, key, by_type)

    def all(self) -> Selection:
        """The Selection of every live entry, in key order, pinned to the latest generation (made again only when
        something was committed since the last call)."""
        snap = snapshot_of(self)
        if self._all is None or self._all[0] is not snap:
            columns, generation = live_columns(self)
            self._all = (snap, Selection(self, columns, generation=generation))
        return self._all[1]

    def refresh(self) -> Store:
        """Free the query snapshot and its connection (the next call loads them again). Never needed to see new
        commits: every call checks for them."""
        self._all = None
        release(self)
        return self

    # --- the list of all entries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.all())

    def __getitem__(self, key: Any) -> Any:
        return self.all()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.all())

    @property
    def ids(self) -> np.ndarray:
        """The catalog ids of every entry, in key order."""
        return self.all().ids

    @property
    def keys(self) -> list[str]:
        """Every entry's key, sorted."""
        return self.all().keys

    @property
    def nbytes(self) -> int:
        """Bytes of array data in the store."""
        return self.all().nbytes

    @property
    def shape(self) -> tuple:
        """``(len, *dims)`` of the entries; a dimension that varies is ``(min, max)``."""
        return self.all().shape

    @property
    def ndim(self) -> int:
        """``len(self.shape)``."""
        return self.all().ndim

    @property
    def dtype(self) -> np.dtype:
        """numpy's common type of the entries."""
        return self.all().dtype

    def shape_of(self, i: int) -> tuple[int, ...]:
        """The stored shape of entry ``i``."""
        return self.all().shape_of(i)

    def dtype_of(self, i: int) -> np.dtype:
        """The stored dtype of entry ``i``."""
        return self.all().dtype_of(i)

    def metadata(self, i: int) -> dict[str, Any]:
        """The metadata dict of entry ``i``."""
        return self.all().metadata(i)

    def entry(self, i: int) -> Entry:
        """A lazy view of entry ``i``."""
        return self.all().entry(i)

    def by_key(self, key: str) -> Entry:
        """The lazy view of the entry whose key is ``key`` (EntryNotFoundError when there is none)."""
        return self.all().by_key(key)

    def take(self, positions: Any) -> Selection | Entry:
        """The selection of the entries at ``positions`` (see ``Selection.take``)."""
        return self.all().take(positions)

    def order_by(self, key: str, descending: bool = False) -> Selection:
        """Every entry, sorted by metadata ``key`` (see ``Selection.order_by``)."""
        return self.all().order_by(key, descending)

    def limit(self, n: int) -> Selection:
        """The first ``n`` entries in key order."""
        return self.all().limit(n)

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the entries' fields, sorted (``()`` for a store of bare arrays)."""
        return self.all().fields

    def field(self, name: str) -> Selection:
        """The Selection of field ``name`` of every entry (see ``Selection.field``)."""
        return self.all().field(name)

    @property
    def alignment(self) -> dict[str, tuple[int, int]]:
        """The store's alignment spec: ``{field: (axis, rate)}`` (empty when it has none)."""
        return self.all().alignment

    @property
    def steps(self) -> np.ndarray:
        """Each entry's aligned length in steps (see ``Selection.steps``)."""
        return self.all().steps

    def crop(self, i: int, start: int, length: int, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The aligned window of ``length`` steps from ``start`` of entry ``i`` (see ``Selection.crop``)."""
        return self.all().crop(i, start, length, fields)

    def random_crop(
        self,
        i: int,
        length: int,
        rng: np.random.Generator | None = None,
        pad: bool = False,
        fields: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """An aligned crop of ``length`` steps of entry ``i`` at a random start (see ``Selection.random_crop``)."""
        return self.all().random_crop(i, length, rng, pad, fields)

    def metadata_columns(self, keys: list[str]) -> dict[str, np.ndarray]:
        """One numpy array of values per metadata key over every entry (see ``Selection.metadata_columns``)."""
        return self.all().metadata_columns(keys)

    def rows(self) -> list[dict[str, Any]]:
        """``{"key", "shape", "dtype", "metadata"}`` of every entry, in key order."""
        return self.all().rows()

    def show(self, i: int | str):
        """A matplotlib Figure of entry ``i`` (a position or a key); see ``Selection.show``."""
        return self.all().show(i)

    def plot(self, key: str):
        """A matplotlib Figure of how metadata ``key`` is spread over every entry; see ``Selection.plot``."""
        return self.all().plot(key)

    # --- summary and maintenance ----------------------------------------------------------------------------
    def info(self) -> StoreInfo:
        """A summary: entries, bytes, dtypes, shape ranges per ndim, metadata keys, shards, failed sources."""
        with read_errors(self.catalog), self.engine.connect() as conn:
            counts = summary(conn)
        everything = self.all()
        ranges = {name: _shape_ranges(everything.entry_columns.part(name)) for name in everything.entry_columns.names}
        failed = [{"path": p, "error": e} for p, e in counts.pop("failed_sources")]
        return StoreInfo(
            root=str(self.root), revision=self.revision(), shape_ranges=ranges.pop("", {}), failed_sources=failed,
            fields=ranges, alignment=everything.alignment, catalog=str(self.catalog), **counts,
        )  # fmt: skip

    def gc(self, keep_seconds: float = DEFAULT_KEEP_SECONDS, keep_generations: int = 0) -> int:
        """Reclaim the bytes no generation inside the retention can reach (see ``gc_store``); return the bytes freed.
        Takes the write lock; a read-only Store refuses (open it with ``readonly=False``)."""
        if self.readonly:
            raise ReadOnlyStoreError(
                f"{self.root}: this store was opened read-only: open it with lardon_store.open(path, readonly=False) "
                "to gc it, or run `lardon-store gc`."
            )
        freed = gc_store(self.root, keep_seconds=keep_seconds, keep_generations=keep_generations)
        self.refresh()
        return freed

    def verify(self) -> VerifyReport:
        """Check every shard and entry checksum; return a VerifyReport naming damaged entries and sources."""
        return verify_store(self.root)


def _shape_ranges(c: Columns) -> dict[int, tuple[list[int], list[int]]]:
    """Per ndim present, the (min, max) size of each axis of the arrays of ``c``."""
    ranges = {}
    for nd in np.unique(c.ndim).tolist():
        rows = c.dims[c.ndim == nd, :nd]
        ranges[nd] = (rows.min(axis=0).tolist(), rows.max(axis=0).tolist())
    return ranges


def open_store(
    path: str | os.PathLike, readonly: bool = True, immutable: bool = False, catalog: str | None = None
) -> Store:
    """Open the store at ``path``: read-only by default (``readonly=False`` to write, upgrading an old catalog).

    A read-only store opens on read-only media too. ``immutable=True`` tells SQLite that nobody writes the catalog
    while it is open (no locking, no WAL): for a published store on a network filesystem. Concurrent writers with
    readers on other hosts need the PostgreSQL catalog instead.

    A store whose catalog is in PostgreSQL is found through the folder's ``catalog.url``; ``catalog=URL`` (or the
    environment variable ``LARDON_STORE_CATALOG``) overrides it, e.g. when the database moved."""
    if immutable and not readonly:
        raise ValueError("immutable=True opens a store read-only: leave readonly at its default (True).")
    return Store(path, readonly=readonly, immutable=immutable, catalog=catalog)


def migrate_store(path: str | os.PathLike, catalog: str | None = None) -> str:
    """Upgrade the catalog at ``path`` to this version's schema (a no-op when current); return its revision."""
    return Store(path, readonly=False, catalog=catalog).revision() or ""


def compile(  # noqa: A001 - the public name, as in the seed project
    source: str | os.PathLike,
    target: str | os.PathLike,
    callback: Callback = default_callback,
    valid_exts: Sequence[str] | None = None,
    *,
    force: bool = False,
    callback_version: str | None = None,
    on_error: str = "raise",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 0,
    exclude: Sequence[str] = (),
    align: dict[str, tuple[int, int]] | None = None,
    align_tolerance: int | None = None,
    executor: Executor | None = None,
    catalog: str | None = None,
) -> Store:
    """Compile the files of ``source`` into the store at ``target`` and return it (read-only, holding no lock).

    ``callback(path)`` returns ``(array, metadata_dict)`` or a list of such pairs; ``(dict_of_arrays, metadata)``
    gives entries with named fields, and ``align={field: (axis, rate)}`` lines their time axes up (``steps``,
    ``crop``; an entry whose aligned fields differ by more than ``align_tolerance`` steps, by default the recorded
    tolerance or 2, is refused). On an
    existing store only new and
    changed sources run it, deleted ones are removed; ``force=True`` redoes everything, and so does a new
    ``callback_version`` (by default a fingerprint of the callback's code). ``on_error="skip"`` records a failing
    source in the catalog and goes on; the default raises CallbackError.
    ``workers=N`` runs the callbacks in N processes (the callback must pickle); the store is the same as with the
    default ``workers=0``, which runs them in this process (so lambdas and local functions work). ``executor=``
    (any ``concurrent.futures.Executor``, e.g. a Dask cluster's ``client.get_executor()``) runs them as compile
    tasks that write their own shards on the store's (shared) folder; the entries are the same as with
    ``workers=0``. ``catalog="postgresql+psycopg://user@host/db"`` puts a new store's catalog in that PostgreSQL
    database (the folder records the URL, without password, in ``catalog.url``).
    ``exclude`` globs leave sources out (as if absent); a source that failed and has not changed since is reported in
    the summary's ``known_failures`` instead of being run (and failing) again.
    The summary (a CompileSummary) is in the returned store's ``last_compile``.
    """
    summary = compile_store(
        source, target, callback, valid_exts, force=force, callback_version=callback_version, on_error=on_error,
        max_shard_bytes=max_shard_bytes, progress=progress, workers=workers, exclude=exclude, align=align,
        align_tolerance=align_tolerance, executor=executor, catalog=catalog,
    )  # fmt: skip
    store = Store(target, readonly=True, catalog=catalog)
    store.last_compile = summary
    return store
