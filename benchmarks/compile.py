"""Compile speed against the machine's other ways of writing the same arrays, every figure measured in one run.

    python benchmarks/compile.py [--entries 200] [--tiny 100000] [--files 10000] [--stft 48] [--quick]

1. **Durable MB/s**: ``--entries`` float32 spectrograms of shape (2, 513, T), T in [2900, 3100) (200 entries: about
   2.5 GB), saved as ``.npy`` sources first (not timed). Then, best of three alternating rounds, each made durable
   (fsync) before its clock stops:
   ``lardon_store.compile`` of the sources; h5py writing the same arrays (from memory) as contiguous datasets of
   one file; ``np.save`` of each array (from memory) to its own file. Goals: compile >= 0.9x h5py, >= 1.0x np.save.
2. **Tiny entries**: ``--tiny`` float32 arrays of 4 to 12 values, each with two metadata keys, given by one source
   whose callback returns them all; against h5py (one dataset per array, its metadata as attributes) and a raw blob
   with a binary index (``np.save`` of the concatenation and of the offsets), both fsynced. Goal: compile takes less
   time than h5py (aim: 50,000 entries/s, catalog included).
3. **Recompile**: ``--files`` small sources in 100 folders compiled into a new store (best of two), then again with
   no change and with one file changed (best of three each). Goals: no change <= 2 % of the full compile, one
   changed <= 3 %.
4. **Parallel**: ``--stft`` waveforms through a CPU-heavy STFT callback (``run.stft_callback``, about 50 ms each) with
   ``workers=2`` and ``workers=0``, best of two alternating rounds, against the machine's 2-process capacity measured
   around them (``run.parallel_capacity``: 2.0 on two idle cores). Goal: speed-up >= 0.8x of that capacity.

The load average is printed at the start and the end: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # (run.py: the STFT callback and the capacity probe)

import lardon_store  # noqa: E402


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def row(label: str, value: str, reference: str, ratio: float, goal: str = "", ok: bool | None = None) -> None:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"  {label:<44} {value:>14} {reference:>24} {ratio:>8.2f}x  {goal} {verdict}")


def bench_durable(n: int, work: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.random((2, 513, int(rng.integers(2900, 3100))), dtype=np.float32) for _ in range(n)]
    mb = sum(a.nbytes for a in arrays) / 1e6
    src = work / "src"
    src.mkdir()
    for i, a in enumerate(arrays):
        np.save(src / f"e{i:04d}.npy", a)
    os.sync()
    import h5py

    best = {"compile": float("inf"), "h5py": float("inf"), "np.save": float("inf")}
    for _round in range(3):
        shutil.rmtree(work / "store", ignore_errors=True)
        t0 = time.perf_counter()
        lardon_store.compile(src, work / "store")
        best["compile"] = min(best["compile"], time.perf_counter() - t0)
        path = work / "h5.h5"
        path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with h5py.File(path, "w") as f:
            for i, a in enumerate(arrays):
                f.create_dataset(f"e{i:04d}", data=a)
        fsync_path(path)
        best["h5py"] = min(best["h5py"], time.perf_counter() - t0)
        shutil.rmtree(work / "saved", ignore_errors=True)
        (work / "saved").mkdir()
        t0 = time.perf_counter()
        for i, a in enumerate(arrays):
            with open(work / "saved" / f"e{i:04d}.npy", "wb") as f:
                np.save(f, a)
                f.flush()
                os.fsync(f.fileno())
        best["np.save"] = min(best["np.save"], time.perf_counter() - t0)
        os.sync()
    speed = {k: mb / v for k, v in best.items()}
    print(f"durable writes of {n} arrays, {mb:,.0f} MB (best of 3 alternating rounds):")
    row("compile vs h5py contiguous + fsync", f"{speed['compile']:,.0f} MB/s", f"{speed['h5py']:,.0f} MB/s",
        speed["compile"] / speed["h5py"], "goal >= 0.9x", speed["compile"] >= 0.9 * speed["h5py"])  # fmt: skip
    row("compile vs np.save + fsync", f"{speed['compile']:,.0f} MB/s", f"{speed['np.save']:,.0f} MB/s",
        speed["compile"] / speed["np.save"], "goal >= 1.0x", speed["compile"] >= speed["np.save"])  # fmt: skip
    for folder in ("src", "store", "saved"):
        shutil.rmtree(work / folder, ignore_errors=True)
    (work / "h5.h5").unlink(missing_ok=True)


TINY: list[np.ndarray] = []


def tiny_callback(path: str) -> list[tuple[np.ndarray, dict]]:
    """One source standing for many tiny entries (the arrays made by bench_tiny)."""
    return [(a, {"i": i, "label": f"c{i % 10}"}) for i, a in enumerate(TINY)]


def bench_tiny(n: int, work: Path) -> None:
    import h5py

    rng = np.random.default_rng(1)
    TINY[:] = [rng.random(int(rng.integers(4, 13)), dtype=np.float32) for _ in range(n)]
    (work / "one").mkdir()
    (work / "one" / "all.bin").write_bytes(b"x")
    t0 = time.perf_counter()
    store = lardon_store.compile(work / "one", work / "tiny", tiny_callback, callback_version="1")
    t_compile = time.perf_counter() - t0
    assert len(store) == n
    path = work / "tiny.h5"
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        for i, a in enumerate(TINY):
            d = f.create_dataset(f"e{i:07d}", data=a)
            d.attrs["i"], d.attrs["label"] = i, f"c{i % 10}"
    fsync_path(path)
    t_h5 = time.perf_counter() - t0
    t0 = time.perf_counter()
    ends = np.cumsum([a.nbytes for a in TINY])
    with open(work / "blob.bin", "wb") as f:
        f.write(b"".join(a.tobytes() for a in TINY))
        f.flush()
        os.fsync(f.fileno())
    with open(work / "index.npy", "wb") as f:
        np.save(f, ends)
        f.flush()
        os.fsync(f.fileno())
    t_blob = time.perf_counter() - t0
    print(f"{n:,} tiny entries (4-12 float32 values, 2 metadata keys each):")
    row("compile vs h5py (one dataset each)", f"{t_compile:,.2f} s", f"h5py {t_h5:,.2f} s", t_compile / t_h5,
        "goal < 1x", t_compile < t_h5)  # fmt: skip
    row("compile entries/s vs raw blob + index", f"{n / t_compile:,.0f}/s", f"blob {t_blob:,.2f} s",
        t_compile / t_blob, "aim >= 50,000/s")  # fmt: skip
    shutil.rmtree(work / "tiny")
    shutil.rmtree(work / "one")


def bench_recompile(n: int, work: Path) -> None:
    src = work / "many"
    rng = np.random.default_rng(2)
    for i in range(n):
        folder = src / f"d{i % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"s{i:05d}.npy", rng.random(int(rng.integers(8, 64)), dtype=np.float32))
    os.sync()  # (the sources' own writeback would slow the stat calls of whichever compile runs beside it)
    t_full = float("inf")
    for _round in range(2):
        shutil.rmtree(work / "many_store", ignore_errors=True)
        os.sync()
        t0 = time.perf_counter()
        lardon_store.compile(src, work / "many_store")
        t_full = min(t_full, time.perf_counter() - t0)
    t_same = t_one = float("inf")
    for k in range(3):
        t0 = time.perf_counter()
        same = lardon_store.compile(src, work / "many_store")
        t_same = min(t_same, time.perf_counter() - t0)
        assert same.last_compile.unchanged == n
        np.save(src / f"d{k:02d}" / f"s{k:05d}.npy", np.ones(5 + k, np.float32))
        t0 = time.perf_counter()
        one = lardon_store.compile(src, work / "many_store")
        t_one = min(t_one, time.perf_counter() - t0)
        assert one.last_compile.changed == 1
    print(f"recompile of {n:,} small sources in 100 folders (best of 2 full compiles, {t_full:,.2f} s; best of 3 "
          "recompiles):")  # fmt: skip
    row("no change vs full compile", f"{t_same * 1e3:,.0f} ms", f"full {t_full * 1e3:,.0f} ms", t_same / t_full,
        "goal <= 0.02x", t_same <= 0.02 * t_full)  # fmt: skip
    row("one changed vs full compile", f"{t_one * 1e3:,.0f} ms", f"full {t_full * 1e3:,.0f} ms", t_one / t_full,
        "goal <= 0.03x", t_one <= 0.03 * t_full)  # fmt: skip
    shutil.rmtree(src)
    shutil.rmtree(work / "many_store")


def bench_parallel(n: int, work: Path) -> None:
    import run

    times, capacity = run.parallel_times(work, n)
    speedup = times[0] / times[2]
    print(f"parallel compile of {n} files through an STFT callback:")
    row("workers=2 speed-up vs 2-process capacity", f"{speedup:.2f}x", f"capacity {capacity:.2f}x",
        speedup / capacity, "goal >= 0.8x", speedup / capacity >= 0.8)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--tiny", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--stft", type=int, default=48)
    parser.add_argument("--quick", action="store_true", help="20 entries, 10,000 tiny, 2,000 files, 16 waveforms")
    parser.add_argument("--dir", help="work in this folder (default: a temporary one)")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.tiny, args.files, args.stft = 20, 10_000, 2_000, 16
    print(f"machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}; "
          f"load average at start: {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        work = Path(d)
        bench_durable(args.entries, work)
        bench_tiny(args.tiny, work)
        bench_recompile(args.files, work)
        bench_parallel(args.stft, work)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
