"""Small stores for the query tests, written through the public test helpers (no source files needed)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pg_helpers

from lardon_store.format.layout import BLOBS_DIR, CATALOG_NAME
from lardon_store.store import Store
from lardon_store.testing import empty_store, store_from_arrays

__all__ = ["empty_store", "fill_store"]


def fill_store(template: Path, root: Path, metadatas: list[dict[str, Any]]) -> Store:
    """A copy of the empty store ``template`` at ``root`` holding one tiny entry per metadata dict (keys e0000...);
    on PostgreSQL (``--catalog-backend postgresql``) a new store in a new database instead."""
    items = [(f"e{i:04d}", np.full(2, i, np.int16), md) for i, md in enumerate(metadatas)]
    if pg_helpers.BACKEND == "sqlite":
        (root / BLOBS_DIR).mkdir(parents=True)
        shutil.copy(template / CATALOG_NAME, root / CATALOG_NAME)
    return store_from_arrays(root, items)
