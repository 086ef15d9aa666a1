"""The demo: a synthetic spectrogram dataset, compiled, summarised, and timed against raw numpy memory maps."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .query.expressions import meta
from .store import compile

INSTRUMENTS = ("violin", "cello", "flute", "piano")


def demo_callback(path: str) -> tuple[np.ndarray, dict]:
    """Load ``<instrument>/p<pitch>_<n>.npy`` with its labels taken from the path."""
    p = Path(path)
    pitch = int(p.stem.split("_")[0][1:])
    return np.load(p, allow_pickle=False), {
        "instrument": p.parent.name,
        "pitch": pitch,
        "split": "valid" if int(p.stem.split("_")[1]) % 5 == 0 else "train",
    }


def make_dataset(source: Path, n_files: int, seed: int = 0) -> None:
    """Write ``n_files`` float32 spectrograms of shape (2, 513, T), T varying, under ``source/<instrument>/``."""
    rng = np.random.default_rng(seed)
    for n in range(n_files):
        folder = source / INSTRUMENTS[n % len(INSTRUMENTS)]
        folder.mkdir(parents=True, exist_ok=True)
        frames = int(rng.integers(300, 900))
        x = rng.random((2, 513, frames), np.float32)
        np.save(folder / f"p{int(rng.integers(40, 90))}_{n:05d}.npy", x)


def run_demo(directory: str | os.PathLike, n_files: int = 200) -> None:
    """Build (or reuse) the dataset in ``directory``, compile it incrementally, print a summary and timings."""
    root = Path(directory)
    source, target = root / "raw", root / "store"
    if not source.is_dir():
        print(f"writing {n_files} synthetic spectrograms to {source} ...")
        make_dataset(source, n_files)
    store = compile(source, target, demo_callback, [".npy"])
    print(f"compiled {source} -> {target}: {store.last_compile}")
    print(store.info())

    files = sorted(source.rglob("*.npy"))
    raw = [np.load(f, mmap_mode="r") for f in files]
    rng = np.random.default_rng(1)
    picks = [(int(i), int(rng.integers(0, raw[i].shape[2] - 64))) for i in rng.integers(0, len(raw), 2000)]
    ours, theirs = [], []
    for timed in (False, True):  # an untimed pass warms both (page cache, page tables); then timed read by read
        for i, t in picks:
            t0 = time.perf_counter()
            store[i, :, :, t : t + 64]
            t1 = time.perf_counter()
            np.array(raw[i][:, :, t : t + 64])
            t2 = time.perf_counter()
            if timed:
                ours.append(t1 - t0)
                theirs.append(t2 - t1)
    a, b = float(np.median(ours)) * 1e6, float(np.median(theirs)) * 1e6
    print(f"random crop x[i][:, :, t:t+64]: lardon_store {a:.1f} µs, raw np.load(mmap_mode='r') {b:.1f} µs "
          f"(ratio {a / b:.2f})")  # fmt: skip
    violins = store.where(meta.instrument == "violin", meta.pitch > 60)
    print(f'store.where(meta.instrument == "violin", meta.pitch > 60): {len(violins)} entries; first: '
          f"{violins.keys[0] if len(violins) else None} {violins.metadata(0) if len(violins) else ''}")  # fmt: skip
    print(f"store.distinct('split'): {store.distinct('split')}")
    try:
        store.show(0).savefig(root / "entry.png")
        store.plot("pitch").savefig(root / "pitch.png")
        print(f"pictures: {root / 'entry.png'} (store.show(0)), {root / 'pitch.png'} (store.plot('pitch'))")
    except ImportError:
        print("pictures skipped: matplotlib is not installed (pip install lardon_store[plot])")
    print(f"try: python -c \"import lardon_store as ls; s = ls.open('{target}'); print(s[0, :, :, 10:20].shape)\"")
