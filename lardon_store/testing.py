"""Helpers to build small stores in tests, benchmarks and examples (in the style of ``zarr.testing``).

``empty_store(root)`` creates a store with no entry; ``store_from_arrays(root, items)`` writes ``(key, array,
metadata)`` items straight through the catalog writer, with no source folder and no callback; ``write_sources``
saves arrays as ``.npy`` files for ``compile``. Everything goes through the same code as a real compile: the lock,
bytes before rows, the validators.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from .catalog.engine import checkpoint
from .catalog.writer import CatalogWriter
from .compiler.callback import prepare
from .format.layout import DEFAULT_MAX_SHARD_BYTES
from .handle import StoreHandle
from .io.lock import store_lock
from .store import Store

__all__ = ["empty_store", "store_from_arrays", "write_sources"]


def empty_store(root: str | os.PathLike) -> Path:
    """A new store at ``root`` with no entry (its catalog at the newest revision); return its path."""
    root = Path(root).absolute()
    with store_lock(root):
        StoreHandle.create(root)
    return root


def store_from_arrays(
    root: str | os.PathLike,
    items: Iterable[tuple[str, Any, dict[str, Any] | None]],
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Store:
    """Add ``(key, array, metadata)`` items to the store at ``root`` (created if missing), committed at once;
    return the store opened read-only. Arrays and metadata are checked as a compile checks a callback's result."""
    root = Path(root).absolute()
    with store_lock(root), ExitStack() as held:
        handle = StoreHandle.create(root)
        held.enter_context(handle.writing())
        writer = CatalogWriter(handle.engine, handle.root, max_shard_bytes, "testing")
        try:
            for key, array, metadata in items:
                writer.add(None, [(key, *prepare(array, metadata, key))])
                if writer.full():
                    writer.commit()
            writer.commit()
        finally:
            writer.close()
        checkpoint(handle.engine)
    return Store(root)


def write_sources(folder: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Save each array as ``folder/<key>.npy`` (keys may contain '/'); return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        path = folder / f"{key}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)
    return folder
