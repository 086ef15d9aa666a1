"""``StoreInfo``: the summary ``Store.info()`` returns, and its human-readable form (what ``lardon-store info``
prints); ``Generation``: one line of ``Store.history()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Generation", "StoreInfo"]


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """A store's summary: entries, bytes, dtypes, shape ranges per ndim, metadata keys, shards, failed sources; for
    entries with named fields, the shape ranges of each field (``fields``; ``dtypes`` then counts ``"field:
    dtype"``) and the alignment spec."""

    root: str
    revision: str | None
    entries: int
    bytes: int
    dtypes: dict[str, int]
    shape_ranges: dict[int, tuple[list[int], list[int]]]  # ndim -> (min, max) size of each axis
    metadata_keys: list[str]
    shards: int
    shard_bytes: int
    failed_sources: list[dict[str, str]] = field(default_factory=list)  # {"path": ..., "error": ...}
    generation: int = 0
    fields: dict[str, dict[int, tuple[list[int], list[int]]]] = field(default_factory=dict)  # named fields' ranges
    alignment: dict[str, tuple[int, int]] = field(default_factory=dict)  # field -> (axis, rate)
    catalog: str = ""  # the catalog file, or the PostgreSQL URL (without password)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready values (``lardon-store info --json``)."""
        return asdict(self)

    def __str__(self) -> str:
        lines = [
            f"store      {self.root} (catalog revision {self.revision})",
            *([f"catalog    {self.catalog}"] if self.catalog.startswith("postgresql") else []),
            f"entries    {self.entries:,} ({self.bytes / 1e6:,.1f} MB in {self.shards} shard(s)), generation "
            f"{self.generation}",
            "dtypes     " + ", ".join(f"{d}: {n:,}" for d, n in sorted(self.dtypes.items())),
        ]
        for nd, (lo, hi) in sorted(self.shape_ranges.items()):
            lines.append(f"shapes     {nd}-d: ({_dims(lo, hi)})")
        for name, ranges in self.fields.items():
            shapes = "; ".join(f"({_dims(lo, hi)})" for _, (lo, hi) in sorted(ranges.items()))
            aligned = (
                f", time axis {self.alignment[name][0]}, {self.alignment[name][1]} per step"
                if name in self.alignment
                else ""
            )
            lines.append(f"field      {name}: {shapes}{aligned}")
        lines.append("metadata   " + (", ".join(self.metadata_keys) or "(none)"))
        for failure in self.failed_sources:
            lines.append(f"FAILED     {failure['path']}: {failure['error']}")
        return "\n".join(lines)


def _dims(lo: list[int], hi: list[int]) -> str:
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in zip(lo, hi))


@dataclass(frozen=True, slots=True)
class Generation:
    """One committed write of a store: its number, when (UTC), what made it, and the entries it added and removed."""

    generation: int
    created_at: datetime
    operation: str
    added: int
    removed: int

    def __str__(self) -> str:
        when = self.created_at.strftime("%Y-%m-%d %H:%M:%S")
        return f"{self.generation:>6}  {when} UTC  {self.operation:<14} +{self.added} -{self.removed}"
