"""Issue 2's benchmark: read latency against raw numpy memory maps, and open time of a 1M-entry catalog.

Run: python benchmarks/reads.py [--entries 40] [--repeats 3000]
Prints median µs per read for three patterns on float32 entries of shape (2, 513, T≈3000), for lardon_store and for
raw `np.load(mmap_mode='r')` slicing in the same run, with the ratio and its goal; then the time to `open()` a store
whose catalog holds 1,000,000 tiny entries (rows bulk-inserted), which must not read every row.

lardon_store is read two ways: through a Selection (``sel = store.all()``: pinned to a generation, what a training
loop reads from; the goal applies to it), and through the Store itself (``store[i, ...]``), which first checks that
it is current (one ``PRAGMA data_version`` and one ``stat`` of the catalog, a few microseconds).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import lardon_store as ls
from lardon_store.testing import empty_store


def bench_reads(tmp: Path, n_entries: int, repeats: int) -> list[tuple[str, float, float, float]]:
    rng = np.random.default_rng(0)
    src = tmp / "raw"
    src.mkdir()
    for n in range(n_entries):
        np.save(src / f"x{n:04d}.npy", rng.random((2, 513, int(rng.integers(2900, 3100))), np.float32))
    store = ls.compile(src, tmp / "store", valid_exts=[".npy"])
    raw = [np.load(f, mmap_mode="r") for f in sorted(src.glob("*.npy"))]
    cases = [
        ("[:, :, t:t+64]", 1.2, lambda t: (slice(None), slice(None), slice(t, t + 64))),
        ("[:, k]", 2.0, lambda t: (slice(None), t % 513)),
        ("[0, a:a+16]", 1.5, lambda t: (0, slice(t % 497, t % 497 + 16))),
    ]
    sel = store.all()  # a Selection: pinned to a generation, what training reads from
    rows = []
    for name, goal, index in cases:
        picks = [(int(i), index(int(rng.integers(0, 2800)))) for i in rng.integers(0, n_entries, repeats)]
        readers = [
            lambda i, idx: sel[(i, *idx)],
            lambda i, idx: store[(i, *idx)],
            lambda i, idx: np.array(raw[i][idx]),
        ]
        rows.append((name, *interleaved_medians(readers, picks), goal))
    return rows


def interleaved_medians(readers: list, picks: list[tuple]) -> list[float]:
    """The median µs of each ``reader(*pick)`` over ``picks``: one untimed pass warms every path (page cache and
    page tables) over the same picks; then they are timed interleaved, read by read, each reader going first in
    turn (the first read of a pick fills the CPU caches), so that machine noise hits them alike."""
    n = len(readers)
    times: list[list[float]] = [[] for _ in readers]
    for timed in (False, True):
        for k, pick in enumerate(picks):
            for r in range(n):
                which = (k + r) % n
                t0 = time.perf_counter()
                readers[which](*pick)
                if timed:
                    times[which].append(time.perf_counter() - t0)
    return [statistics.median(x) * 1e6 for x in times]


def bench_open(tmp: Path, n: int) -> float:
    root = tmp / "big"
    empty_store(root)
    (root / "blobs" / "shard-000001.bin").write_bytes(b"\x00" * 64)
    con = sqlite3.connect(root / "catalog.sqlite")
    with con:
        con.execute("INSERT INTO shards (id, path, size) VALUES (1, 'blobs/shard-000001.bin', 64)")
        con.executemany(
            "INSERT INTO entries (id, key, source_id, metadata, born) VALUES (?, ?, NULL, '{}', 1)",
            ((i, f"e{i:07d}") for i in range(1, n + 1)),
        )
        con.execute(
            "INSERT INTO arrays (entry_id, field, shard_id, offset, nbytes, dtype, shape, checksum) "
            "SELECT id, '', 1, 0, 4, '<f4', '[1]', 'crc32:00000000' FROM entries"
        )
        con.execute("UPDATE store_info SET value = ? WHERE key = 'next_entry_id'", (str(n + 1),))
    con.close()
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        store = ls.open(root)
        times.append(time.perf_counter() - t0)
        del store
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3000)
    parser.add_argument("--open-entries", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(f"reads: float32 (2, 513, T≈3000), {args.entries} entries, median of {args.repeats} random reads")
        print(f"{'pattern':<16} {'selection µs':>13} {'raw memmap µs':>14} {'ratio':>6} {'goal':>6}  "
              f"{'store[...] µs':>13} {'ratio':>6}")  # fmt: skip
        for name, ours, current, theirs, goal in bench_reads(tmp, args.entries, args.repeats):
            verdict = "ok" if ours / theirs <= goal else "MISSED"
            print(f"{name:<16} {ours:>13.1f} {theirs:>14.1f} {ours / theirs:>6.2f} {goal:>5.1f}x {verdict:<6}  "
                  f"{current:>13.1f} {current / theirs:>6.2f}")  # fmt: skip
        ms = bench_open(tmp, args.open_entries)
        print(f"open() of a {args.open_entries:,}-entry catalog: {ms:.1f} ms (goal < 50 ms) "
              f"{'ok' if ms < 50 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
