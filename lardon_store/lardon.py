"""The front end of the seed project ``lardon``: ``import lardon_store as lardon`` runs its README.

``compile``, ``default_callback``, ``randslice`` and ``scatter`` are the store's own; this module adds ``checkdir``,
``parse_folder`` (open a store as the seed's list) and ``LardonParser`` (register arrays inside a ``with`` block,
committed atomically on exit).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection

from .catalog.engine import catalog_path, checkpoint
from .catalog.reads import id_of, keys_with_prefix
from .catalog.writer import CatalogWriter, retire_all, retire_keys
from .compiler.callback import default_callback, prepare, split_result
from .compiler.scan import entry_key, scan
from .errors import EntryNotFoundError, InvalidDataError, LegacyNotImportedError
from .format.layout import CATALOG_URL_NAME, DEFAULT_MAX_SHARD_BYTES, LEGACY_CATALOG
from .handle import StoreHandle
from .io.lock import store_lock
from .selection.selection import Selection, scatter
from .store import Store

__all__ = ["LardonParser", "checkdir", "parse_folder", "scatter"]  # scatter: the selection layer's, re-exported


def checkdir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) if it does not exist; return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(path: str | os.PathLike) -> Store:
    root = Path(path)
    new = not catalog_path(root).is_file() and not (root / CATALOG_URL_NAME).is_file()
    if new and (root / LEGACY_CATALOG).is_file():
        raise LegacyNotImportedError(
            f"{root}: this is a folder of the original lardon ({LEGACY_CATALOG}) with no lardon_store catalog yet. "
            f"Import it once (its files stay in place): lardon_store.import_lardon({str(root)!r}) or "
            f"`lardon-store import-lardon {root}`."
        )
    return Store(root, readonly=True)


def _positions_of(store: Store, names: Iterable[str]) -> np.ndarray:
    """Positions in ``store.all()`` of entries named by key or by source file name (extension optional)."""
    sel = store.all()
    where = {int(eid): i for i, eid in enumerate(sel.ids.tolist())}
    out = []
    with store.engine.connect() as conn:
        for name in names:
            name = Path(str(name)).as_posix()
            eid = None
            for key in (name, entry_key(name)):
                eid = id_of(conn, key)
                if eid is not None:
                    break
            if eid is None:
                raise EntryNotFoundError(f"{store.root}: no entry for file {name!r} (keys are paths without extension)")
            out.append(where[eid])
    return np.array(out, dtype=np.int64)


def parse_folder(
    path: str | os.PathLike,
    drop_metadata: bool = False,
    *,
    files: Iterable[str] | None = None,
    dtype: Any = None,
    batch_mode: str = "list",
    batch_args: dict[str, Any] | None = None,
    return_metadata: bool = False,
    return_indices: bool = False,
    seed: int | None = None,
) -> Selection:
    """Open the store at ``path`` read-only and return the list of its entries (a Selection), in key order.

    ``drop_metadata=True`` (or ``return_metadata=True``) makes each item ``(data, metadata)``, which is what the
    seed README's quick start reads. ``files`` restricts the list to those entries (keys, or source file names with
    their extension), in that order. ``dtype`` converts each item read. ``return_indices=True`` appends to each
    item the index actually read (randslice draws included): indexing the list with it reads the same data again.
    ``seed`` seeds the generator randslice draws from. A folder of the original lardon must be imported first
    (``import_lardon``); opening one without a catalog raises LegacyNotImportedError saying how.
    """
    store = _open(path)
    options = {
        "batch_mode": batch_mode,
        "batch_args": batch_args,
        "seed": seed,
        "dtype": dtype,
        "return_metadata": bool(drop_metadata or return_metadata),
        "return_indices": return_indices,
    }
    sel = store.select(**options)
    if files is not None:
        sel = sel.take(_positions_of(store, files))
    return sel


class LardonParser:
    """Register arrays into a store inside a ``with`` block; everything registered commits at once on exit.

    ``LardonParser(data_path, parsed_path, callback=default_callback, valid_exts=None, force=False)``. Iterating the
    parser yields the files of ``data_path`` (sorted, filtered by ``valid_exts``); ``data_path=None`` is allowed
    for generated data (the parser then has nothing to iterate). ``register(data, metadata, filename=None)``
    appends the array's bytes; its entry key is ``filename`` relative to ``data_path`` without extension, or
    ``data_<n>`` without a filename. A ``filename`` (str or path) given *as data* is read with ``callback``, so
    the seed README's ``parser.register(f, {}, f)`` stores the file's array.

    The store's write lock is held from ``__enter__`` to ``__exit__``. On a clean exit the catalog rows commit in
    one transaction; an exception inside the block commits nothing (the bytes already appended stay unreferenced
    until ``gc``). Registering a key the store already holds replaces that entry at commit; ``force=True`` also
    removes every entry this block did not register (the seed erased the whole folder).
    """

    def __init__(
        self,
        data_path: str | os.PathLike | None,
        parsed_path: str | os.PathLike,
        callback: Callable[[str], Any] | None = None,
        valid_exts: Iterable[str] | None = None,
        force: bool = False,
        *,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    ):
        self.data_path = Path(data_path).absolute() if data_path is not None else None
        self.parsed_path = Path(parsed_path).absolute()
        self.callback = callback or default_callback
        self.valid_exts = list(valid_exts) if valid_exts is not None else None
        self.force = force
        self.max_shard_bytes = max_shard_bytes
        self._stack: ExitStack | None = None
        self._writer: CatalogWriter | None = None
        self._keys: set[str] = set()
        self._next_auto = 0
        self.store: StoreHandle | None = None

    def __enter__(self) -> LardonParser:
        if self.data_path is not None and not self.data_path.is_dir():
            raise FileNotFoundError(f"{self.data_path}: the data folder does not exist.")
        stack = ExitStack()
        try:
            stack.enter_context(store_lock(self.parsed_path))
            self.store = StoreHandle.create(self.parsed_path)
            stack.enter_context(self.store.writing())
            self._writer = CatalogWriter(self.store.engine, self.store.root, self.max_shard_bytes, "lardon parser")
            stack.callback(self._writer.close)
            if not self.force:
                with self.store.engine.connect() as conn:
                    auto = keys_with_prefix(conn, "data_")
                numbers = [int(m.group(1)) for k in auto if (m := re.fullmatch(r"data_(\d+)", k))]
                self._next_auto = max(numbers, default=-1) + 1
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __iter__(self) -> Iterator[str]:
        if self.data_path is None:
            raise TypeError("this LardonParser has no data_path: there are no source files to iterate.")
        files = scan(self.data_path, self.valid_exts, exclude=self.parsed_path)
        return iter([str(self.data_path / rel) for rel in files])

    def _key_for(self, filename: str | os.PathLike | None) -> str:
        if filename is None:
            key = f"data_{self._next_auto}"
            self._next_auto += 1
            return key
        path = Path(filename)
        if self.data_path is not None and path.absolute().is_relative_to(self.data_path):
            rel = path.absolute().relative_to(self.data_path).as_posix()
        elif not path.is_absolute():
            rel = path.as_posix()
        else:
            raise InvalidDataError(
                f"{filename}: this file is outside the parser's data_path ({self.data_path}); pass a relative "
                "filename to name its entry."
            )
        if any(part in ("", ".", "..") for part in rel.split("/")):
            raise InvalidDataError(f"{filename}: entry names may not contain '..'; pass a plain relative filename.")
        return entry_key(rel)

    def register(self, data: Any, metadata: dict | None = None, filename: str | os.PathLike | None = None) -> str:
        """Append ``data`` with ``metadata`` (committed on exit); return its entry key."""
        if self._writer is None:
            raise RuntimeError("LardonParser.register() must be called inside its `with` block.")
        extra: dict = {}
        if isinstance(data, (str, os.PathLike)):
            loaded = split_result(self.callback(str(data)), str(data))
            if len(loaded) != 1:
                raise InvalidDataError(f"{data}: the callback returned {len(loaded)} arrays; register them one by one.")
            _, data, extra = loaded[0]
        key = self._key_for(filename)
        if key in self._keys:
            raise InvalidDataError(f"{filename or key}: entry {key!r} was already registered in this block.")
        array, md = prepare(data, {**(extra or {}), **(metadata or {})}, f"{filename or key}")
        self._writer.add(None, [(key, array, md)])
        self._keys.add(key)
        return key

    def _replace(self, conn: Connection, generation: int) -> int:
        if self.force:
            return retire_all(conn, generation)
        return retire_keys(conn, generation, sorted(self._keys))

    def __exit__(self, exc_type, exc, tb) -> None:
        stack, self._stack = self._stack, None
        try:
            if exc_type is None:
                self._writer.commit(before_rows=self._replace)
                checkpoint(self.store.engine)
        finally:
            self._writer = None
            stack.close()
