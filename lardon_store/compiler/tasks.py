"""Compile tasks for any ``concurrent.futures.Executor`` (a process pool, or a Dask cluster's ``get_executor()``).

A task takes a run of consecutive sources and a shard number reserved for it by the compile (which holds the store's
lock). It runs the callback on each source, checks each result as a local compile does (``prepare``, the alignment),
writes every array into ``blobs/shard-NNNNNN.bin.<random>.part``, fsyncs it, links it under the reserved shard's
name (never replacing a file there: StoreWriteError if one exists) and fsyncs the folder; then it returns only
catalog rows (``SourceResult``): per source its content hash and either the placed arrays of its entries or the
error it met. The compile commits those rows batch by batch, in source order, bytes always durable before the rows
that point at them.

A task killed midway leaves a part file that no row names: gc removes it. A compile that stops (an error, a closed
iterator) cancels its tasks not started and waits for those running, so no task outlives it. A task run twice (a
Dask worker declared dead that was still running, or a finished task Dask runs again because the worker that held
its result died) finds its shard written by the other run: it keeps it when the bytes are the same, and fails
otherwise. The callback must pickle for the executor (Dask's cloudpickle also takes lambdas and local functions) and
the store folder must be the same path on every worker (a shared filesystem).
"""

from __future__ import annotations

import filecmp
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CallbackError, InvalidDataError, LardonStoreError, StoreWriteError
from ..format.codecs import shape_to_text
from ..format.fields import UNNAMED, Alignment, align_from_json
from ..format.layout import BLOBS_DIR, part_name, shard_name
from ..io.shards import ShardWriter, fsync_dir
from .callback import prepare, split_result
from .scan import file_hash

__all__ = ["TASK_BYTES", "TASK_SOURCES", "Placed", "SourceResult", "compile_task", "plan_tasks", "run_tasks"]

TASK_SOURCES = 64  # sources per task at most
TASK_BYTES = 256 << 20  # source bytes per task at most (a larger source is a task of its own)
_WINDOW = 64  # tasks in flight at once


@dataclass(frozen=True, slots=True)
class Placed:
    """One entry written by a task: its key suffix, its arrays ``(field, offset, nbytes, dtype, shape text,
    checksum)`` in the task's shard, and its normalized metadata."""

    suffix: str
    arrays: list[tuple[str, int, int, str, str, str]]
    metadata: dict


@dataclass(frozen=True, slots=True)
class SourceResult:
    """What a task did with one source: its content hash, and its entries, or the error it met (``error`` is
    ``(exception type name, message, invalid)``: ``invalid`` for data the checks refused, else the callback's own
    exception)."""

    content_hash: str | None
    shard: str | None = None
    shard_size: int = 0
    entries: list[Placed] | None = None
    error: tuple[str, str, bool] | None = None

    def unwrap(self, path: Path) -> list[Placed]:
        """The entries, or the error raised as a compile in this process raises it."""
        if self.error is None:
            return self.entries
        name, message, invalid = self.error
        if invalid:
            raise InvalidDataError(message)
        raise CallbackError(
            f"{path}: the callback raised {name}: {message.rstrip('.')}. Sources compiled before it are kept; fix "
            "the file or the callback and compile again, or pass on_error='skip'."
        )

    def failure_reason(self) -> str:
        """The reason a skipped source is recorded with (as ``f"{type}: {exception}"``)."""
        return f"{self.error[0]}: {self.error[1]}"


def compile_task(
    callback: Callable[[str], Any], root: str, number: int, paths: Sequence[str], align_json: str | None
) -> list[SourceResult]:
    """(On a worker.) Run ``callback`` on each of ``paths`` and write their arrays as shard ``number`` of the
    store at ``root``; return one SourceResult per path, in order."""
    alignment = align_from_json(align_json, root)
    part = part_name(number, uuid.uuid4().hex)
    writer = ShardWriter(Path(root), {}, single=part)
    done: list[tuple[str | None, list | None, tuple | None]] = []
    try:
        for path in paths:
            content_hash = file_hash(path)
            try:
                try:
                    result = callback(path)
                except Exception as exc:
                    done.append((content_hash, None, (type(exc).__name__, str(exc), False)))
                    continue
                entries = []
                for suffix, data, md in split_result(result, path):
                    data, md = prepare(data, md, f"{path}{suffix and ' item ' + suffix[1:]}", alignment)
                    fields = sorted(data.items()) if isinstance(data, dict) else [(UNNAMED, data)]
                    placed = []
                    for name, array in fields:
                        _, offset, nbytes, crc = writer.append(array)
                        placed.append((name, offset, nbytes, array.dtype.str, shape_to_text(array.shape), crc))
                    entries.append((suffix, placed, md))
                done.append((content_hash, entries, None))
            except InvalidDataError as exc:
                done.append((content_hash, None, ("InvalidDataError", str(exc), True)))
        size = writer.sync().get(part, 0)
    finally:
        writer.close()
    shard = None
    if size:
        final = Path(root) / shard_name(number)
        try:  # (a link, not a rename: it never replaces a shard that exists, whoever wrote it)
            os.link(Path(root) / part, final)
        except FileExistsError:
            # The same task run again (Dask recomputes the results a dead worker held) wrote the same bytes: keep
            # them. Other bytes are another compile's shard: refuse, changing nothing.
            if not filecmp.cmp(Path(root) / part, final, shallow=False):
                raise StoreWriteError(
                    f"{final}: the shard this compile task was given holds other bytes already (a task of an earlier "
                    "compile still running?): nothing of this task was committed; compile again."
                ) from None
        finally:
            (Path(root) / part).unlink(missing_ok=True)
        fsync_dir(Path(root) / BLOBS_DIR)
        shard = shard_name(number)
    else:
        (Path(root) / part).unlink(missing_ok=True)
    out = []
    for content_hash, entries, error in done:
        if entries is None:
            out.append(SourceResult(content_hash, error=error))
            continue
        placed = [
            Placed(suffix, [(*a[:5], a[5].result() if isinstance(a[5], Future) else a[5]) for a in arrays], md)
            for suffix, arrays, md in entries
        ]
        out.append(SourceResult(content_hash, shard, size, placed))
    return out


def plan_tasks(paths: Sequence[str], sizes: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, stop)`` runs of consecutive sources, each at most ``TASK_SOURCES`` sources and ``TASK_BYTES``
    source bytes (a larger source alone)."""
    runs, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= TASK_SOURCES or total + size > TASK_BYTES):
            runs.append((start, i))
            start, total = i, 0
        total += size
    if len(paths) > start:
        runs.append((start, len(paths)))
    return runs


def run_tasks(
    executor: Executor,
    callback: Callable[[str], Any],
    root: Path,
    paths: Sequence[str],
    sizes: Sequence[int],
    reserve: Callable[[], int],
    alignment: Alignment,
) -> Iterator[SourceResult]:
    """One SourceResult per path, in order, from compile tasks submitted to ``executor`` (at most ``_WINDOW`` in
    flight); ``reserve()`` gives each task its shard number. Close the iterator to cancel the tasks not started."""
    runs = iter(plan_tasks(paths, sizes))
    in_flight: deque[Future] = deque()
    align_json = alignment.to_json() if alignment else None

    def submit() -> bool:
        run = next(runs, None)
        if run is None:
            return False
        chunk = list(paths[run[0] : run[1]])
        in_flight.append(executor.submit(compile_task, callback, str(root), reserve(), chunk, align_json))
        return True

    try:
        while len(in_flight) < _WINDOW and submit():
            pass
        while in_flight:
            future = in_flight.popleft()
            try:
                results = future.result()
            except LardonStoreError:
                raise
            except Exception as exc:
                raise CallbackError(
                    f"{root}: a compile task failed on its executor ({type(exc).__name__}: {exc}): a worker died "
                    "(killed, out of memory) or could not run the callback (it must pickle, and the store folder must "
                    "be the same path on every worker). Sources already committed are kept: compile again to resume."
                ) from exc
            submit()
            yield from results
    finally:
        # Tasks not started are cancelled; those running are waited for, so that none outlives the compile (and its
        # lock) to write a shard that a later compile or gc may number again.
        for future in in_flight:
            future.cancel()
        for future in in_flight:
            if not future.cancelled():
                try:
                    future.result()
                except BaseException:  # noqa: S110 - (its error is not this compile's: it stopped already)
                    pass
