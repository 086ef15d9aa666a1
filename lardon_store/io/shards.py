"""Shard files: their writer and their per-process reader (the layout itself is in ``format.layout``).

Shards are append-only. Bytes are written and fsynced before the catalog rows that point at them commit, so a crash
leaves at most unreferenced bytes at a shard's tail. A shard is never truncated or rewritten in place: a mapped
file that shrinks kills its readers with SIGBUS. A writer starts a new shard once the current one holds
``max_shard_bytes`` (an array larger than that gets a shard of its own). A reader maps each shard once per process,
read-only, after checking that the file is large enough and that its path stays inside the store.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from ..errors import CorruptStoreError, ShardMissingError, StoreWriteError
from ..format.codecs import checksum
from ..format.layout import (
    ALIGNMENT,
    BLOBS_DIR,
    DEFAULT_MAX_SHARD_BYTES,
    SHARD_PATTERN,
    is_safe_relpath,
    shard_name,
    shard_number,
)

__all__ = ["ShardReader", "ShardWriter", "fsync_dir", "resolve_shard_path", "shard_files_on_disk", "write_error"]


def shard_files_on_disk(root: Path) -> dict[str, int]:
    """Catalog path → size of every shard file in ``root/blobs``, whether the catalog knows it or not."""
    found = {}
    try:
        names = os.listdir(root / BLOBS_DIR)
    except FileNotFoundError:
        return found
    for name in names:
        relpath = f"{BLOBS_DIR}/{name}"
        if shard_number(relpath) is not None and not os.path.islink(root / relpath):
            found[relpath] = os.path.getsize(root / relpath)
    return found


def write_error(exc: OSError, path: Path | str, doing: str) -> StoreWriteError:
    """A StoreWriteError naming ``path`` for an OSError raised while ``doing`` (errno may be None, as from tofile)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    error = StoreWriteError(
        f"{path}: {doing} failed ({reason}): the disk may be full or a file size limit reached. Nothing committed "
        "was changed; free space and run the command again."
    )
    error.errno, error.filename = exc.errno, str(path)
    return error


def resolve_shard_path(root: Path, relpath: str) -> Path:
    """The absolute path of a shard, refusing any path that could leave the store (``..``, absolute, symlinks).

    A shard is ``blobs/shard-NNNNNN.bin``, or (for a legacy lardon folder imported in place) any file inside the
    store root named by a plain relative path; no component of it may be a symbolic link.
    """
    if not isinstance(relpath, str) or not (SHARD_PATTERN.match(relpath) or is_safe_relpath(relpath)):
        raise CorruptStoreError(f"{root}: the catalog names an invalid shard path {relpath!r}.")
    path = root / relpath
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    parts = relpath.split("/")
    linked = any(os.path.islink(root.joinpath(*parts[: i + 1])) for i in range(len(parts)))
    if os.path.commonpath([real_root, real]) != real_root or linked:
        raise CorruptStoreError(f"{root}: shard {relpath!r} is a link out of the store; refusing to read it.")
    return path


class ShardWriter:
    """Appends arrays to the store's shards; ``sync()`` makes everything written so far durable.

    ``shards`` maps each existing shard's catalog path to its size on disk; new shards are numbered after the
    highest existing one, after any shard file left on disk by a crash, and after ``min_number - 1`` (so a number
    that gc freed is never reused while a reader may still map the old file). The writer only ever appends.
    """

    def __init__(
        self,
        root: Path,
        existing: dict[str, int],
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        *,
        append_to_newest: bool = True,
        min_number: int = 1,
    ):
        self.root = root
        self.max_shard_bytes = max_shard_bytes
        numbers = [n for n in map(shard_number, existing) if n is not None]
        on_disk = [n for n in map(shard_number, shard_files_on_disk(root)) if n is not None]
        self._next_number = max(numbers + on_disk + [min_number - 1], default=0) + 1
        self._file = None
        self._path: str | None = None
        self._size = 0
        self.dirty: dict[str, int] = {}
        self.bytes_written = 0
        # Append to the newest shard if it has room; its real size (a crash may have left a tail) is the start.
        if numbers and append_to_newest and max(numbers) >= max(on_disk, default=0):
            newest = shard_name(max(numbers))
            size = os.path.getsize(resolve_shard_path(root, newest))
            if size < max_shard_bytes:
                self._open(newest, size)

    @property
    def next_number(self) -> int:
        """The number the next new shard will take."""
        return self._next_number

    def _open(self, relpath: str, size: int) -> None:
        if self._file is not None:
            self._file.close()
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file = open(path, "ab")
        except OSError as exc:
            raise write_error(exc, path, "opening the shard") from exc
        self._path = relpath
        # The real end of the file: a crash may have left bytes there that no row points at.
        self._size = max(size, os.fstat(self._file.fileno()).st_size)

    def append(self, array: np.ndarray | bytes) -> tuple[str, int, int, str]:
        """Write ``array`` (C-contiguous) or raw bytes and return (shard path, offset, nbytes, checksum)."""
        if isinstance(array, (bytes, bytearray, memoryview)):
            data = memoryview(array).cast("B")  # (np.ascontiguousarray(b"") would be one byte long)
        else:
            data = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        nbytes = data.nbytes
        pad = -self._size % ALIGNMENT
        if self._file is None or (self._size > 0 and self._size + pad + nbytes > self.max_shard_bytes):
            self._open(shard_name(self._next_number), 0)
            self._next_number += 1
            pad = 0
        offset = self._size + pad
        try:
            if pad:
                self._file.write(b"\x00" * pad)
            self._file.write(data)
        except OSError as exc:
            raise write_error(exc, self.root / self._path, "writing array bytes") from exc
        self._size = offset + nbytes
        self.dirty[self._path] = self._size
        self.bytes_written += pad + nbytes
        return self._path, offset, nbytes, checksum(data)

    def sync(self) -> dict[str, int]:
        """Flush and fsync every shard written since the last sync; return their sizes."""
        try:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise write_error(exc, self.root / self._path, "syncing the shard") from exc
        done, self.dirty = self.dirty, {}
        if done:
            fsync_dir(self.root / BLOBS_DIR)
        return done

    def close(self) -> None:
        """Close the open shard (does not sync); a write error while closing after a failure is not raised again."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError:
                pass


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that files created or unlinked in it stay so after a power loss."""
    dirfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class ShardReader:
    """Read-only memory maps of a store's shards, one per shard per process.

    The maps are keyed by process id: after ``fork`` a child opens its own instead of using the parent's.
    """

    def __init__(self, root: Path):
        self.root = root
        self._pid = os.getpid()
        self._maps: dict[str, mmap.mmap] = {}

    @property
    def pid(self) -> int:
        """The process the current maps belong to."""
        return self._pid

    def get(self, relpath: str, needed: int) -> mmap.mmap:
        """The map of shard ``relpath``, checked to hold at least ``needed`` bytes."""
        if self._pid != os.getpid():
            self._maps = {}
            self._pid = os.getpid()
        mm = self._maps.get(relpath)
        if mm is None or len(mm) < needed:
            path = resolve_shard_path(self.root, relpath)
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size < needed:
                        raise CorruptStoreError(
                            f"{path}: shard holds {size} bytes but the catalog needs {needed}: the shard was "
                            "truncated or replaced; run `lardon-store verify`."
                        )
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except FileNotFoundError as exc:
                raise ShardMissingError(f"{path}: shard file is missing; run `lardon-store verify`.") from exc
            self._maps[relpath] = mm
        return mm

    def __getstate__(self):
        return {"root": self.root}

    def __setstate__(self, state):
        self.__init__(state["root"])
