"""The query snapshot kept on disk, so that a fresh process does not read a million catalog rows before its first query.

Files
-----
In ``<store>/snapshot/``, one set per store id and generation, named with the store's id, the generation and the
first 16 hex digits of the generation's random token (the set of an older generation is removed when a new one is
written):

- ``<store_id>-g<generation>-<token>.fields.npz``: the snapshot's entry columns (``ids``, ``born``, ``died``), the
  field names (``names``), for the field at position ``j`` its columns (``j.shard``, ``j.offset``, ``j.nbytes``,
  ``j.dtype``, ``j.ndim``, ``j.dims``) and dtype strings (``j.descrs``), the shard table (``shard_paths``,
  ``shard_sizes``) and ``header`` = ``[store_id, generation, token]``;
- ``<store_id>-g<generation>-<token>.key-<key>.npz``: one metadata key's columns (``type``, ``num``, ``rank``), its
  sorted distinct strings as one UTF-8 blob (``text_bytes``) and their end offsets (``text_ends``).

They are written with ``np.savez`` (a zip of ``.npy`` files, each with a CRC-32), under a temporary name renamed into
place, and read with ``allow_pickle=False``. They hold only numbers and fixed-width strings: never a pickle.

Trust
-----
A set is used only when its store id, generation and token are the catalog's, after every check the catalog rows
pass (``format.columns.check_arrays``: dtypes, shapes, sizes, places inside the committed shard sizes), and when the
shard table equals the catalog's. Anything missing, stale, damaged or refused is rebuilt from the catalog; a folder
that cannot be written keeps the snapshot in memory only. The generation and its token are the validity key: a
program that changes the catalog's rows without committing a generation through lardon_store must remove
``snapshot/``. Within one process, a change seen without a new generation is always read from the catalog itself.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CorruptStoreError
from ..format.codecs import descr_to_dtype
from ..format.columns import Columns, EntryColumns, check_arrays
from ..format.fields import Alignment
from ..format.layout import SNAPSHOT_DIR
from ..format.metadata import MISSING, NULL, STR

__all__ = ["load_entries", "load_key", "save_entries", "save_key"]

_FIELD_ARRAYS = ("shard", "offset", "nbytes", "dtype", "ndim", "dims", "descrs")
_SAFE_NAME = re.compile(r"[0-9a-f]{1,64}")


def _folder(root: Path) -> Path:
    return root / SNAPSHOT_DIR


def _prefix(store_id: str, generation: int, token: str) -> str | None:
    safe = _SAFE_NAME.fullmatch(store_id or "") and _SAFE_NAME.fullmatch(token or "")
    return f"{store_id}-g{int(generation)}-{token[:16]}" if safe else None


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an ``.npz`` file, or None when it is missing or unreadable (damaged, not ours)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None


def _write(root: Path, name: str, arrays: dict[str, np.ndarray], keep_prefix: str) -> None:
    """Write ``arrays`` as ``snapshot/name`` atomically; remove files of other generations. Silent when the folder
    cannot be written (a read-only store keeps its snapshot in memory)."""
    folder = _folder(root)
    try:
        folder.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        store_id = keep_prefix.split("-g")[0]
        for old in folder.iterdir():
            if old.name.startswith(store_id + "-g") and not old.name.startswith(keep_prefix + "."):
                old.unlink(missing_ok=True)
    except OSError:
        return


def save_entries(
    root: Path, store_id: str, generation: int, token: str, columns: EntryColumns, born: np.ndarray, died: np.ndarray
) -> None:
    """Keep the entry columns of ``store_id`` at ``generation`` (whose token is ``token``) on disk (best effort)."""
    prefix = _prefix(store_id, generation, token)
    if prefix is None:
        return
    first = columns.parts[0]
    arrays = {
        "ids": columns.ids,
        "born": born,
        "died": died,
        "names": np.array(columns.names, dtype=str).reshape(-1),
        "shard_paths": np.array(first.shard_paths, dtype=str).reshape(-1),
        "shard_sizes": first.shard_sizes,
        "header": np.array([store_id, str(int(generation)), token]),
    }
    for j, part in enumerate(columns.parts):
        arrays.update({f"{j}.{name}": getattr(part, name) for name in _FIELD_ARRAYS if name != "descrs"})
        arrays[f"{j}.descrs"] = np.array([d.str for d in part.dtypes], dtype=str).reshape(-1)
    _write(root, f"{prefix}.fields.npz", arrays, prefix)


def load_entries(
    root: Path,
    store_id: str,
    generation: int,
    token: str,
    shards: dict[int, tuple[str, int]],
    names: tuple[str, ...],
    alignment: Alignment,
) -> tuple[EntryColumns, np.ndarray, np.ndarray] | None:
    """The kept entry columns, born and died of ``store_id`` at ``generation`` (whose token is ``token``), checked
    against the catalog's shard table ``shards`` and field ``names``; None when there are none or they fail a
    check."""
    prefix = _prefix(store_id, generation, token)
    data = _read(_folder(root) / f"{prefix}.fields.npz") if prefix else None
    wanted = {"ids", "born", "died", "names", "shard_paths", "shard_sizes", "header"}
    if data is None or not wanted <= data.keys() or data["names"].tolist() != list(names):
        return None
    if not {f"{j}.{name}" for j in range(len(names)) for name in _FIELD_ARRAYS} <= data.keys():
        return None
    if data["header"].tolist() != [store_id, str(int(generation)), token]:
        return None
    shard_ids = sorted(shards)
    if data["shard_paths"].tolist() != [shards[s][0] for s in shard_ids]:
        return None
    if data["shard_sizes"].tolist() != [shards[s][1] for s in shard_ids]:
        return None
    parts = []
    for j in range(len(names)):
        try:
            dtypes = tuple(descr_to_dtype(str(d), "") for d in data[f"{j}.descrs"].tolist())
            part = Columns(
                data["ids"], *(data[f"{j}.{name}"] for name in _FIELD_ARRAYS[:-1]),
                tuple(data["shard_paths"].tolist()), data["shard_sizes"], dtypes,
            )  # fmt: skip
        except (CorruptStoreError, TypeError, ValueError):
            return None
        if not check_arrays(part):
            return None
        parts.append(part)
    born, died = data["born"], data["died"]
    n = len(data["ids"])
    if born.shape != (n,) or died.shape != (n,):
        return None
    if born.dtype != np.int64 or died.dtype != np.int64 or (born < 1).any() or (died < 0).any():
        return None
    if ((died > 0) & (died <= born)).any() or (born > generation).any() or (died > generation).any():
        return None
    return EntryColumns(names, tuple(parts), alignment), born, died


def save_key(root: Path, store_id: str, generation: int, token: str, key: str, columns) -> None:
    """Keep one metadata key's snapshot columns (a ``KeyColumns``) on disk (best effort)."""
    prefix = _prefix(store_id, generation, token)
    if prefix is None:
        return
    encoded = [t.encode() for t in columns.texts]
    arrays = {
        "type": columns.type,
        "num": columns.num,
        "rank": columns.rank,
        "text_bytes": np.frombuffer(b"".join(encoded), np.uint8),
        "text_ends": np.cumsum([len(b) for b in encoded], dtype=np.int64),
    }
    _write(root, f"{prefix}.key-{key}.npz", arrays, prefix)


def load_key(root: Path, store_id: str, generation: int, token: str, key: str, n: int):
    """``(type, num, rank, texts)`` of ``key`` for a snapshot of ``n`` rows, or None when missing or refused."""
    prefix = _prefix(store_id, generation, token)
    data = _read(_folder(root) / f"{prefix}.key-{key}.npz") if prefix else None
    if data is None or not {"type", "num", "rank", "text_bytes", "text_ends"} <= data.keys():
        return None
    types, nums, ranks, blob, ends = (data[k] for k in ("type", "num", "rank", "text_bytes", "text_ends"))
    if not (types.shape == nums.shape == ranks.shape == (n,)):
        return None
    if types.dtype != np.int8 or nums.dtype != np.float64 or ranks.dtype != np.int64 or blob.dtype != np.uint8:
        return None
    if ends.dtype != np.int64 or ends.ndim != 1 or (np.diff(ends, prepend=0) < 0).any() or ends[-1:].sum() != len(blob):
        return None
    try:
        raw = blob.tobytes()
        starts = np.concatenate([[0], ends[:-1]]).tolist()
        texts = [raw[a:b].decode() for a, b in zip(starts, ends.tolist())]
    except UnicodeDecodeError:
        return None
    if any(a >= b for a, b in zip(texts, texts[1:])) or ((types < MISSING) | (types > NULL)).any():
        return None
    strings = types == STR
    if ((ranks < -1) | (ranks >= len(texts))).any() or (ranks[strings] < 0).any() or (ranks[~strings] != -1).any():
        return None
    return types, nums, ranks, texts
