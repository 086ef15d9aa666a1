"""lardon_store: numpy arrays of any shape in shard files, a SQLite catalog of their metadata, lazy numpy reads."""

from .compiler.callback import default_callback
from .compiler.pipeline import CompileSummary
from .errors import (
    BatchError,
    CallbackError,
    CorruptStoreError,
    EntryNotFoundError,
    FieldError,
    GenerationExpiredError,
    GenerationNotFoundError,
    IncompatibleSchemaError,
    InvalidDataError,
    LardonStoreError,
    LegacyNotImportedError,
    LegacyStoreError,
    QueryError,
    ReadOnlyStoreError,
    SchemaOutdatedError,
    ShardMissingError,
    StoreIOError,
    StoreLockedError,
    StoreNotFoundError,
    StoreWriteError,
    UnknownKeyWarning,
    UnsafeLegacyCatalogError,
)
from .info import Generation, StoreInfo
from .lardon import LardonParser, checkdir, parse_folder
from .legacy import import_lardon
from .maintenance.gc import gc_store
from .maintenance.verify import Damage, VerifyReport, verify_store
from .query.expressions import Expr, meta
from .selection.batching import batch
from .selection.indexing import randslice
from .selection.selection import Entry, Selection, scatter
from .store import Store, compile, migrate_store
from .store import open_store as open

__all__ = [
    "BatchError",
    "CallbackError",
    "CompileSummary",
    "CorruptStoreError",
    "Damage",
    "Entry",
    "EntryNotFoundError",
    "FieldError",
    "Generation",
    "GenerationExpiredError",
    "GenerationNotFoundError",
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
    "ShardMissingError",
    "Selection",
    "Store",
    "StoreIOError",
    "StoreLockedError",
    "StoreInfo",
    "StoreNotFoundError",
    "StoreWriteError",
    "UnknownKeyWarning",
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
