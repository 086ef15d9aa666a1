"""The one error hierarchy of lardon_store.

Every error derives from :class:`LardonStoreError`; where a builtin exception already says the same thing, the error
also derives from it, so callers that catch ``KeyError`` or ``ValueError`` keep working.
"""

from __future__ import annotations

__all__ = [
    "CorruptStoreError",
    "EntryNotFoundError",
    "FieldError",
    "GenerationExpiredError",
    "GenerationNotFoundError",
    "IncompatibleSchemaError",
    "InvalidDataError",
    "LardonStoreError",
    "LegacyNotImportedError",
    "LegacyStoreError",
    "QueryError",
    "ReadOnlyStoreError",
    "SchemaOutdatedError",
    "ShardMissingError",
    "StoreLockedError",
    "StoreIOError",
    "StoreNotFoundError",
    "UnknownKeyWarning",
    "UnsafeLegacyCatalogError",
    "StoreWriteError",
    "BatchError",
    "CallbackError",
]


class LardonStoreError(Exception):
    """Base class of every error raised by lardon_store."""


class StoreNotFoundError(LardonStoreError, FileNotFoundError):
    """The path holds no lardon_store catalog."""


class EntryNotFoundError(LardonStoreError, KeyError):
    """No entry has the requested key."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FieldError(LardonStoreError, LookupError):
    """A field that the entries do not have, or a read that needs one field named (``sel.field(name)``)."""


class CorruptStoreError(LardonStoreError):
    """A catalog row or shard file is damaged or crafted: reading it would be unsafe or wrong."""


class GenerationExpiredError(LardonStoreError):
    """The entries of a generation were reclaimed by gc (past its retention): a selection, ``store.at`` or a manifest
    asked for them. Nothing wrong was read; keep generations longer with ``gc(keep_seconds=...)``."""


class GenerationNotFoundError(LardonStoreError, ValueError):
    """``store.at(g)`` or a manifest named a generation the store never had."""


class ShardMissingError(CorruptStoreError):
    """A shard file the catalog names is not on disk (gc may have moved its entries since they were selected)."""


class IncompatibleSchemaError(LardonStoreError):
    """The catalog was written by a newer (or unknown) lardon_store; it is left untouched."""


class SchemaOutdatedError(LardonStoreError):
    """The catalog is older than this lardon_store and was opened read-only: it must be migrated first."""


class ReadOnlyStoreError(LardonStoreError, PermissionError):
    """A write was asked of a store opened read-only."""


class StoreLockedError(LardonStoreError):
    """Another process is writing to the store."""


class StoreWriteError(LardonStoreError, OSError):
    """Writing a shard or the catalog failed (disk full, file size limit, I/O error); what was committed is intact."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StoreIOError(LardonStoreError, OSError):
    """The operating system refused or failed a read of the store (permissions, an I/O error, a -wal file that
    cannot be read on read-only media); nothing was changed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidDataError(LardonStoreError, ValueError):
    """A callback returned an array or metadata that cannot be stored."""


class CallbackError(LardonStoreError):
    """The user callback raised while compiling a source file (the cause is chained)."""


class QueryError(LardonStoreError, ValueError):
    """A metadata query is malformed or uses something the query language does not allow."""


class BatchError(LardonStoreError, ValueError):
    """Items cannot be batched in the asked mode (for instance, arrays of different numbers of dimensions)."""


class UnsafeLegacyCatalogError(LardonStoreError):
    """A legacy ``parsing.ldn`` asks to load something other than plain containers and numpy dtypes: not executed."""


class LegacyStoreError(LardonStoreError, ValueError):
    """A legacy lardon folder cannot be imported as it is (bad strides, truncated or missing data files...)."""


class UnknownKeyWarning(UserWarning):
    """A query names a metadata key that no entry holds: it matches nothing (as the semantics say), which is more
    often a typo than a wish; the warning names the closest keys the store has."""


class LegacyNotImportedError(StoreNotFoundError):
    """The folder is a legacy lardon store without a lardon_store catalog: import it first."""
