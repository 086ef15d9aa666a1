"""Garbage collection: reclaim the shard bytes no generation inside the retention can reach.

Entry rows are versioned: a replaced or removed entry keeps its row (and its bytes) so that selections pinned to older
generations, ``store.at(g)`` and manifests stay readable. gc first picks the oldest generation to keep (see
``oldest_kept``) and deletes the rows that died before it; their bytes, and the tails (or whole shard files) a crash
leaves before its rows commit, are then dead. Shards are never truncated or rewritten in place (a reader mapping a shard
that shrinks dies of SIGBUS), so gc works by copying:

1. every live entry of a shard holding dead bytes is copied into NEW shard files (numbered after every shard that
   exists), each copy checked against the entry's checksum, and the new files are fsynced;
2. one transaction points the entries at their copies, drops the old shards' rows and raises the store's
   ``next_shard_number`` so that an old shard's name is never reused;
3. only after that commit are the old shard files (and orphan shard files no row names) unlinked.

A crash before step 2 commits leaves the new files as orphans and the old rows intact; a crash after it leaves the old
files as orphans. Either way the next gc removes them. A reader that already mapped an old shard keeps reading it (an
unlinked file lives on while mapped); a selection that had not mapped it yet finds its entries' new place by id (an
entry's bytes never change), or, when gc deleted them, raises GenerationExpiredError. gc is a generation of its own and
holds the store's write lock."""

from __future__ import annotations

import os
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy.exc import OperationalError

from ..catalog.engine import checkpoint
from ..catalog.reads import entries_by_shard, history, next_shard_floor, store_value
from ..catalog.schema import arrays, entries, shards
from ..catalog.writer import catalog_write_error, next_generation, record_generation, set_store_value
from ..errors import CorruptStoreError
from ..format.codecs import checksum_matches
from ..format.fields import array_name
from ..format.layout import BLOBS_DIR, DEFAULT_MAX_SHARD_BYTES, NEXT_SHARD_KEY, packed_size
from ..handle import StoreHandle
from ..io.crash import crash_point
from ..io.lock import store_lock
from ..io.shards import ShardWriter, fsync_dir, open_regular, resolve_shard_path, shard_files_on_disk

__all__ = ["DEFAULT_KEEP_SECONDS", "gc_store", "oldest_kept"]

DEFAULT_KEEP_SECONDS = 86400.0
_CHUNK = 500


def _unlink(root: Path, relpaths) -> None:
    """Remove the new shards of a gc that failed before its commit (no row points at them)."""
    for relpath in relpaths:
        try:
            os.unlink(root / relpath)
        except FileNotFoundError:
            pass


def oldest_kept(
    generations: list[tuple[int, datetime]], now: datetime, keep_seconds: float, keep_generations: int, floor: int
) -> int:
    """The oldest generation a gc keeps: the current one, the ``keep_generations`` before it, and every generation
    that was current at some moment of the last ``keep_seconds`` (generation g was current from its own time until
    the next one's); never older than ``floor``, the oldest a previous gc kept."""
    numbers = [g for g, _ in generations]
    oldest = numbers[max(0, len(numbers) - 1 - max(0, int(keep_generations)))]
    cutoff = now - timedelta(seconds=max(0.0, float(keep_seconds)))
    for (g, _), (_, next_time) in zip(generations, generations[1:]):
        if next_time >= cutoff:
            oldest = min(oldest, g)
            break
    return max(oldest, floor)


def gc_store(
    path: str | os.PathLike,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    *,
    keep_seconds: float = DEFAULT_KEEP_SECONDS,
    keep_generations: int = 0,
) -> int:
    """Reclaim the bytes of the store at ``path`` that no generation inside the retention can reach; return how many
    bytes were freed on disk.

    The retention keeps the current generation, the ``keep_generations`` before it, and every generation that was
    current during the last ``keep_seconds`` (a day by default): selections and manifests of those stay readable.
    Entry rows that died before the oldest kept generation are deleted, and only shards that then hold dead bytes
    are rewritten: a second gc with nothing new to reclaim writes nothing and frees 0 bytes. Raises
    StoreLockedError at once if another process writes to the store, and CorruptStoreError (changing nothing) if a
    kept entry's bytes do not match their checksum: run ``lardon-store verify`` to see which.
    """
    root = Path(path).absolute()
    StoreHandle(root)  # (a folder with no store gets StoreNotFoundError before the lock creates anything there)
    with store_lock(root), ExitStack() as held:
        store = StoreHandle(root, readonly=False)
        held.enter_context(store.writing())
        engine = store.engine
        with engine.connect() as conn:
            shard_rows, rows = entries_by_shard(conn)
            floor = next_shard_floor(conn)
            before = int(store_value(conn, "oldest_generation") or 1)
            times = [(g, datetime.fromisoformat(t)) for g, t, *_ in history(conn)]
        oldest = oldest_kept(times, datetime.now(UTC), keep_seconds, keep_generations, before)
        expired = sorted({row.id for row in rows if row.died is not None and row.died <= oldest})
        kept = [row for row in rows if row.died is None or row.died > oldest]
        on_disk = shard_files_on_disk(root)
        known = {spath for spath, _ in shard_rows.values()}
        orphans = [spath for spath in on_disk if spath not in known]
        by_shard: dict[int, list] = {sid: [] for sid in shard_rows}
        for row in kept:
            by_shard[row.shard_id].append(row)
        rewrite = [
            sid
            for sid, (spath, _) in shard_rows.items()
            if on_disk.get(spath, 0) > packed_size([r.nbytes for r in by_shard[sid]])
        ]
        if not rewrite and not orphans and not expired:
            return 0  # (a later oldest generation alone changes nothing: every row it would drop is gone)
        writer = ShardWriter(root, {spath: 0 for spath in known}, max_shard_bytes, append_to_newest=False,
                             min_number=floor)  # fmt: skip
        moved = []
        created: set[str] = set()
        try:
            for sid in rewrite:
                spath = shard_rows[sid][0]
                with open_regular(resolve_shard_path(root, spath)) as f:
                    for row in by_shard[sid]:
                        f.seek(row.offset)
                        data = f.read(row.nbytes)
                        if len(data) != row.nbytes or not checksum_matches(data, row.checksum):
                            where = array_name(row.key, row.field) + (f" (source {row.path!r})" if row.path else "")
                            raise CorruptStoreError(
                                f"{root / spath}: the bytes of {where} do not match its checksum; gc stopped and "
                                "changed nothing. Run `lardon-store verify` and recompile the damaged sources."
                            )
                        new_path, offset, _, _ = writer.append(data)
                        created.add(new_path)
                        moved.append((row.id, row.field, new_path, offset))
            crash_point("gc_before_sync")
            new_sizes = writer.sync()
        except BaseException:
            writer.close()
            _unlink(root, created)
            raise
        writer.close()
        crash_point("gc_after_write")
        try:
            with engine.begin() as conn:
                generation = next_generation(conn)
                for i in range(0, len(expired), _CHUNK):
                    conn.execute(delete(entries).where(entries.c.id.in_(expired[i : i + _CHUNK])))
                new_ids = {}
                for spath, size in new_sizes.items():
                    new_ids[spath] = conn.execute(insert(shards).values(path=spath, size=size)).inserted_primary_key[0]
                if moved:
                    conn.execute(
                        update(arrays)
                        .where(arrays.c.entry_id == bindparam("eid"), arrays.c.field == bindparam("name"))
                        .values(shard_id=bindparam("sid"), offset=bindparam("off")),
                        [{"eid": e, "name": f, "sid": new_ids[spath], "off": off} for e, f, spath, off in moved],
                    )
                for i in range(0, len(rewrite), _CHUNK):
                    conn.execute(delete(shards).where(shards.c.id.in_(rewrite[i : i + _CHUNK])))
                set_store_value(conn, NEXT_SHARD_KEY, str(writer.next_number))
                set_store_value(conn, "oldest_generation", str(oldest))
                record_generation(conn, generation, "gc", 0, 0)
                crash_point("gc_before_commit")
        except BaseException as exc:
            _unlink(root, created)
            if isinstance(exc, OperationalError):
                raise catalog_write_error(exc, root) from exc
            raise
        crash_point("gc_after_commit")
        freed = 0
        for spath in [shard_rows[sid][0] for sid in rewrite] + orphans:
            try:
                os.unlink(root / spath)
            except FileNotFoundError:
                continue
            freed += on_disk.get(spath, 0)
        fsync_dir(root / BLOBS_DIR)
        checkpoint(engine)
        return freed - sum(new_sizes.values())
