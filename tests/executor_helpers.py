"""Callbacks for compiles on executors: importable by worker processes (a Dask worker imports them by name)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
from pg_helpers import catalog_sql


def features(path: str):
    """Two entries per source with metadata; fails on sources named bad*."""
    x = np.load(path)
    if "bad" in path:
        raise ValueError("bad source")
    return [(x * 2, {"n": int(x.size), "kind": "double"}), (x[::2].astype(np.int16), {"n": int(x[::2].size)})]


class KillOnce:
    """``features``, but the worker running it on ``victim`` kills itself the first time (SIGKILL, as the OOM killer
    does); ``marker`` records that it did."""

    def __init__(self, victim: str, marker: str):
        self.victim, self.marker = victim, marker

    def __call__(self, path: str):
        if Path(path).name == self.victim and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return features(path)


def write_sources(root: Path, n: int = 30) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        np.save(root / f"{'bad' if i % 11 == 5 else 'f'}{i:03d}.npy", rng.random(int(rng.integers(1, 300))))
    return root


def entries_of(store) -> tuple:
    """What a store holds, wherever its bytes are: every live entry (key, dtype, shape, checksum, metadata, bytes),
    every source row and metadata value."""
    rows = catalog_sql(
        store.root,
        "SELECT e.key, a.field, a.dtype, a.shape, a.checksum, e.metadata FROM entries e "
        "JOIN arrays a ON a.entry_id = e.id WHERE e.died IS NULL ORDER BY e.key, a.field",
    )
    sources = catalog_sql(
        store.root, "SELECT path, size, content_hash, callback_version, status, error FROM sources ORDER BY path"
    )
    meta = catalog_sql(
        store.root,
        "SELECT e.key, m.key, m.type, m.num, m.text FROM meta_values m JOIN entries e ON e.id = m.entry_id "
        "WHERE e.died IS NULL ORDER BY e.key, m.key",
    )
    data = [store[i].tobytes() for i in range(len(store))]
    return rows, sources, meta, data
