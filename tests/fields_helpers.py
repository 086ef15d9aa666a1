"""Building stores whose entries have named fields, from arrays held in a dict (the oracle of the fields tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import lardon_store as ls


def write_markers(folder: Path, names: list[str]) -> Path:
    """One tiny ``.npy`` source per entry name: the callback looks the entry's fields up by the file's stem."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        np.save(folder / f"{name}.npy", np.zeros(1, np.int8))
    return folder


def fields_callback(entries: dict[str, dict[str, np.ndarray]], metadata: dict[str, dict] | None = None):
    """A callback returning ``entries[stem]`` (a dict of fields) and its metadata."""

    def callback(path: str):
        stem = Path(path).stem
        return entries[stem], (metadata or {}).get(stem, {"name": stem})

    return callback


def fields_store(tmp: Path, entries: dict[str, dict[str, np.ndarray]], align=None, metadata=None, **kwargs) -> ls.Store:
    """A store compiled from ``entries`` (entry name -> {field: array}) with ``align``."""
    src = write_markers(tmp / "raw", sorted(entries))
    return ls.compile(src, tmp / "store", fields_callback(entries, metadata), align=align, **kwargs)


def aligned_entry(rng: np.random.Generator, steps: int, extra: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """An audio (256 per step), mel (80, T) and f0 (T,) entry of ``steps`` steps; ``extra`` adds samples to
    fields. Values encode their position, so a crop shows where it came from."""
    extra = extra or {}
    audio = np.arange(steps * 256 + extra.get("audio", 0), dtype=np.float32)
    t = steps + extra.get("mel", 0)
    mel = (np.arange(80, dtype=np.float32)[:, None] * 1000 + np.arange(t, dtype=np.float32)).astype(np.float32)
    f0 = np.arange(steps + extra.get("f0", 0), dtype=np.float32) + rng.standard_normal()
    return {"audio": audio, "mel": mel, "f0": f0}


AUDIO_ALIGN = {"audio": (0, 256), "mel": (-1, 1), "f0": (0, 1)}
