"""lardon_store: numpy arrays of any shape in shard files, a SQLite catalog of their metadata, lazy numpy reads."""

from .batching import batch
from .compiler import CompileSummary, default_callback
from .compiler import compile_store as compile
from .errors import (
    BatchError,
    CallbackError,
    CorruptStoreError,
    EntryNotFoundError,
    IncompatibleSchemaError,
    InvalidDataError,
    LardonStoreError,
    QueryError,
    ReadOnlyStoreError,
    SchemaOutdatedError,
    StoreLockedError,
    StoreNotFoundError,
    StoreWriteError,
)
from .gc import gc_store
from .indexing import randslice
from .selection import Entry, Selection
from .store import Store, migrate_store
from .store import open_store as open
from .verify import Damage, VerifyReport, verify_store

__all__ = [
    "BatchError",
    "CallbackError",
    "CompileSummary",
    "CorruptStoreError",
    "Damage",
    "Entry",
    "EntryNotFoundError",
    "IncompatibleSchemaError",
    "InvalidDataError",
    "LardonStoreError",
    "QueryError",
    "ReadOnlyStoreError",
    "SchemaOutdatedError",
    "Selection",
    "Store",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreWriteError",
    "VerifyReport",
    "batch",
    "compile",
    "default_callback",
    "gc_store",
    "migrate_store",
    "open",
    "randslice",
    "verify_store",
]

__version__ = "0.1.0"
