"""Compiling a source folder into a store: scan -> plan -> run callbacks -> write bytes -> commit rows.

Each source file is classified against the catalog as new, changed, unchanged or deleted, from its size and
mtime_ns, with a content hash to decide when only the mtime moved (so a ``touch`` runs no callback), and from the
callback's version. Only new and changed sources run the callback. A compile that completes records the scan's
folder digests (``scan_state``, see ``format/layout.py``); the next plan reads only the source rows of the folders
whose digest changed. Work is committed in batches through the
``CatalogWriter``: a batch's bytes are appended and fsynced first, then its rows commit in one transaction, so a
crash at any moment leaves only unreferenced bytes and every committed row points at complete, durable data. The
fsync of one batch runs while the callbacks of the next ones go on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import OperationalError

from ..catalog.dialect import driver_rows
from ..catalog.engine import checkpoint
from ..catalog.reads import current_generation, has_arrays, store_alignment, store_value
from ..catalog.schema import sources
from ..catalog.writer import CatalogWriter, catalog_write_error, set_store_value
from ..errors import CallbackError, InvalidDataError
from ..format.fields import DEFAULT_TOLERANCE, UNNAMED, Alignment, parse_align
from ..format.layout import DEFAULT_MAX_SHARD_BYTES, SCAN_STATE_KEY
from ..handle import StoreHandle
from ..io.lock import store_lock
from .callback import Callback, callback_fingerprint, default_callback, prepare, split_result
from .parallel import Outcome, in_background, run_callbacks
from .scan import Scan, check_keys, entry_key, file_hash, folder_of, same_content, scan_tree
from .tasks import SourceResult, run_tasks

__all__ = ["CompileSummary", "Plan", "compile_store", "plan", "record_scan", "recorded_state"]

_BACKGROUND_HASH_BYTES = 1 << 20  # sources hashed on a thread when they average at least this size


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
    generations: list[int] = field(default_factory=list)  # the generations this compile committed
    known_failures: list[str] = field(default_factory=list)  # sources that failed before and have not changed

    def __str__(self) -> str:
        known = f" ({len(self.known_failures)} known failures, not run again)" if self.known_failures else ""
        return (
            f"{self.new} new, {self.changed} changed, {self.unchanged} unchanged, {self.deleted} deleted, "
            f"{self.failed} failed{known}; {self.entries_written} entries, {self.bytes_written / 1e6:.1f} MB "
            f"written in {self.seconds:.2f} s"
        )


@dataclass
class Plan:
    """What a compile must do: the sources to run, the source rows to delete, how many are unchanged, and the
    sources that are known to fail; ``state_current``: the recorded scan state (see ``format/layout.py``) is valid
    and equals this scan."""

    todo: list[tuple[str, str]]  # (relpath, "new" | "changed")
    deleted: list[int]  # source ids
    unchanged: int
    known_failures: list[str]  # failed with this callback version, unchanged since: not run again
    state_current: bool = False


_SOURCE_ROWS = (
    "SELECT path, id, size, mtime_ns, (status = 'ok' AND callback_version = ?), "
    "(status = 'failed' AND callback_version = ?) FROM sources"
)
_MANY_FOLDERS = 16  # more changed folders than this: one query for every source row instead of one per folder


def recorded_state(conn: Connection, version: str) -> tuple[dict[str, str], list[str]] | None:
    """The folder digests and the failed sources of the recorded scan state, when it is still valid: written at the
    store's current generation, for this callback version (every source row then has this version). None
    otherwise."""
    try:
        state = json.loads(store_value(conn, SCAN_STATE_KEY) or "null")
    except ValueError:
        return None
    if not isinstance(state, dict) or state.get("version") != version or state.get("generation") is None:
        return None
    folders, failed = state.get("folders"), state.get("failed")
    if not isinstance(folders, dict) or not isinstance(failed, list) or not all(isinstance(f, str) for f in failed):
        return None
    if state["generation"] != current_generation(conn):
        return None
    return folders, failed


def record_scan(conn: Connection, scan: Scan, version: str) -> None:
    """Record ``scan`` as the scan state of the store, at its current generation, with its failed sources."""
    failed = [path for (path,) in driver_rows(conn, "SELECT path FROM sources WHERE status = 'failed'", ())]
    state = {"version": version, "generation": current_generation(conn), "folders": scan.folders, "failed": failed}
    set_store_value(conn, SCAN_STATE_KEY, json.dumps(state))


def plan(conn: Connection, source: Path, scan: Scan, version: str, force: bool) -> Plan:
    """Classify each source file of ``scan`` against the catalog.

    With a valid recorded scan state (and not ``force``), only the source rows of the folders whose digest changed
    are read: 10,000 sources in 100 folders, one of them changed, read 100 rows instead of 10,000.
    """
    state = None if force else recorded_state(conn, version)
    if state is None:
        rows = list(driver_rows(conn, _SOURCE_ROWS, (version, version)))
        return _classify(conn, source, scan.stats, rows, force)
    (recorded, failed), folders = state, scan.folders
    changed = {folder for folder in folders.keys() | recorded.keys() if folders.get(folder) != recorded.get(folder)}
    known_failures = [path for path in failed if folder_of(path) not in changed]
    unchanged = sum(len(files) for folder, files in scan.files.items() if folder not in changed) - len(known_failures)
    stats = {rel: scan.stats[rel] for folder in changed for rel in scan.files.get(folder, ())}
    if not changed:
        rows = []
    elif len(changed) > _MANY_FOLDERS or "" in changed:
        rows = [row for row in driver_rows(conn, _SOURCE_ROWS, (version, version)) if folder_of(row[0]) in changed]
    else:
        rows = []
        for folder in sorted(changed):
            # Paths from "a/b/" up to "a/b0" ("/" + 1): the folder and its subfolders, whose rows are dropped.
            within = driver_rows(
                conn, _SOURCE_ROWS + " WHERE path >= ? AND path < ?", (version, version, folder, folder[:-1] + "0")
            )
            rows += [row for row in within if "/" not in row[0][len(folder) :]]
    result = _classify(conn, source, stats, rows, force)
    result.unchanged += unchanged
    result.known_failures = sorted(result.known_failures + known_failures)
    result.state_current = not changed
    return result


def _classify(
    conn: Connection,
    source: Path,
    stats: dict[str, tuple[int, int]],
    rows: list[tuple],
    force: bool,
) -> Plan:
    """Classify the files of ``stats`` against their source ``rows`` (those of ``_SOURCE_ROWS``; a row whose path is
    not in ``stats`` is a deleted source)."""
    # The common case first: same version, same size and mtime_ns. Such a file is not even opened.
    same_stat = set() if force else {row[0] for row in rows if row[4] and stats.get(row[0]) == (row[2], row[3])}
    # A source that failed with this callback version and has not changed since would fail again: it is reported,
    # not run (a changed file, force=True or a new callback version runs it again).
    known_failures = [] if force else sorted(row[0] for row in rows if row[5] and stats.get(row[0]) == (row[2], row[3]))
    same_stat.update(known_failures)
    todo, unchanged, touched = [], len(same_stat) - len(known_failures), []
    others = sorted(stats.keys() - same_stat)
    known = {row[0]: row for row in rows} if others else {}
    for rel in others:
        row = known.get(rel)
        if row is None:
            todo.append((rel, "new"))
            continue
        size, mtime_ns = stats[rel]
        _, sid, old_size, old_mtime, is_current, _ = row
        same = bool(is_current) and not force and old_size == size
        if same and old_mtime != mtime_ns:
            stored = conn.execute(select(sources.c.content_hash).where(sources.c.id == sid)).scalar()
            same = same_content(source / rel, stored)
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
    deleted = [row[1] for row in rows if row[0] not in stats]
    return Plan(todo, deleted, unchanged, known_failures)


@dataclass(frozen=True, slots=True)
class Local:
    """What the callback did on one source in this process or a worker pool: its outcome, and the source's hash."""

    outcome: Outcome
    content_hash: str | None


def _entries(result: Local | SourceResult, path: Path, key: str, alignment: Alignment, writer: CatalogWriter) -> list:
    """The entries of one source, checked: ``(key, data, metadata)`` to write, or, for a compile task's result,
    ``(key, placed arrays, metadata)`` already written. CallbackError or InvalidDataError otherwise."""
    if isinstance(result, SourceResult):
        items = [(key + p.suffix, p.arrays, p.metadata) for p in result.unwrap(path)]
        for _, arrays, _ in items:
            writer.check_fields(tuple(a[0] for a in arrays), str(path))
        return items
    try:
        value = result.outcome.unwrap()
    except Exception as exc:
        raise CallbackError(
            f"{path}: the callback raised {type(exc).__name__}: {str(exc).rstrip('.')}. Sources compiled before it "
            "are kept; fix the file or the callback and compile again, or pass on_error='skip'."
        ) from exc
    items = []
    for suffix, data, md in split_result(value, str(path)):
        where = f"{path}{suffix and ' item ' + suffix[1:]}"
        data, md = prepare(data, md, where, alignment)
        writer.check_fields(tuple(data) if isinstance(data, dict) else (UNNAMED,), where)
        items.append((key + suffix, data, md))
    return items


def _realign_message(target: Path, recorded: Alignment, given: Alignment) -> str:
    was = (
        f"align={ {f: (recorded.axes[f], recorded.rates[f]) for f in sorted(recorded.rates)} }"
        if recorded
        else "no align"
    )
    return (
        f"{target}: this store was compiled with {was} (tolerance {recorded.tolerance}); this compile gives "
        f"align={ {f: (given.axes[f], given.rates[f]) for f in sorted(given.rates)} } (tolerance {given.tolerance}). "
        "Older generations keep the alignment they were written with, so it cannot change: give the same align "
        "(or none, to use the recorded one), or compile into a new store."
    )


def compile_store(
    source: str | os.PathLike,
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
    exclude: Sequence[str] = (),
    align: dict[str, tuple[int, int]] | None = None,
    align_tolerance: int | None = None,
    executor: Executor | None = None,
    catalog: str | None = None,
) -> CompileSummary:
    """Compile the files of ``source`` into the store at ``target`` (created if missing); return what was done.

    ``callback(path)`` returns ``(array, metadata_dict)`` or a list of such pairs. On an existing store only new and
    changed sources run it, deleted ones are removed; ``force=True`` redoes everything, and so does a new
    ``callback_version`` (by default a fingerprint of the callback's code). ``on_error="skip"`` records a failing
    source in the catalog and goes on; the default raises CallbackError.
    ``workers=N`` runs the callbacks in N processes (the callback must pickle); the store is the same as with the
    default ``workers=0``, which runs them in this process (so lambdas and local functions work).
    ``exclude`` globs (``"*.tmp"``, ``"drafts/*"``) leave out the sources whose relative path matches: as if they
    were absent (their entries are removed). A source that failed and has not changed since is not run again: it
    is reported in ``known_failures`` and raises nothing (change it, or pass ``force=True``, to run it again).
    ``align={field: (axis, rate)}`` lines up the time axes of the fields a dict-returning callback makes (see
    ``format/fields.py``); it is recorded with the store and used again when a later compile gives none.
    ``align_tolerance`` (default: the recorded one, else 2) is how many steps the aligned fields may differ by.
    ``executor`` (any ``concurrent.futures.Executor``: a process pool, a Dask cluster's ``client.get_executor()``)
    runs the callbacks as compile tasks that write their own shards (see ``tasks.py``); the store holds the same
    entries as with ``workers=0``.
    """
    if executor is not None and workers:
        raise ValueError("give workers= or executor=, not both: the executor decides how many workers run the tasks")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    started = time.perf_counter()
    target = Path(target).absolute()
    src = Path(source).absolute()
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: the source folder does not exist.")
    version = callback_version if callback_version is not None else callback_fingerprint(callback)
    alignment = parse_align(align, DEFAULT_TOLERANCE if align_tolerance is None else align_tolerance)
    summary = CompileSummary()
    # (A scan on another thread, overlapping the opening of the catalog, was measured slower here: a no-change
    # recompile of 10,000 files took 70 ms against 43, the two threads fighting for the GIL.)
    scan = scan_tree(src, valid_exts, exclude=target, patterns=exclude)
    stats = scan.stats
    with store_lock(target):
        store = StoreHandle.create(target, catalog)
        with store.writing():
            try:
                with store.engine.begin() as conn:
                    work = plan(conn, src, scan, version, force)
                    recorded = store_alignment(conn, str(target))
                    if align is not None and not alignment.same_spec(recorded) and has_arrays(conn):
                        raise InvalidDataError(_realign_message(target, recorded, alignment))
                    # The catalog's sources have distinct keys already: only a new file can clash.
                    if any(kind == "new" for _, kind in work.todo):
                        check_keys(sorted(stats))
            except OperationalError as exc:
                raise catalog_write_error(exc, target) from exc
            summary.unchanged, summary.deleted = work.unchanged, len(work.deleted)
            summary.known_failures = work.known_failures
            paths = [str(src / rel) for rel, _ in work.todo]
            if align is None:
                tolerance = recorded.tolerance if align_tolerance is None else align_tolerance
                alignment = Alignment(recorded.axes, recorded.rates, tolerance)
            realign = bool(alignment) and alignment != recorded
            if not work.todo and not work.deleted and not realign:  # (nothing to write: no writer, no generation)
                if not work.state_current:  # (also after the plan recorded the new mtimes of touched files)
                    with store.engine.begin() as conn:
                        record_scan(conn, scan, version)
                    checkpoint(store.engine)
                summary.seconds = time.perf_counter() - started
                return summary
            writer = CatalogWriter(store.engine, store.root, max_shard_bytes, "compile")
            if realign:
                writer.alignment = alignment  # (recorded with the first batch)
            writer.retire_sources(work.deleted)  # (committed with the first batch, in its generation)
            if executor is not None:
                sizes = [stats[rel][0] for rel, _ in work.todo]
                remote = run_tasks(executor, callback, store.root, paths, sizes, writer.writer.reserve, alignment)
            else:
                outcomes = run_callbacks(callback, paths, workers)
                # Large sources are hashed on a thread while the callback runs; small ones here (a thread costs more).
                large = sum(stats[rel][0] for rel, _ in work.todo) >= _BACKGROUND_HASH_BYTES * max(len(paths), 1)
                hashes = in_background(file_hash, paths) if large else map(file_hash, paths)
            try:
                for done, (rel, kind) in enumerate(work.todo):
                    path = src / rel
                    result = next(remote) if executor is not None else Local(next(outcomes), next(hashes))
                    size, mtime_ns = stats[
                        rel
                    ]  # (as the scan saw them: a file changed since is seen changed next time)
                    source_row = {
                        "path": rel,
                        "size": size,
                        "mtime_ns": mtime_ns,
                        "content_hash": result.content_hash,
                        "callback_version": version,
                        "status": "ok",
                        "error": None,
                    }
                    try:
                        items = _entries(result, path, entry_key(rel), alignment, writer)
                    except (CallbackError, InvalidDataError) as exc:
                        if on_error == "raise":
                            writer.commit()  # the sources before this one are complete: keep them
                            raise
                        summary.failed += 1
                        cause = exc.__cause__ if isinstance(exc, CallbackError) and exc.__cause__ is not None else exc
                        reason = f"{type(cause).__name__}: {cause}"  # (recorded without the advice: it was skipped)
                        if isinstance(result, SourceResult) and result.error is not None:
                            reason = result.failure_reason()
                        summary.failures.append((rel, reason))
                        source_row.update(status="failed", error=reason)
                        items = []
                    else:
                        summary.new += kind == "new"
                        summary.changed += kind == "changed"
                    # Replacing a source's row retires its old entries in the same transaction.
                    if isinstance(result, SourceResult):
                        writer.add_placed(source_row, result.shard, result.shard_size, items)
                    else:
                        writer.add(source_row, items)
                    if writer.full():
                        writer.send()  # (its rows commit once its bytes are durable, while callbacks go on)
                    writer.commit_ready()
                    if progress is not None:
                        progress(done + 1, len(work.todo))
                # The scan state is recorded in the last batch's transaction, when that batch commits anything.
                last = writer.commit(after_rows=lambda conn: record_scan(conn, scan, version))
            finally:
                if executor is not None:
                    remote.close()
                else:
                    outcomes.close()
                    if large:
                        hashes.close()
                writer.close()
            if last is None and (writer.generations or not work.state_current):
                with store.engine.begin() as conn:
                    record_scan(conn, scan, version)
            checkpoint(store.engine)
            summary.entries_written = writer.entries_written
            summary.bytes_written = writer.writer.bytes_written + writer.placed_bytes
            summary.generations = list(writer.generations)
    summary.seconds = time.perf_counter() - started
    return summary
