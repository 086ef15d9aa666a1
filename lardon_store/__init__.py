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
    LegacyNotImportedError,
    LegacyStoreError,
    QueryError,
    ReadOnlyStoreError,
    SchemaOutdatedError,
    StoreLockedError,
    StoreNotFoundError,
    StoreWriteError,
    UnsafeLegacyCatalogError,
)
from .gc import gc_store
from .indexing import randslice
from .lardon import LardonParser, checkdir, parse_folder, scatter
from .legacy import import_lardon
from .query import Expr, meta
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
    "Expr",
    "IncompatibleSchemaError",
    "InvalidDataError",
    "LardonParser",
    "LardonStoreError",
    "LegacyNotImportedError",
    "LegacyStoreError",
    "QueryError",
    "ReadOnlyStoreError",
    "SchemaOutdatedError",
    "Selection",
    "Store",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreWriteError",
    "UnsafeLegacyCatalogError",
    "VerifyReport",
    "batch",
    "checkdir",
    "compile",
    "default_callback",
    "gc_store",
    "import_lardon",
    "meta",
    "migrate_store",
    "open",
    "parse_folder",
    "randslice",
    "scatter",
    "verify_store",
]

__version__ = "0.1.0"
