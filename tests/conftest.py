"""Fixtures and helpers shared by every test folder: small source folders and stores built in tmp_path.

The test folders mirror the package's layers (format, io, catalog, handle, query, selection, compiler,
maintenance, facade, frontends) plus architecture (layers and docs); helper modules live beside this file, on
the path through ``pythonpath`` in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pg_helpers
import pytest
from pg_helpers import create_database, drop_databases

import lardon_store as ls
from lardon_store.catalog.engine import CATALOG_ENV
from lardon_store.format.layout import CATALOG_NAME, CATALOG_URL_NAME
from lardon_store.handle import StoreHandle
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


# --- the catalog backend ----------------------------------------------------------------------------------------


def pytest_addoption(parser):
    parser.addoption(
        "--catalog-backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="where the stores the tests create keep their catalog (postgresql: the server .ci/run starts)",
    )


def pytest_configure(config):
    pg_helpers.BACKEND = config.getoption("--catalog-backend")
    config.addinivalue_line("markers", "sqlite_only: reads or crafts catalog.sqlite itself (not run on PostgreSQL)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--catalog-backend") == "postgresql":
        skip = pytest.mark.skip(reason="SQLite catalog only")
        for item in items:
            if "sqlite_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database's URL (skips when no server runs); dropped after the test."""
    url = create_database()
    yield url
    drop_databases([url])


@pytest.fixture(autouse=True)
def catalog_backend(request, monkeypatch):
    """With ``--catalog-backend postgresql``: each new store a test creates without naming its catalog gets a
    fresh PostgreSQL database (dropped after the test). Stores in subprocesses the test starts keep SQLite."""
    if request.config.getoption("--catalog-backend") != "postgresql":
        yield "sqlite"
        return
    made: list[str] = []
    real = StoreHandle.create.__func__

    def create(cls, root, catalog=None):
        root = Path(root).absolute()
        new = not (root / CATALOG_URL_NAME).exists() and not (root / CATALOG_NAME).exists()
        if catalog is None and new and not os.environ.get(CATALOG_ENV):
            made.append(create_database())
            catalog = made[-1]
        return real(cls, root, catalog)

    monkeypatch.setattr(StoreHandle, "create", classmethod(create))
    yield "postgresql"
    drop_databases(made)
