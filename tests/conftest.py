"""Fixtures and helpers shared by every test folder: small source folders and stores built in tmp_path.

The test folders mirror the package's layers (format, io, catalog, handle, query, selection, compiler,
maintenance, facade, frontends) plus architecture (layers and docs); helper modules live beside this file, on
the path through ``pythonpath`` in pyproject.toml.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import lardon_store as ls
from lardon_store.testing import write_sources

__all__ = ["sample_arrays", "sha256", "write_sources"]


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sample_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A few arrays of different shapes and dtypes, keyed as a store would key them."""
    rng = np.random.default_rng(seed)
    return {
        "a": rng.standard_normal((2, 5, 7)).astype(np.float32),
        "b": np.arange(24, dtype=np.int16).reshape(4, 6),
        "sub/c": rng.integers(0, 255, (3, 9), dtype=np.uint8),
        "sub/d": np.array(3.5),
        "z": np.zeros((0, 4), dtype=">i8"),
    }


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    return sample_arrays()


@pytest.fixture
def source_dir(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    return write_sources(tmp_path / "raw", arrays)


@pytest.fixture
def store(tmp_path: Path, source_dir: Path) -> ls.Store:
    """A store compiled from ``sample_arrays()`` with the default callback."""
    return ls.compile(source_dir, tmp_path / "store", valid_exts=[".npy"])


@pytest.fixture
def store_path(store: ls.Store) -> Path:
    return store.root
