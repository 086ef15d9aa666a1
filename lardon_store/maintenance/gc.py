"""Garbage collection: reclaim the shard bytes no catalog row points at.

Dead bytes come from replaced and deleted entries, and from the tails (or whole shard files) a crash leaves before
its rows commit. Shards are never truncated or rewritten in place (a reader mapping a shard that shrinks dies of
SIGBUS), so gc works by copying:

1. every live entry of a shard holding dead bytes is copied into NEW shard files (numbered after every shard that
   exists), each copy checked against the entry's checksum, and the new files are fsynced;
2. one transaction points the entries at their copies, drops the old shards' rows and raises the store's
   ``next_shard_number`` so that an old shard's name is never reused;
3. only after that commit are the old shard files (and orphan shard files no row names) unlinked.

A crash before step 2 commits leaves the new files as orphans and the old rows intact; a crash after it leaves the
old files as orphans. Either way the next gc removes them. A reader that already mapped an old shard keeps reading
it (an unlinked file lives on while mapped). gc holds the store's write lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy.exc import OperationalError

from ..catalog.reads import entries_by_shard, next_shard_floor
from ..catalog.schema import entries, shards, store_info
from ..catalog.writer import catalog_write_error
from ..errors import CorruptStoreError
from ..format.codecs import checksum
from ..format.layout import BLOBS_DIR, DEFAULT_MAX_SHARD_BYTES, NEXT_SHARD_KEY, packed_size
from ..handle import StoreHandle
from ..io.crash import crash_point
from ..io.lock import store_lock
from ..io.shards import ShardWriter, fsync_dir, resolve_shard_path, shard_files_on_disk

__all__ = ["gc_store"]


def _unlink(root: Path, relpaths) -> None:
    """Remove the new shards of a gc that failed before its commit (no row points at them)."""
    for relpath in relpaths:
        try:
            os.unlink(root / relpath)
        except FileNotFoundError:
            pass


def gc_store(path: str | os.PathLike, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> int:
    """Reclaim the dead bytes of the store at ``path``; return how many bytes were freed on disk.

    Only shards that hold dead bytes are rewritten; compact shards are left alone, so a second gc frees nothing.
    Raises StoreLockedError at once if another process writes to the store, and CorruptStoreError (changing
    nothing) if a live entry's bytes do not match their checksum: run ``lardon-store verify`` to see which.
    """
    root = Path(path).absolute()
    with store_lock(root):
        store = StoreHandle(root, readonly=False)
        engine = store.engine
        with engine.connect() as conn:
            shard_rows, rows = entries_by_shard(conn)
            floor = next_shard_floor(conn)
        on_disk = shard_files_on_disk(root)
        known = {spath for spath, _ in shard_rows.values()}
        orphans = [spath for spath in on_disk if spath not in known]
        by_shard: dict[int, list] = {sid: [] for sid in shard_rows}
        for row in rows:
            by_shard[row.shard_id].append(row)
        rewrite = [
            sid
            for sid, (spath, _) in shard_rows.items()
            if on_disk.get(spath, 0) > packed_size([r.nbytes for r in by_shard[sid]])
        ]
        if not rewrite and not orphans:
            return 0
        writer = ShardWriter(root, {spath: 0 for spath in known}, max_shard_bytes, append_to_newest=False,
                             min_number=floor)  # fmt: skip
        moved = []
        created: set[str] = set()
        try:
            for sid in rewrite:
                spath = shard_rows[sid][0]
                with open(resolve_shard_path(root, spath), "rb") as f:
                    for row in by_shard[sid]:
                        f.seek(row.offset)
                        data = f.read(row.nbytes)
                        if len(data) != row.nbytes or checksum(data) != row.checksum:
                            where = f"entry {row.key!r}" + (f" (source {row.path!r})" if row.path else "")
                            raise CorruptStoreError(
                                f"{root / spath}: the bytes of {where} do not match its checksum; gc stopped and "
                                "changed nothing. Run `lardon-store verify` and recompile the damaged sources."
                            )
                        new_path, offset, _, _ = writer.append(data)
                        created.add(new_path)
                        moved.append((row.id, new_path, offset))
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
                new_ids = {}
                for spath, size in new_sizes.items():
                    new_ids[spath] = conn.execute(insert(shards).values(path=spath, size=size)).inserted_primary_key[0]
                if moved:
                    conn.execute(
                        update(entries)
                        .where(entries.c.id == bindparam("eid"))
                        .values(shard_id=bindparam("sid"), offset=bindparam("off")),
                        [{"eid": eid, "sid": new_ids[spath], "off": off} for eid, spath, off in moved],
                    )
                for i in range(0, len(rewrite), 500):
                    conn.execute(delete(shards).where(shards.c.id.in_(rewrite[i : i + 500])))
                conn.execute(delete(store_info).where(store_info.c.key == NEXT_SHARD_KEY))
                conn.execute(insert(store_info).values(key=NEXT_SHARD_KEY, value=str(writer.next_number)))
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
        return freed - sum(new_sizes.values())
