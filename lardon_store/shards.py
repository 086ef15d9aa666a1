"""Shard files: the on-disk layout of array bytes, their writer and their per-process reader.

Layout
------
A store keeps its array bytes in ``blobs/shard-NNNNNN.bin``. A shard is a plain concatenation of arrays with no
header: each array is written C-contiguous, in its own dtype and byte order, starting at an offset that is a
multiple of ``ALIGNMENT`` (64 bytes: a cache line, and enough for any SIMD load); the gap before it is zero bytes.
An array's bytes are ``prod(shape) * itemsize`` long; its offset, shape and dtype live only in the catalog.

Shards are append-only. Bytes are written and fsynced before the catalog rows that point at them commit, so a crash
leaves at most unreferenced bytes at a shard's tail. A shard is never truncated or rewritten in place: a mapped
file that shrinks kills its readers with SIGBUS. A writer starts a new shard once the current one holds
``max_shard_bytes`` (an array larger than that gets a shard of its own).

Dtypes
------
Stored as numpy's ``dtype.str`` (``'<f4'``, ``'>i8'``, ``'|b1'``, ``'<c16'``). Only booleans, integers, floats and
complex numbers are accepted, with an explicit byte order; object, structured, string and datetime dtypes are
refused, at write time with a message naming the source, and at read time as a corrupt row.
"""

from __future__ import annotations

import mmap
import os
import re
import zlib
from pathlib import Path

import numpy as np

from .errors import CorruptStoreError, InvalidDataError, StoreWriteError

ALIGNMENT = 64
DEFAULT_MAX_SHARD_BYTES = 1 << 30
SHARD_PATTERN = re.compile(r"^blobs/shard-[0-9]{6}\.bin$")
_SHARD_FILE = re.compile(r"^shard-([0-9]{6})\.bin$")
_DTYPE_PATTERN = re.compile(r"^[<>|][biufc][0-9]{1,2}$")


def dtype_to_descr(dtype: np.dtype, where: str) -> str:
    """The catalog string of ``dtype``; raise InvalidDataError (naming ``where``) for a dtype a store cannot hold."""
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufc":
        raise InvalidDataError(
            f"{where}: arrays of dtype {dtype!r} cannot be stored: use a boolean, integer, float or complex dtype "
            "(convert strings and objects to numbers, or put them in the metadata)."
        )
    return dtype.str


def descr_to_dtype(descr: str, where: str) -> np.dtype:
    """The dtype of a catalog string; raise CorruptStoreError for anything but a plain numeric dtype."""
    if not isinstance(descr, str) or not _DTYPE_PATTERN.match(descr):
        raise CorruptStoreError(f"{where}: the catalog row has an invalid dtype {descr!r}: run `lardon-store verify`.")
    try:
        dtype = np.dtype(descr)
    except TypeError as exc:
        raise CorruptStoreError(f"{where}: the catalog row has an invalid dtype {descr!r}.") from exc
    if dtype.kind not in "biufc" or dtype.hasobject:
        raise CorruptStoreError(f"{where}: the catalog row has a non-numeric dtype {descr!r}.")
    return dtype


def checksum(data: memoryview | bytes) -> str:
    """The checksum stored for an array's bytes (CRC-32: cheap, and enough to detect damage)."""
    return f"crc32:{zlib.crc32(data):08x}"


def shard_name(number: int) -> str:
    """The catalog path of shard ``number``."""
    return f"blobs/shard-{number:06d}.bin"


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


def shard_files_on_disk(root: Path) -> dict[str, int]:
    """Catalog path → size of every shard file in ``root/blobs``, whether the catalog knows it or not."""
    found = {}
    try:
        names = os.listdir(root / "blobs")
    except FileNotFoundError:
        return found
    for name in names:
        if _SHARD_FILE.match(name) and not os.path.islink(root / "blobs" / name):
            found["blobs/" + name] = os.path.getsize(root / "blobs" / name)
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
        numbers = [int(p[len("blobs/shard-") : -len(".bin")]) for p in existing if SHARD_PATTERN.match(p)]
        on_disk = [int(p[len("blobs/shard-") : -len(".bin")]) for p in shard_files_on_disk(root)]
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

    def append(self, array: np.ndarray) -> tuple[str, int, int, str]:
        """Write ``array`` (C-contiguous) and return (shard path, offset, nbytes, checksum)."""
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
            fsync_dir(self.root / "blobs")
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
                raise CorruptStoreError(f"{path}: shard file is missing; run `lardon-store verify`.") from exc
            self._maps[relpath] = mm
        return mm

    def __getstate__(self):
        return {"root": self.root}

    def __setstate__(self, state):
        self.__init__(state["root"])
