"""Metadata query speed on a large catalog: indexed ``meta_values`` filters against a scan of the JSON column.

Builds a catalog of N entries (default 1,000,000) with 4 metadata keys (instrument: 10 strings, pitch: int 0-99,
split: 80/10/10 strings, duration: float 0-10), every entry pointing at the same tiny array of a single shard, rows
bulk-inserted in one transaction. Then times, as the median of several runs, queries that return a Selection:

- 1 %:  instrument == 'violin' and 60 <= pitch < 70
- 10 %: instrument == 'violin' and duration < 10.0 (every duration is below 10)

each through ``store.where`` and through ``store.select`` with the same filter written with ``json_extract`` on
``entries.metadata`` (no index). ``where`` evaluates the query with numpy on the store's query snapshot (the entry
columns and each named key's values): the first query of a process loads it, and its time is printed apart, twice:
read from the catalog (no kept snapshot in the store's ``snapshot/`` folder), and read from the snapshot kept there
by the run before. The medians are of the queries after it. The "one SQL statement" columns time the SQL
form of the same query (``Expr.sql()``, answered by SQLite from the ``meta_values`` indexes), ids only. Prints
milliseconds and ratios.

    python benchmarks/query.py [--entries 1000000] [--dir DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import and_, func, select

from lardon_store import meta
from lardon_store.catalog.schema import entries
from lardon_store.format.layout import CATALOG_NAME, SNAPSHOT_DIR
from lardon_store.store import open_store
from lardon_store.testing import empty_store

INSTRUMENTS = ["violin", "cello", "flute", "oboe", "horn", "harp", "piano", "organ", "guitar", "bass"]


def build(root: Path, n: int) -> None:
    """A store at ``root`` with ``n`` entries, inserted directly with executemany in one transaction (all born at
    the store's first generation, ids taken as the writer would)."""
    empty_store(root)
    (root / "blobs" / "shard-000000.bin").write_bytes(np.arange(2, dtype="<f4").tobytes())
    rng = np.random.default_rng(0)
    inst = rng.integers(0, len(INSTRUMENTS), n)
    pitch = rng.integers(0, 100, n)
    split = rng.choice(np.array(["train", "valid", "test"]), n, p=[0.8, 0.1, 0.1])
    duration = np.round(rng.uniform(0, 10, n), 3)
    con = sqlite3.connect(root / CATALOG_NAME)
    con.execute("PRAGMA synchronous = OFF")
    indexes = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'meta_values' "
                          "AND sql IS NOT NULL").fetchall()  # fmt: skip
    with con:
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        con.execute("INSERT INTO shards (id, path, size) VALUES (1, 'blobs/shard-000000.bin', 8)")
        names = [INSTRUMENTS[i] for i in inst.tolist()]
        pitches, splits, durations = pitch.tolist(), split.tolist(), duration.tolist()
        con.executemany(
            "INSERT INTO entries (id, key, source_id, metadata, born) VALUES (?, ?, NULL, ?, 1)",
            (
                (i + 1, f"e{i:07d}", f'{{"duration":{d},"instrument":"{s}","pitch":{p},"split":"{t}"}}')
                for i, (s, p, t, d) in enumerate(zip(names, pitches, splits, durations))
            ),
        )
        con.execute(
            "INSERT INTO arrays (entry_id, field, shard_id, offset, nbytes, dtype, shape, checksum) "
            "SELECT id, '', 1, 0, 8, '<f4', '[2]', '0' FROM entries"
        )
        sql = "INSERT INTO meta_values (entry_id, key, type, num, text) VALUES (?, ?, ?, ?, ?)"
        con.executemany(sql, ((i + 1, "instrument", "str", None, s) for i, s in enumerate(names)))
        con.executemany(sql, ((i + 1, "pitch", "int", float(p), None) for i, p in enumerate(pitches)))
        con.executemany(sql, ((i + 1, "split", "str", None, t) for i, t in enumerate(splits)))
        con.executemany(sql, ((i + 1, "duration", "float", d, None) for i, d in enumerate(durations)))
        for _, create in indexes:
            con.execute(create)
        con.execute("UPDATE store_info SET value = ? WHERE key = 'next_entry_id'", (str(n + 1),))
    con.execute("ANALYZE")
    con.close()


def median_ms(fn, repeat: int) -> tuple[float, int]:
    fn()
    times, size = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        size = len(fn())
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--dir", help="build the catalog here (default: a temporary folder, removed at the end)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lardon-query-bench-"))
    try:
        t = time.perf_counter()
        build(root / "store", args.entries)
        print(f"built {args.entries:,} entries x 4 keys in {time.perf_counter() - t:.1f} s")
        store = open_store(root / "store")
        md = entries.c.metadata

        def jx(key):
            return func.json_extract(md, f"$.{key}")

        cases = [
            ("1% ", (meta.instrument == "violin") & (meta.pitch >= 60) & (meta.pitch < 70),
             and_(jx("instrument") == "violin", jx("pitch") >= 60, jx("pitch") < 70)),
            ("10%", (meta.instrument == "violin") & (meta.duration < 10.0),
             and_(jx("instrument") == "violin", jx("duration") < 10.0)),
        ]  # fmt: skip
        firsts = {}
        for kept in (False, True):  # a new handle is what a fresh process has: no snapshot in memory
            if not kept:
                shutil.rmtree(root / "store" / SNAPSHOT_DIR, ignore_errors=True)
            store = open_store(root / "store")
            t = time.perf_counter()
            first = store.where(cases[0][1])
            firsts[kept] = (time.perf_counter() - t) * 1e3
        print(f"first where() of a process ({len(first):,} entries; the snapshot's entry columns and 2 keys): "
              f"read from the catalog {firsts[False]:.0f} ms, from the kept snapshot {firsts[True]:.0f} ms "
              f"(ratio {firsts[True] / firsts[False]:.3f}, goal <= 0.1)")  # fmt: skip
        for label, expr, scan in cases:
            indexed, n_indexed = median_ms(lambda e=expr: store.where(e), args.repeat)
            scanned, n_scanned = median_ms(lambda c=scan: store.select(c), args.repeat)
            assert n_indexed == n_scanned, (n_indexed, n_scanned)
            ids_only, _ = median_ms(lambda e=expr: _ids(store, e.sql()), args.repeat)
            ids_scan, _ = median_ms(lambda c=scan: _ids(store, c), args.repeat)
            print(
                f"{label} selection ({n_indexed:,} entries): where() {indexed:.1f} ms, JSON scan {scanned:.1f} ms, "
                f"ratio {scanned / indexed:.1f}x | ids only, one SQL statement: index {ids_only:.1f} ms, "
                f"JSON scan {ids_scan:.1f} ms, ratio {ids_scan / ids_only:.1f}x"
            )
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


def _ids(store, condition) -> list[int]:
    with store.engine.connect() as conn:
        return conn.execute(select(entries.c.id).where(condition)).scalars().all()


if __name__ == "__main__":
    main()
