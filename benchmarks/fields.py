"""Issue 14's benchmark: an aligned crop of three fields against three raw numpy memory-map slices of the same
windows, in one run.

Run: python benchmarks/fields.py [--entries 40] [--repeats 3000] [--length 64]
Entries hold audio (float32, 256 samples per step), a mel spectrogram (float32, (80, T)) and f0 (float32, (T,)),
with T about 1,000 steps. Each timed read is ``sel.crop(i, start, length)`` (the three windows, read from the
store's maps and copied), against ``np.array(m[window])`` on three ``np.load(mmap_mode="r")`` arrays of the same
sources; the readers take turns first on each pick, after one untimed pass over the same picks. Goal: ≤ 1.3×.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from reads import interleaved_medians

import lardon_store as ls

GOAL = 1.3
ALIGN = {"audio": (0, 256), "mel": (-1, 1), "f0": (0, 1)}


def features(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """The callback: the three fields, read from the raw ``.npy`` files the baseline maps (``src/<field>/``)."""
    p = Path(path)
    return {f: np.load(p.parent.parent / f / p.name) for f in ALIGN}, {}


def bench(tmp: Path, n_entries: int, repeats: int, length: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    src = tmp / "raw"
    for f in ALIGN:
        (src / f).mkdir(parents=True)
    steps = []
    for n in range(n_entries):
        t = int(rng.integers(900, 1100))
        steps.append(t)
        np.save(src / "audio" / f"x{n:04d}.npy", rng.standard_normal(t * 256 + 100, dtype=np.float32))
        np.save(src / "mel" / f"x{n:04d}.npy", rng.random((80, t), np.float32))
        np.save(src / "f0" / f"x{n:04d}.npy", rng.random(t, np.float32))
    store = ls.compile(src / "audio", tmp / "store", features, align=ALIGN)
    sel = store.all()
    assert sel.steps.tolist() == steps
    raw = [{f: np.load(src / f / f"x{n:04d}.npy", mmap_mode="r") for f in ALIGN} for n in range(n_entries)]

    def raw_crop(i: int, start: int) -> dict[str, np.ndarray]:
        m = raw[i]
        a, b = start * 256, (start + length) * 256
        return {"audio": np.array(m["audio"][a:b]), "mel": np.array(m["mel"][:, start : start + length]),
                "f0": np.array(m["f0"][start : start + length])}  # fmt: skip

    picks = [(int(i), int(rng.integers(0, steps[i] - length))) for i in rng.integers(0, n_entries, repeats)]
    for i, start in picks[:50]:
        ours, theirs = sel.crop(i, start, length), raw_crop(i, start)
        assert all(np.array_equal(ours[f], theirs[f]) for f in ALIGN)
    ours, theirs = interleaved_medians([lambda i, s: sel.crop(i, s, length), raw_crop], picks)
    return ours, theirs, ours / theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3000)
    parser.add_argument("--length", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        ours, theirs, ratio = bench(Path(d), args.entries, args.repeats, args.length)
    print(f"aligned crop of {args.length} steps (audio {args.length * 256}, mel (80, {args.length}), f0 "
          f"{args.length}), {args.entries} entries, median of {args.repeats} random crops; load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'sel.crop µs':>12} {'3 raw memmap slices µs':>23} {'ratio':>6} {'goal':>6}")
    print(f"{ours:>12.1f} {theirs:>23.1f} {ratio:>6.2f} {GOAL:>5.1f}x {'ok' if ratio <= GOAL else 'MISSED'}")


if __name__ == "__main__":
    main()
