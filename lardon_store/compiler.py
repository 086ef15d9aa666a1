"""Compiling a source folder into a store: scan → plan → run callbacks → write bytes → commit rows.

Each source file is classified against the catalog as new, changed, unchanged or deleted, from its size and
mtime_ns, with a content hash to decide when only the mtime moved (so a ``touch`` runs no callback), and from the
callback's version. Only new and changed sources run the callback. Work is committed in batches: a batch's bytes
are appended and fsynced first, then its rows commit in one transaction, so a crash at any moment leaves only
unreferenced bytes and every committed row points at complete, durable data.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import os
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from . import metadata as meta
from .catalog import CATALOG_NAME, entries, meta_values, shards, sources, store_info
from .errors import CallbackError, InvalidDataError, StoreLockedError, StoreWriteError
from .parallel import run_callbacks
from .shards import DEFAULT_MAX_SHARD_BYTES, ShardWriter, dtype_to_descr
from .store import Store

__all__ = ["CompileSummary", "compile_store", "default_callback", "store_lock"]

Callback = Callable[[str], Any]
BATCH_BYTES = 64 << 20
BATCH_SOURCES = 512
LOCK_NAME = "write.lock"
# store_info key: the lowest number a new shard may take (gc raises it so that freed numbers are never reused).
NEXT_SHARD_KEY = "next_shard_number"


def default_callback(path: str) -> tuple[np.ndarray, dict]:
    """Load a ``.npy`` file (never a pickle) with empty metadata."""
    return np.load(path, allow_pickle=False), {}


@dataclass
class CompileSummary:
    """What a compile did: sources per class, entries written, bytes appended, seconds."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    entries_written: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.new} new, {self.changed} changed, {self.unchanged} unchanged, {self.deleted} deleted, "
            f"{self.failed} failed; {self.entries_written} entries, {self.bytes_written / 1e6:.1f} MB written "
            f"in {self.seconds:.2f} s"
        )


def _crash_point(name: str) -> None:
    """Test hook: ``LARDON_STORE_CRASH_AT=name`` kills the process here, as a crash would."""
    if os.environ.get("LARDON_STORE_CRASH_AT") == name:
        os.kill(os.getpid(), 9)


def catalog_write_error(exc: OperationalError, root: Path) -> Exception:
    """A StoreWriteError naming the catalog for SQLite's disk errors (SQLITE_IOERR, SQLITE_FULL); others as they are."""
    text = str(exc.orig if exc.orig is not None else exc).lower()
    if "disk" not in text and "full" not in text and "i/o" not in text:
        return exc
    return StoreWriteError(
        f"{root / CATALOG_NAME}: writing the catalog failed ({exc.orig}): the disk may be full or a file size limit "
        "reached. The transaction was rolled back; free space and run the command again."
    )


def next_shard_floor(conn: Connection) -> int:
    """The lowest number a new shard may take (see NEXT_SHARD_KEY)."""
    value = conn.execute(select(store_info.c.value).where(store_info.c.key == NEXT_SHARD_KEY)).scalar()
    return int(value) if value is not None else 1


def callback_fingerprint(callback: Callback) -> str:
    """A version for ``callback``: its qualified name and a hash of its source code (when available).

    A callable object is fingerprinted by its class, a ``functools.partial`` by its function and arguments.
    """
    target, extra = callback, ""
    if isinstance(callback, functools.partial):
        target, extra = callback.func, repr((callback.args, sorted(callback.keywords.items())))
    if not (inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target)):
        target = type(target)
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
    try:
        code = inspect.getsource(target)
    except (OSError, TypeError):
        code = ""
    return f"{name}:{hashlib.sha256((code + extra).encode()).hexdigest()[:16]}"


def file_hash(path: Path) -> str:
    """The content hash kept for a source file (SHA-256: the fastest strong hash in hashlib on common CPUs)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextmanager
def store_lock(root: Path):
    """Hold the store's single-writer lock; StoreLockedError at once if another process holds it."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLockedError(
                f"{root}: another process is writing to this store (compile, gc or a parser); wait for it to finish."
            ) from None
        yield
    finally:
        os.close(fd)


def scan_stats(source: Path, valid_exts: Sequence[str] | None, exclude: Path | None) -> dict[str, tuple[int, int]]:
    """Relative POSIX path → (size, mtime_ns) of each source file (hidden files and folders skipped).

    One ``scandir`` pass with string paths: on 10,000 files this is most of a no-change recompile's time.
    """
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in valid_exts} if valid_exts else None
    excluded = os.path.realpath(exclude) if exclude is not None else None
    found: dict[str, tuple[int, int]] = {}
    pending = [(os.fspath(source), "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as it:
            for item in it:
                name = item.name
                if name.startswith("."):
                    continue
                if item.is_dir():
                    # Like os.walk: links to folders are not followed, and the store itself is skipped.
                    if not item.is_symlink() and (excluded is None or os.path.realpath(item.path) != excluded):
                        pending.append((item.path, prefix + name + "/"))
                    continue
                if exts is not None and os.path.splitext(name)[1].lower() not in exts:
                    continue
                try:
                    st = item.stat()
                except FileNotFoundError:  # a dangling link, or a file removed while scanning
                    continue
                found[prefix + name] = (st.st_size, st.st_mtime_ns)
    return found


def scan(source: Path, valid_exts: Sequence[str] | None, exclude: Path | None) -> list[str]:
    """Relative POSIX paths of the source files, sorted: the same order on every filesystem."""
    return sorted(scan_stats(source, valid_exts, exclude))


def entry_key(relpath: str) -> str:
    """The key of a source's entry: its relative path without extension."""
    slash, dot = relpath.rfind("/"), relpath.rfind(".")
    # As os.path.splitext (a name's leading dots start no extension), without its cost on 10,000 paths.
    if dot > slash + 1 and relpath[slash + 1 : dot].strip("."):
        return relpath[:dot]
    return relpath


def split_result(result: Any, where: str) -> list[tuple[str, np.ndarray, dict]]:
    """(key suffix, array, metadata) items of a callback's result: one ``(array, dict)`` pair or a list of pairs."""
    if isinstance(result, tuple) and len(result) == 2 and (result[1] is None or isinstance(result[1], dict)):
        return [("", result[0], result[1])]
    if isinstance(result, list):
        items = []
        for i, item in enumerate(result):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise InvalidDataError(f"{where}: item {i} of the callback's list is not an (array, metadata) pair.")
            items.append((f"#{i}", item[0], item[1]))
        return items
    raise InvalidDataError(
        f"{where}: the callback returned {type(result).__name__}; it must return (array, metadata_dict) or a list "
        "of such pairs."
    )


def prepare(array: Any, metadata: Any, where: str) -> tuple[np.ndarray, dict]:
    """A storable (array, metadata) pair, or InvalidDataError naming ``where``."""
    if not isinstance(array, np.ndarray):
        if isinstance(array, np.generic) or isinstance(array, (int, float, bool, complex, list)):
            array = np.asarray(array)
        else:
            raise InvalidDataError(
                f"{where}: the callback returned {type(array).__name__} as data; return a numpy array."
            )
    dtype_to_descr(array.dtype, where)
    return array, meta.normalize(metadata, where)


@dataclass
class _Plan:
    todo: list[tuple[str, str]]  # (relpath, "new" | "changed")
    deleted: list[int]  # source ids
    unchanged: int
    hashes: dict[str, str]


def plan(
    conn: Connection,
    source: Path,
    files: list[str],
    version: str,
    force: bool,
    stats: dict[str, tuple[int, int]] | None = None,
) -> _Plan:
    """Classify each source file against the catalog (``stats``: the (size, mtime_ns) ``scan_stats`` found)."""
    # Only small columns for 10,000s of rows, through the driver's cursor (SQLAlchemy's row objects cost more than
    # the query here); the status and version comparison runs in SQL, with the version bound.
    rows = conn.connection.driver_connection.execute(
        "SELECT path, id, size, mtime_ns, (status = 'ok' AND callback_version = ?) FROM sources", (version,)
    ).fetchall()
    known = {row[0]: row for row in rows}
    # The common case first: same version, same size and mtime_ns. Such a file is not even opened.
    same_stat = set()
    if stats is not None and not force:
        same_stat = {row[0] for row in rows if row[4] and stats.get(row[0]) == (row[2], row[3])}
    todo, hashes, unchanged, touched = [], {}, len(same_stat), []
    prefix = os.fspath(source) + os.sep
    for rel in files:
        if rel in same_stat:
            continue
        row = known.get(rel)
        if row is None:
            todo.append((rel, "new"))
            continue
        if stats is not None and rel in stats:
            size, mtime_ns = stats[rel]
        else:
            st = os.stat(prefix + rel)
            size, mtime_ns = st.st_size, st.st_mtime_ns
        _, sid, old_size, old_mtime, is_current = row
        same = bool(is_current) and not force and old_size == size
        if same and old_mtime != mtime_ns:
            hashes[rel] = file_hash(source / rel)
            same = hashes[rel] == conn.execute(select(sources.c.content_hash).where(sources.c.id == sid)).scalar()
            if same:
                touched.append({"sid": sid, "mtime": mtime_ns})
        if same:
            unchanged += 1
        else:
            todo.append((rel, "changed"))
    if touched:
        conn.execute(
            update(sources).where(sources.c.id == bindparam("sid")).values(mtime_ns=bindparam("mtime")), touched
        )
    present = stats if stats is not None else set(files)
    deleted = [row[1] for path, row in known.items() if path not in present]
    return _Plan(todo, deleted, unchanged, hashes)


class CatalogWriter:
    """Buffers catalog rows for entries whose bytes are being written, and commits them after an fsync."""

    def __init__(self, store: Store, max_shard_bytes: int):
        self.store = store
        with store.engine.connect() as conn:
            self.shard_ids = {path: sid for sid, path, _ in conn.execute(select(shards))}
            existing = {path: size for _, path, size in conn.execute(select(shards))}
            floor = next_shard_floor(conn)
        self.writer = ShardWriter(store.root, existing, max_shard_bytes, min_number=floor)
        self.pending_sources: list[dict] = []
        self.pending_entries: list[tuple[str, dict, dict]] = []  # (source path or "", entry row, metadata)
        self.pending_bytes = 0
        self.entries_written = 0
        self.existing_shards: dict[str, int] = {}

    def add(self, source_row: dict | None, items: list[tuple[str, np.ndarray, dict]]) -> None:
        """Append the items' bytes now; their rows (and ``source_row``) wait for the next ``commit``."""
        source_path = source_row["path"] if source_row else ""
        if source_row is not None:
            self.pending_sources.append(source_row)
        for key, array, md in items:
            shard_path, offset, nbytes, crc = self.writer.append(array)
            row = {
                "key": key,
                "shard_path": shard_path,
                "offset": offset,
                "nbytes": nbytes,
                "dtype": array.dtype.str,
                "shape": "[" + ",".join(str(d) for d in array.shape) + "]",
                "checksum": crc,
                "metadata": meta.to_json(md),
            }
            self.pending_entries.append((source_path, row, md))
            self.pending_bytes += nbytes

    def add_existing(self, key: str, relpath: str, size: int, dtype: np.dtype, shape: tuple, crc: str, md: dict):
        """Reference a whole file already inside the store (a legacy lardon file) as the bytes of entry ``key``."""
        self.existing_shards[relpath] = size
        row = {
            "key": key,
            "shard_path": relpath,
            "offset": 0,
            "nbytes": size,
            "dtype": dtype.str,
            "shape": "[" + ",".join(str(d) for d in shape) + "]",
            "checksum": crc,
            "metadata": meta.to_json(md),
        }
        self.pending_entries.append(("", row, md))

    def full(self) -> bool:
        return self.pending_bytes >= BATCH_BYTES or len(self.pending_sources) >= BATCH_SOURCES

    def commit(self, before_rows: Callable[[Connection], None] | None = None) -> None:
        """fsync the bytes, then commit every pending row in one transaction.

        ``before_rows(conn)`` runs first inside that transaction (e.g. to delete the entries being replaced).
        """
        _crash_point("before_sync")
        sizes = self.writer.sync()
        sizes.update(self.existing_shards)
        _crash_point("after_write")
        if before_rows is None and not sizes and not self.pending_sources and not self.pending_entries:
            return
        try:
            with self.store.engine.begin() as conn:
                if before_rows is not None:
                    before_rows(conn)
                self._insert_rows(conn, sizes)
                _crash_point("before_commit")
        except OperationalError as exc:
            raise catalog_write_error(exc, self.store.root) from exc
        self.entries_written += len(self.pending_entries)
        self.pending_sources, self.pending_entries, self.pending_bytes = [], [], 0
        self.existing_shards = {}

    def _insert_rows(self, conn: Connection, sizes: dict[str, int]) -> None:
        for path, size in sizes.items():
            if path in self.shard_ids:
                conn.execute(update(shards).where(shards.c.path == path).values(size=size))
            else:
                self.shard_ids[path] = conn.execute(insert(shards).values(path=path, size=size)).inserted_primary_key[0]
        source_ids: dict[str, int] = {}
        if self.pending_sources:
            paths = [row["path"] for row in self.pending_sources]
            for i in range(0, len(paths), 500):
                conn.execute(delete(sources).where(sources.c.path.in_(paths[i : i + 500])))
            returned = conn.execute(
                insert(sources).returning(sources.c.id, sources.c.path, sort_by_parameter_order=True),
                self.pending_sources,
            )
            source_ids = {path: sid for sid, path in returned}
        if not self.pending_entries:
            return
        values = []
        for source_path, row, _ in self.pending_entries:
            value = dict(row)
            value["shard_id"] = self.shard_ids[value.pop("shard_path")]
            value["source_id"] = source_ids.get(source_path)
            values.append(value)
        try:
            ids = conn.execute(insert(entries).returning(entries.c.id, sort_by_parameter_order=True), values)
            ids = [eid for (eid,) in ids]
        except IntegrityError:
            raise self._duplicate_key_error(conn) from None
        rows = [
            {"entry_id": eid, "key": k, "type": t, "num": n, "text": s}
            for eid, (_, _, md) in zip(ids, self.pending_entries)
            for k, t, n, s in meta.scalar_rows(md)
        ]
        if rows:
            conn.execute(insert(meta_values), rows)

    def _duplicate_key_error(self, conn: Connection) -> InvalidDataError:
        seen: dict[str, str] = {}
        for source_path, row, _ in self.pending_entries:
            key = row["key"]
            if key in seen or conn.execute(select(entries.c.id).where(entries.c.key == key)).first() is not None:
                break
            seen[key] = source_path
        else:
            key, source_path = "?", ""
        return InvalidDataError(
            f"{source_path or 'registered data'}: entry key {key!r} is already used by another entry: rename the "
            "source or the key."
        )

    def close(self) -> None:
        self.writer.close()


def _check_keys(files: Iterable[str]) -> None:
    """Refuse source names that are not UTF-8 or that would share an entry key, before anything runs."""
    files = list(files)
    for rel in files:
        if not rel.isascii():
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidDataError(
                    f"source file {rel!r}: its name is not valid UTF-8, so it cannot be an entry key: rename it."
                ) from None
    if len({entry_key(rel) for rel in files}) == len(files):
        return
    seen: dict[str, str] = {}
    for rel in files:
        key = entry_key(rel)
        if key in seen:
            raise InvalidDataError(
                f"source files {seen[key]!r} and {rel!r} would both store entry {key!r}: rename one, or narrow "
                "valid_exts."
            )
        seen[key] = rel


def compile_store(
    source: str | os.PathLike | None,
    target: str | os.PathLike,
    callback: Callback = default_callback,
    valid_exts: Sequence[str] | None = None,
    *,
    force: bool = False,
    callback_version: str | None = None,
    on_error: str = "raise",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 0,
) -> Store:
    """Compile the files of ``source`` into the store at ``target`` and return it (read-only, holding no lock).

    ``callback(path)`` returns ``(array, metadata_dict)`` or a list of such pairs. On an existing store only new and
    changed sources run it, deleted ones are removed; ``force=True`` redoes everything, and so does a new
    ``callback_version`` (by default a fingerprint of the callback's code). ``on_error="skip"`` records a failing
    source in the catalog and goes on (it is retried next time); the default raises CallbackError.
    The summary is in the returned store's ``last_compile``.
    ``workers=N`` runs the callbacks in N processes (the callback must pickle); the store is the same as with the
    default ``workers=0``, which runs them in this process (so lambdas and local functions work).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    started = time.perf_counter()
    target = Path(target).absolute()
    src = Path(source).absolute()
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: the source folder does not exist.")
    version = callback_version if callback_version is not None else callback_fingerprint(callback)
    stats = scan_stats(src, valid_exts, exclude=target)
    files = sorted(stats)
    summary = CompileSummary()
    with store_lock(target):
        store = Store(target, readonly=False, _create=True)
        try:
            with store.engine.begin() as conn:
                work = plan(conn, src, files, version, force, stats)
                # The catalog's sources have distinct keys already: only a new file can clash.
                if any(kind == "new" for _, kind in work.todo):
                    _check_keys(files)
                for i in range(0, len(work.deleted), 500):
                    conn.execute(delete(sources).where(sources.c.id.in_(work.deleted[i : i + 500])))
        except OperationalError as exc:
            raise catalog_write_error(exc, target) from exc
        summary.unchanged, summary.deleted = work.unchanged, len(work.deleted)
        outcomes = run_callbacks(callback, [str(src / rel) for rel, _ in work.todo], workers)
        writer = CatalogWriter(store, max_shard_bytes)
        try:
            for done, (rel, kind) in enumerate(work.todo):
                outcome = next(outcomes)
                path = src / rel
                st = os.stat(path)
                source_row = {
                    "path": rel,
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "content_hash": work.hashes.get(rel) or file_hash(path),
                    "callback_version": version,
                    "status": "ok",
                    "error": None,
                }
                try:
                    try:
                        result = outcome.unwrap()
                    except Exception as exc:
                        raise CallbackError(
                            f"{path}: the callback raised {type(exc).__name__}: {exc}. Sources compiled before it are "
                            "kept; fix the file or the callback and compile again, or pass on_error='skip'."
                        ) from exc
                    items = [
                        (entry_key(rel) + suffix, *prepare(arr, md, f"{path}{suffix and ' item ' + suffix[1:]}"))
                        for suffix, arr, md in split_result(result, str(path))
                    ]
                except (CallbackError, InvalidDataError) as exc:
                    if on_error == "raise":
                        writer.commit()  # the sources before this one are complete: keep them
                        raise
                    summary.failed += 1
                    summary.failures.append((rel, str(exc)))
                    source_row.update(status="failed", error=str(exc))
                    items = []
                else:
                    summary.new += kind == "new"
                    summary.changed += kind == "changed"
                # Replacing a source's row drops its old entries (ON DELETE CASCADE) in the same transaction.
                writer.add(source_row, items)
                if writer.full():
                    writer.commit()
                if progress is not None:
                    progress(done + 1, len(work.todo))
            writer.commit()
        finally:
            outcomes.close()
            writer.close()
        summary.entries_written = writer.entries_written
        summary.bytes_written = writer.writer.bytes_written
    summary.seconds = time.perf_counter() - started
    result_store = Store(target, readonly=True)
    result_store.last_compile = summary
    return result_store
