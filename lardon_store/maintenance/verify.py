"""Verification: check a store's catalog, shard files and every entry's bytes, and say exactly what is damaged.

Checks, in order: SQLite's ``PRAGMA integrity_check``; each shard row (a safe path, the file present and at least as
long as the catalog says); each entry row (a numeric dtype, ``prod(shape) * itemsize == nbytes``, its bytes inside
the file) and its bytes against the stored ``crc32:`` checksum. Bytes past a shard's catalog size and shard files
no row names are not damage: they are what a crash leaves, and ``gc`` reclaims them. Verify only reads (files with
``read``, never ``mmap``, so a damaged file cannot kill it with SIGBUS) and takes no lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from ..catalog.reads import entries_by_shard, entries_with_other_fields, store_fields
from ..errors import CorruptStoreError
from ..format.codecs import checksum, checksum_matches, descr_to_dtype
from ..format.columns import check_row, parse_shape
from ..format.layout import packed_size
from ..handle import StoreHandle
from ..io.shards import open_regular, resolve_shard_path, shard_files_on_disk

__all__ = ["Damage", "VerifyReport", "verify_store"]


@dataclass(frozen=True, slots=True)
class Damage:
    """One damaged array: its entry's key, its source file (None for registered data), what is wrong, whether it
    is live (False: a row kept only for older generations), and its field (``""`` for a bare array)."""

    key: str
    source: str | None
    reason: str
    live: bool = True
    field: str = ""


@dataclass
class VerifyReport:
    """What ``verify`` found. ``ok`` is True when nothing is damaged."""

    root: str
    entries_checked: int = 0
    arrays_checked: int = 0  # one per field of each entry
    shards_checked: int = 0
    bytes_checked: int = 0
    catalog_problems: list[str] = field(default_factory=list)
    shard_problems: list[str] = field(default_factory=list)
    damaged: list[Damage] = field(default_factory=list)
    reclaimable_bytes: int = 0  # dead bytes inside shards and orphan shard files: what any gc frees
    retired_bytes: int = 0  # bytes of removed or replaced entries kept for older generations (gc's retention)

    @property
    def ok(self) -> bool:
        return not (self.catalog_problems or self.shard_problems or self.damaged)

    @property
    def damaged_keys(self) -> list[str]:
        """The keys of the damaged entries, each once, in the order found."""
        return list(dict.fromkeys(d.key for d in self.damaged))

    @property
    def damaged_sources(self) -> list[str]:
        """The source files to recompile, sorted (compile with ``force=True``: a touch alone does not, as the
        content hash is unchanged)."""
        return sorted({d.source for d in self.damaged if d.source is not None})

    def __str__(self) -> str:
        lines = [
            f"{self.root}: {self.entries_checked:,} entries"
            f"{f' ({self.arrays_checked:,} arrays)' if self.arrays_checked != self.entries_checked else ''} in "
            f"{self.shards_checked} shard(s) checked "
            f"({self.bytes_checked / 1e6:,.1f} MB); {self.reclaimable_bytes:,} bytes reclaimable by gc, "
            f"{self.retired_bytes:,} bytes of older generations kept",
        ]
        lines += [f"CATALOG    {p}" for p in self.catalog_problems]
        lines += [f"SHARD      {p}" for p in self.shard_problems]
        lines += [
            f"DAMAGED    {d.key}{' field ' + d.field if d.field else ''} (source {d.source or '-'}"
            f"{'' if d.live else ', older generation'}): {d.reason}"
            for d in self.damaged
        ]
        if self.damaged_sources:
            lines.append("recompile  " + ", ".join(self.damaged_sources) + " (compile with --force)")
        if any(not d.live for d in self.damaged):
            lines.append("older generations hold damaged entries: `lardon-store gc --keep-seconds 0` drops them")
        lines.append(
            "ok"
            if self.ok
            else f"DAMAGED: {len(self.damaged)} damaged entries, {len(self.shard_problems)} shard problem(s)"
        )
        return "\n".join(lines)


def _row_problem(row, file: Path, file_size: int) -> str | None:
    """Why an entry row cannot be read (``format.columns.check_row``), or None."""
    try:
        dtype = descr_to_dtype(row.dtype, "")
        check_row("", row.key, dtype, parse_shape(row.shape), row.shape, row.offset, row.nbytes, str(file), file_size,
                  "the end of the file")  # fmt: skip
    except CorruptStoreError as exc:
        return str(exc).removeprefix(": ")
    return None


def _field_problem(names: tuple[str, ...], fields: list[str]) -> str:
    """What is wrong with an entry whose array rows are for ``fields`` in a store whose fields are ``names``."""
    if not fields:
        return "it has no array row"
    missing = [f for f in names if f not in fields]
    extra = [f for f in fields if f not in names]
    said = []
    if missing:
        said.append(f"no array for field(s) {', '.join(map(repr, missing))}")
    if extra:
        said.append(f"arrays for field(s) {', '.join(map(repr, extra))} the store does not have")
    return "; ".join(said) + f" (the store's fields are {', '.join(map(repr, names))})"


def verify_store(path: str | os.PathLike) -> VerifyReport:
    """Check the store at ``path`` and return a report naming every damaged entry and its source."""
    store = StoreHandle(path, readonly=True)
    root = store.root
    report = VerifyReport(str(root))
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":  # (a PostgreSQL server checks its own pages)
            problems = [r for (r,) in conn.execute(text("PRAGMA integrity_check"))]
            if problems != ["ok"]:
                report.catalog_problems += problems
        shard_rows, rows = entries_by_shard(conn)
        names = store_fields(conn, str(root))
        for key, live, source, fields in entries_with_other_fields(conn, names):
            report.damaged.append(Damage(key, source, _field_problem(names, fields), live))
    on_disk = shard_files_on_disk(root)
    files: dict[int, tuple[Path, int]] = {}
    for sid, (spath, size) in shard_rows.items():
        report.shards_checked += 1
        try:
            file = resolve_shard_path(root, spath)
        except CorruptStoreError as exc:
            report.shard_problems.append(str(exc))
            continue
        if not file.is_file():
            what = "is not a regular file" if file.exists() else "is missing"
            report.shard_problems.append(f"{file}: shard file {what}")
            continue
        real = file.stat().st_size
        if real < size:
            report.shard_problems.append(f"{file}: {real} bytes on disk, the catalog says {size}: truncated")
        files[sid] = (file, real)
    kept: dict[int, list[int]] = {sid: [] for sid in shard_rows}  # every row, in shard order
    live: dict[int, list[int]] = {sid: [] for sid in shard_rows}  # the live rows only
    for row in rows:
        kept.setdefault(row.shard_id, []).append(row.nbytes)
        if row.died is None:
            live.setdefault(row.shard_id, []).append(row.nbytes)
    known = {spath: sid for sid, (spath, _) in shard_rows.items()}
    report.reclaimable_bytes = sum(
        max(0, size - packed_size(kept[known[spath]])) if spath in known else size for spath, size in on_disk.items()
    )
    report.retired_bytes = sum(
        packed_size(kept[sid]) - packed_size(live.get(sid, [])) for sid in kept if shard_rows[sid][0] in on_disk
    )
    handle, handle_sid = None, None
    try:
        report.entries_checked = len({row.id for row in rows})
        for row in rows:
            report.arrays_checked += 1
            if row.shard_id not in files:
                reason = f"its shard (id {row.shard_id}) is missing or invalid"
                report.damaged.append(Damage(row.key, row.path, reason, row.died is None, row.field))
                continue
            file, real = files[row.shard_id]
            problem = _row_problem(row, file, real)
            if problem is None:
                if handle_sid != row.shard_id:
                    if handle is not None:
                        handle.close()
                    handle, handle_sid = open_regular(file), row.shard_id
                handle.seek(row.offset)
                data = handle.read(row.nbytes)
                report.bytes_checked += len(data)
                if not checksum_matches(data, row.checksum):
                    problem = f"checksum {checksum(data)} != {row.checksum} in {file} at offset {row.offset}"
            if problem is not None:
                report.damaged.append(Damage(row.key, row.path, problem, row.died is None, row.field))
    finally:
        if handle is not None:
            handle.close()
    return report
