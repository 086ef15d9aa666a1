"""Importing a folder made by the original ``lardon`` (a ``parsing.ldn`` catalog and raw array files).

The legacy layout: ``parsing.ldn`` is a pickle (written with dill) of a dict ``relative path -> {'shape', 'strides',
'dtype', **metadata}``; each path names a raw file holding the array's bytes in C order from offset 0, with no
header. The pickle is read by ``RestrictedUnpickler``: only builtin containers and scalars, numpy dtypes and
numeric numpy scalars can be built; anything else raises UnsafeLegacyCatalogError before it runs. Every record is
then checked against its file (C-contiguous strides, exact size, a plain file inside the folder) before anything
is written, so a bad folder gets no catalog at all.

``import_lardon(dir)`` writes a lardon_store catalog into the folder that references the files in place (they
become the store's shards); ``copy=True`` packs their bytes into ``blobs/`` shards instead (the old files are left
alone: delete them yourself once the store checks out).
"""

from __future__ import annotations

import io
import os
import pickle
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from .catalog.engine import catalog_path, checkpoint
from .catalog.writer import CatalogWriter
from .compiler.scan import entry_key
from .errors import InvalidDataError, LegacyStoreError, UnsafeLegacyCatalogError
from .format.codecs import checksum, checksum_of_chunks, dtype_to_descr
from .format.layout import CATALOG_URL_NAME, DEFAULT_MAX_SHARD_BYTES, LEGACY_CATALOG, is_safe_relpath
from .format.metadata import normalize
from .handle import StoreHandle
from .io.lock import store_lock
from .io.shards import resolve_shard_path
from .store import Store

__all__ = ["LEGACY_CATALOG", "RestrictedUnpickler", "import_lardon", "read_legacy_catalog"]

_RESERVED = ("shape", "strides", "dtype")


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Rebuild a numeric numpy scalar from its pickled (dtype, bytes), refusing any other dtype."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in "biufc":
        raise UnsafeLegacyCatalogError(f"a pickled numpy scalar of dtype {dtype!r} is not a plain number; refused.")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafeLegacyCatalogError("a pickled numpy scalar has malformed bytes; refused.")
    return np.frombuffer(data, dtype=dtype)[0]


def _latin1(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: only str to latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeLegacyCatalogError(f"_codecs.encode with {type(text).__name__}/{encoding!r} is not allowed.")
    return text.encode("latin-1")


def _numeric_dtype_class(name: str) -> Any:
    cls = getattr(np.dtypes, name, None) if re.fullmatch(r"[A-Za-z0-9]+DType", name) else None
    try:
        ok = isinstance(cls, type) and issubclass(cls, np.dtype) and cls().kind in "biufc"
    except TypeError:
        ok = False
    return cls if ok else None


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("collections", "OrderedDict"): dict,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): _latin1,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only builtin containers and scalars, numpy dtypes and numeric numpy scalars.

    ``find_class`` is the only way a pickle reaches a callable; anything not in the allow-list raises
    UnsafeLegacyCatalogError there, before the pickle can call it. Persistent ids are refused too.
    """

    where = LEGACY_CATALOG

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None and module == "numpy.dtypes":
            found = _numeric_dtype_class(name)
        if found is None:
            raise UnsafeLegacyCatalogError(
                f"{self.where}: the pickle asks for {module}.{name}, which a lardon catalog never needs (only "
                "containers, numbers, strings and numpy dtypes are allowed); it was NOT executed. Do not open this "
                "folder with the original lardon either: its catalog may be malicious."
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeLegacyCatalogError(f"{self.where}: the pickle uses persistent ids; refused.")


def read_legacy_catalog(path: str | os.PathLike) -> dict:
    """The dict held by the ``parsing.ldn`` file at ``path``, read with the restricted unpickler."""
    data = Path(path).read_bytes()
    unpickler = RestrictedUnpickler(io.BytesIO(data))
    unpickler.where = str(path)
    try:
        loaded = unpickler.load()
    except UnsafeLegacyCatalogError:
        raise
    except Exception as exc:
        raise LegacyStoreError(f"{path}: not a readable lardon catalog ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(loaded, dict):
        raise LegacyStoreError(f"{path}: holds a {type(loaded).__name__}, not the dict of a lardon catalog.")
    return loaded


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def _check_record(root: Path, relpath: Any, record: Any) -> tuple[str, np.dtype, tuple[int, ...], int, dict]:
    """(key, dtype, shape, file size, metadata) of one legacy record, or LegacyStoreError naming the file."""
    if not is_safe_relpath(relpath):
        raise LegacyStoreError(f"{root}: the catalog names {relpath!r}, which is not a plain path inside the folder.")
    where = root / relpath
    if not isinstance(record, dict) or any(k not in record for k in _RESERVED):
        raise LegacyStoreError(f"{where}: its catalog record lacks 'shape', 'strides' or 'dtype'.")
    shape, strides = record["shape"], record["strides"]
    if not (isinstance(shape, (tuple, list)) and all(type(d) is int and d >= 0 for d in shape)):
        raise LegacyStoreError(f"{where}: invalid shape {shape!r} in the catalog.")
    shape = tuple(shape)
    try:
        raw = record["dtype"]
        dtype = raw() if isinstance(raw, type) and issubclass(raw, np.dtype) else np.dtype(raw)
        dtype_to_descr(dtype, str(where))
    except (TypeError, InvalidDataError) as exc:
        raise LegacyStoreError(f"{where}: unsupported dtype {record['dtype']!r}: {exc}") from None
    if not (isinstance(strides, (tuple, list)) and len(strides) == len(shape) and all(type(s) is int for s in strides)):
        raise LegacyStoreError(f"{where}: invalid strides {strides!r} for shape {shape}.")
    expected = _c_strides(shape, dtype.itemsize)
    if 0 not in shape and any(s != e for s, e, d in zip(strides, expected, shape) if d > 1):
        raise LegacyStoreError(
            f"{where}: strides {tuple(strides)} are not C-contiguous for shape {shape} and dtype {dtype} (expected "
            f"{expected}); lardon always wrote C order, so this catalog does not match its files: re-export it."
        )
    try:
        resolve_shard_path(root, relpath)
    except Exception as exc:
        raise LegacyStoreError(f"{where}: refused: {exc}") from None
    if not where.is_file():
        raise LegacyStoreError(f"{where}: data file is missing (named in {LEGACY_CATALOG}).")
    size = where.stat().st_size
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size != needed:
        what = "truncated" if size < needed else "larger than its catalog record"
        raise LegacyStoreError(
            f"{where}: data file is {what}: {size} bytes on disk, but shape {shape} of {dtype} needs {needed}."
        )
    md = normalize({k: v for k, v in record.items() if k not in _RESERVED}, str(where))
    return entry_key(relpath), dtype, shape, size, md


def _file_checksum(path: Path) -> str:
    with open(path, "rb") as f:
        return checksum_of_chunks(iter(lambda: f.read(1 << 22), b""))


def import_lardon(
    path: str | os.PathLike, copy: bool = False, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> Store:
    """Give the original lardon folder at ``path`` a lardon_store catalog; return the store (read-only).

    By default the legacy files are referenced in place; ``copy=True`` packs them into shards. Every record is
    validated first; a folder that fails gets no catalog. A folder that already has one is refused.
    """
    root = Path(path).absolute()
    legacy = root / LEGACY_CATALOG
    if not legacy.is_file():
        raise LegacyStoreError(f"{root}: no {LEGACY_CATALOG} here: this is not a folder of the original lardon.")
    if catalog_path(root).exists() or (root / CATALOG_URL_NAME).exists():
        raise LegacyStoreError(
            f"{root}: already has a lardon_store catalog; open it with lardon_store.parse_folder or lardon_store.open."
        )
    records = read_legacy_catalog(legacy)
    checked, seen = [], {}
    for relpath in sorted(records):
        key, dtype, shape, size, md = _check_record(root, relpath, records[relpath])
        if key in seen:
            raise LegacyStoreError(f"{root}: files {seen[key]!r} and {relpath!r} would both be entry {key!r}.")
        seen[key] = relpath
        checked.append((relpath, key, dtype, shape, size, md))
    with store_lock(root), ExitStack() as held:
        store = StoreHandle.create(root)
        held.enter_context(store.writing())
        writer = CatalogWriter(store.engine, store.root, max_shard_bytes, "import lardon")
        try:
            for relpath, key, dtype, shape, size, md in checked:
                if copy:
                    array = np.fromfile(root / relpath, dtype=dtype, count=size // dtype.itemsize).reshape(shape)
                    writer.add(None, [(key, array, md)])
                else:
                    crc = _file_checksum(root / relpath) if size else checksum(b"")
                    writer.add_existing(key, relpath, size, dtype, shape, crc, md)
            writer.commit()
        finally:
            writer.close()
        checkpoint(store.engine)
    return Store(root, readonly=True)
