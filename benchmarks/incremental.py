"""Incremental recompilation: 10,000 small source files, a full compile, then one changed file, then no change.

Goals (issue 4): one-change recompile <= 5 % of the full compile's time, no-change <= 3 %.

    python benchmarks/incremental.py [--files 10000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import lardon_store as ls


def make_sources(src: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = src / f"part{i // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"item{i:05d}.npy", rng.standard_normal((16, int(rng.integers(8, 64)))).astype("f4"))


def timed(src: Path, dst: Path) -> tuple[float, ls.CompileSummary]:
    started = time.perf_counter()
    store = ls.compile(src, dst)
    return time.perf_counter() - started, store.last_compile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lardon-bench-inc-"))
    src, dst = work / "src", work / "store"
    try:
        make_sources(src, args.files)
        full, summary = timed(src, dst)
        print(f"full compile     {full:8.3f} s   ({summary})")
        ones, nones = [], []
        for i in range(3):  # the median of 3 runs each: the machine may be shared
            changed = src / "part00" / f"item{i:05d}.npy"
            np.save(changed, np.ones((16, 20 + i), dtype="f4"))
            os.utime(changed, ns=(time.time_ns() + 10**9,) * 2)
            seconds, summary = timed(src, dst)
            assert summary.changed == 1 and summary.unchanged == args.files - 1, summary
            ones.append(seconds)
            seconds, summary = timed(src, dst)
            assert summary.unchanged == args.files, summary
            nones.append(seconds)
        one, none = statistics.median(ones), statistics.median(nones)
        print(f"one file changed {one:8.3f} s   (median of {', '.join(f'{t:.3f}' for t in ones)})")
        print(f"no change        {none:8.3f} s   (median of {', '.join(f'{t:.3f}' for t in nones)})")
        print(f"one-change / full = {one / full:6.2%}   (goal <= 5%)")
        print(f"no-change  / full = {none / full:6.2%}   (goal <= 3%)")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
