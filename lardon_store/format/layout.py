"""The on-disk layout of a store folder: names, numbers and rules shared by every layer (pure code, no I/O).

A store is a folder holding:

- ``catalog.sqlite``: the SQLite catalog (``CATALOG_NAME``), stamped with ``PRAGMA application_id = APPLICATION_ID``
  ("LRDN") so that other tools can tell it apart;
- ``blobs/shard-NNNNNN.bin``: the shard files (``BLOBS_DIR``, ``shard_name(n)``): array bytes, each array
  C-contiguous at an offset that is a multiple of ``ALIGNMENT`` (64 bytes), zero bytes in the gaps, no header;
- ``blobs/shard-NNNNNN.bin.<hex>.part``: a shard being written by a compile task on an executor (``part_name``),
  renamed to its shard's name once written and fsynced; one left behind (a killed task) is only gc's to remove;
- ``catalog.url``: instead of ``catalog.sqlite``, the URL of the store's PostgreSQL catalog, without password
  (``CATALOG_URL_NAME``; see ``catalog/engine.py``);
- ``write.lock``: the file whose ``flock`` makes one writer at a time (``LOCK_NAME``);
- ``snapshot/``: the query snapshot kept between processes (``SNAPSHOT_DIR``; see ``query/persisted.py``), which
  may be deleted at any time.

A folder imported from the original ``lardon`` also holds its ``parsing.ldn`` (``LEGACY_CATALOG``) and its raw array
files, which the catalog may reference in place as shards: any plain relative path inside the store
(``is_safe_relpath``).

Shard numbers only grow: the catalog's ``store_info`` row ``NEXT_SHARD_KEY`` holds the lowest number a new shard may
take, which gc raises so that a freed number is never reused while a reader may still map the old file.

The ``store_info`` row ``SCAN_STATE_KEY`` is what the last complete compile saw of its source folder: JSON
``{"version": callback version, "generation": the store's generation just after it, "folders": {folder: digest},
"failed": [paths of the sources whose callback failed]}``
(see ``compiler/scan.py``). It is only a cache: while the generation and the version are the same, a folder whose
digest is the same holds the sources the catalog records, and a recompile reads no catalog row of it. Anything else
(another generation, a bad value) makes the next compile read every source row, as without it.
"""

from __future__ import annotations

import re

__all__ = [
    "ALIGNMENT",
    "APPLICATION_ID",
    "BLOBS_DIR",
    "CATALOG_NAME",
    "CATALOG_URL_NAME",
    "DEFAULT_MAX_SHARD_BYTES",
    "LEGACY_CATALOG",
    "LOCK_NAME",
    "MAX_NBYTES",
    "MAX_NDIM",
    "NEXT_SHARD_KEY",
    "PART_PATTERN",
    "SCAN_STATE_KEY",
    "SHARD_PATTERN",
    "SNAPSHOT_DIR",
    "is_safe_relpath",
    "packed_size",
    "part_name",
    "shard_name",
    "shard_number",
]

CATALOG_NAME = "catalog.sqlite"
CATALOG_URL_NAME = "catalog.url"
BLOBS_DIR = "blobs"
LOCK_NAME = "write.lock"
LEGACY_CATALOG = "parsing.ldn"
SNAPSHOT_DIR = "snapshot"
APPLICATION_ID = 0x4C52444E  # "LRDN"
ALIGNMENT = 64
DEFAULT_MAX_SHARD_BYTES = 1 << 30
NEXT_SHARD_KEY = "next_shard_number"
SCAN_STATE_KEY = "scan_state"
MAX_NBYTES = 1 << 62  # an offset or size at or past this is refused as damage
MAX_NDIM = 64  # numpy's own limit on dimensions

SHARD_PATTERN = re.compile(rf"^{BLOBS_DIR}/shard-([0-9]{{6}})\.bin$")
PART_PATTERN = re.compile(rf"^{BLOBS_DIR}/shard-[0-9]{{6}}\.bin\.[0-9a-f]{{32}}\.part$")


def shard_name(number: int) -> str:
    """The catalog path of shard ``number``: ``blobs/shard-NNNNNN.bin``."""
    return f"{BLOBS_DIR}/shard-{number:06d}.bin"


def part_name(number: int, token: str) -> str:
    """The path a compile task writes shard ``number`` under before renaming it (``token``: 32 hex digits)."""
    return f"{shard_name(number)}.{token}.part"


def shard_number(relpath: str) -> int | None:
    """The number of the shard at catalog path ``relpath``, or None when it is not a ``blobs/shard-NNNNNN.bin``."""
    found = SHARD_PATTERN.match(relpath) if isinstance(relpath, str) else None
    return int(found.group(1)) if found else None


def is_safe_relpath(relpath: str) -> bool:
    """Whether ``relpath`` is a plain relative POSIX path: no ``..``, ``.`` or empty part, not absolute, no ``\\``."""
    if not isinstance(relpath, str) or not relpath or relpath.startswith("/") or "\\" in relpath or "\x00" in relpath:
        return False
    return all(part not in ("", ".", "..") for part in relpath.split("/"))


def packed_size(nbytes: list[int]) -> int:
    """The size of a shard holding arrays of these byte sizes, in this order, with nothing between them."""
    end = 0
    for n in nbytes:
        end += -end % ALIGNMENT + n
    return end
