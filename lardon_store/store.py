"""The public façade: ``Store``, and the functions that return one (``open_store``, ``compile``, ``migrate_store``).

A Store is the handle on one store folder (``catalog.sqlite`` + ``blobs/``) with the query and selection API on
top. It offers the list view of all its entries directly (``store[3, :, 10:20]``, ``len(store)``, ``store.keys``),
each method written out on the class, so that a typo is an AttributeError naming Store. Opening reads no entry row:
only the catalog's header and revision.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .catalog.reads import summary
from .compiler.callback import Callback, default_callback
from .compiler.pipeline import CompileSummary, compile_store
from .format.layout import DEFAULT_MAX_SHARD_BYTES
from .handle import StoreHandle
from .info import StoreInfo
from .maintenance.gc import gc_store
from .maintenance.verify import VerifyReport, verify_store
from .query.evaluate import all_columns, distinct, matching_columns, metadata_keys
from .query.expressions import Expr
from .query.parser import combine
from .query.snapshot import release
from .selection.selection import Entry, Selection

__all__ = ["Store", "compile", "migrate_store", "open_store"]


class Store(StoreHandle):
    """A store folder, opened read-only (the default) or writable."""

    def __init__(self, root: str | os.PathLike, readonly: bool = True):
        super().__init__(root, readonly)
        self._all: Selection | None = None
        self.last_compile: CompileSummary | None = None

    # --- selections -----------------------------------------------------------------------------------------
    def select(
        self, condition: Any = None, *, order_by: Any = None, limit: int | None = None, **options: Any
    ) -> Selection:
        """The Selection of the entries matching an SQLAlchemy ``condition`` on ``entries`` (all when None), in key
        order unless ``order_by``; ``options`` are Selection's reading options (``batch_mode``, ``dtype``...)."""
        return Selection(self, self.load_columns(condition, order_by=order_by, limit=limit), **options)

    def where(self, *conditions: Expr | str, **equals: Any) -> Selection:
        """The entries matching every condition: ``meta`` expressions, query strings, or ``key=value`` equalities.

        Example: ``store.where(meta.instrument == "violin", "pitch > 60", split="train")``.
        """
        return Selection(self, matching_columns(self, combine(conditions, equals)))

    def metadata_keys(self) -> dict[str, dict[str, int]]:
        """Each metadata key with the number of entries holding it, per value type."""
        return metadata_keys(self)

    def distinct(self, key: str, by_type: bool = False) -> dict[Any, int]:
        """Each value of metadata ``key`` with its number of entries, most frequent first."""
        return distinct(self, key, by_type)

    def all(self) -> Selection:
        """The Selection of every entry, in key order (loaded once, then cached; see ``refresh``)."""
        if self._all is None:
            self._all = Selection(self, all_columns(self))
        return self._all

    def refresh(self) -> Store:
        """Forget the cached selection of all entries (and free the query snapshot), so the next use sees the
        catalog as it is now. Queries need no refresh: each one checks that its snapshot is current."""
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

    def metadata_columns(self, keys: list[str]) -> dict[str, np.ndarray]:
        """One numpy array of values per metadata key over every entry (see ``Selection.metadata_columns``)."""
        return self.all().metadata_columns(keys)

    def rows(self) -> list[dict[str, Any]]:
        """``{"key", "shape", "dtype", "metadata"}`` of every entry, in key order."""
        return self.all().rows()

    # --- summary and maintenance ----------------------------------------------------------------------------
    def info(self) -> StoreInfo:
        """A summary: entries, bytes, dtypes, shape ranges per ndim, metadata keys, shards, failed sources."""
        with self.engine.connect() as conn:
            counts = summary(conn)
        c = self.all().columns
        ranges: dict[int, tuple[list[int], list[int]]] = {}
        for nd in np.unique(c.ndim).tolist():
            rows = c.dims[c.ndim == nd, :nd]
            ranges[nd] = (rows.min(axis=0).tolist(), rows.max(axis=0).tolist())
        failed = [{"path": p, "error": e} for p, e in counts.pop("failed_sources")]
        return StoreInfo(
            root=str(self.root), revision=self.revision(), shape_ranges=ranges, failed_sources=failed, **counts
        )

    def gc(self) -> int:
        """Reclaim dead shard bytes (see ``gc_store``); return the bytes freed. Takes the write lock."""
        freed = gc_store(self.root)
        self.refresh()
        return freed

    def verify(self) -> VerifyReport:
        """Check every shard and entry checksum; return a VerifyReport naming damaged entries and sources."""
        return verify_store(self.root)


def open_store(path: str | os.PathLike, readonly: bool = True) -> Store:
    """Open the store at ``path``: read-only by default (``readonly=False`` to write, upgrading an old catalog)."""
    return Store(path, readonly=readonly)


def migrate_store(path: str | os.PathLike) -> str:
    """Upgrade the catalog at ``path`` to this version's schema (a no-op when current); return its revision."""
    return Store(path, readonly=False).revision() or ""


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
) -> Store:
    """Compile the files of ``source`` into the store at ``target`` and return it (read-only, holding no lock).

    ``callback(path)`` returns ``(array, metadata_dict)`` or a list of such pairs. On an existing store only new and
    changed sources run it, deleted ones are removed; ``force=True`` redoes everything, and so does a new
    ``callback_version`` (by default a fingerprint of the callback's code). ``on_error="skip"`` records a failing
    source in the catalog and goes on (it is retried next time); the default raises CallbackError.
    ``workers=N`` runs the callbacks in N processes (the callback must pickle); the store is the same as with the
    default ``workers=0``, which runs them in this process (so lambdas and local functions work).
    The summary (a CompileSummary) is in the returned store's ``last_compile``.
    """
    summary = compile_store(
        source, target, callback, valid_exts, force=force, callback_version=callback_version, on_error=on_error,
        max_shard_bytes=max_shard_bytes, progress=progress, workers=workers,
    )  # fmt: skip
    store = Store(target, readonly=True)
    store.last_compile = summary
    return store
