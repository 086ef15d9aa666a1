"""Small stores for the query tests, written through the compiler's CatalogWriter (no source files needed)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lardon_store.catalog import CATALOG_NAME
from lardon_store.compiler import CatalogWriter, store_lock
from lardon_store.store import Store, open_store


def empty_store(root: Path) -> Path:
    """A new empty store at ``root`` (the catalog migrated to head)."""
    Store(root, readonly=False, _create=True)
    return root


def fill_store(template: Path, root: Path, metadatas: list[dict[str, Any]]) -> Store:
    """A copy of the empty store ``template`` at ``root`` holding one tiny entry per metadata dict (keys e0000...)."""
    (root / "blobs").mkdir(parents=True)
    shutil.copy(template / CATALOG_NAME, root / CATALOG_NAME)
    with store_lock(root):
        store = Store(root, readonly=False)
        writer = CatalogWriter(store, 1 << 20)
        try:
            for i, md in enumerate(metadatas):
                writer.add(None, [(f"e{i:04d}", np.full(2, i, np.int16), md)])
            writer.commit()
        finally:
            writer.close()
    return open_store(root)
