"""Issue 13's benchmark: the catalog on PostgreSQL beside SQLite, and compiles on workers and on a Dask cluster.

Run: python benchmarks/cluster.py [--entries 1000000] [--files 10000] [--pg URL]
Needs a PostgreSQL server: ``--pg`` (a URL of a database this user may create databases from, e.g. the
maintenance database ``postgres``), or the one ``.ci/postgres.sh`` starts (``LARDON_STORE_TEST_PG``); and the
``dask`` extra.

1. Catalogs: the same ``--entries`` tiny entries with four metadata keys (instrument: 8 strings, pitch: int 0-127,
   split: 3 strings, duration: float), written through the library into a SQLite store and a PostgreSQL store.
   Printed per backend: ``open()``; the first ``where()`` of a fresh handle (it loads the query snapshot: the entry
   columns and the keys queried); warm ``where()`` of a 1 % and a 10 % selection (medians); the SQL form of the same
   conditions (``store.select(expr.sql())``, ids only). PostgreSQL / SQLite ratios beside them.
2. Compiles: ``--files`` waveforms through a CPU-heavy STFT callback (``run.stft_callback``) with ``workers=0``,
   ``workers=2``, and a 2-worker Dask ``LocalCluster`` (``executor=client.get_executor()``), with the speed-ups over
   ``workers=0`` and the machine's measured 2-process capacity (``run.parallel_capacity``) beside them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from run import parallel_capacity, stft_callback
from sqlalchemy import create_engine, make_url
from sqlalchemy.pool import NullPool

import lardon_store as ls
from lardon_store import meta
from lardon_store.testing import store_from_arrays

INSTRUMENTS = ["violin", "cello", "flute", "oboe", "horn", "harp", "piano", "voice"]
SPLITS = ["train", "valid", "test"]


def new_database(server: str) -> str:
    """A new database on the server of ``server`` (a URL); its URL."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_database(server: str, url: str) -> None:
    engine = create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    engine.dispose()


def items(n: int):
    rng = np.random.default_rng(0)
    inst, pitch = rng.integers(0, 8, n), rng.integers(0, 128, n)
    split, duration = rng.integers(0, 3, n), rng.random(n) * 10
    x = np.zeros(2, np.float32)
    for i in range(n):
        md = {"instrument": INSTRUMENTS[inst[i]], "pitch": int(pitch[i]), "split": SPLITS[split[i]],
              "duration": float(duration[i])}  # fmt: skip
        yield f"e{i:07d}", x, md


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_catalog(root: Path, catalog: str | None, n: int) -> dict[str, float]:
    from lardon_store.handle import StoreHandle

    t0 = time.perf_counter()
    StoreHandle.create(root, catalog)  # (the PostgreSQL database, or the SQLite file)
    store_from_arrays(root, items(n))
    built = time.perf_counter() - t0
    one = (meta.instrument == "violin") & (meta.pitch < 13)  # about 1 %
    ten = (meta.split == "valid") & (meta.pitch < 38)  # about 10 %
    out = {"build s": built, "open ms": median_ms(lambda: ls.open(root), 7)}
    fresh = ls.open(root)
    t0 = time.perf_counter()
    n1 = len(fresh.where(one))
    out["first where() ms"] = (time.perf_counter() - t0) * 1e3
    n10 = len(fresh.where(ten))
    out["1% where() ms"] = median_ms(lambda: fresh.where(one), 15)
    out["10% where() ms"] = median_ms(lambda: fresh.where(ten), 15)
    out["1% SQL form ms"] = median_ms(lambda: fresh.select(one.sql()), 5)
    out["10% SQL form ms"] = median_ms(lambda: fresh.select(ten.sql()), 5)
    out["selected"] = (n1, n10)
    assert len(fresh.select(one.sql())) == n1 and len(fresh.select(ten.sql())) == n10
    return out


def bench_compiles(work: Path, n_files: int) -> tuple[dict[str, float], float]:
    import distributed

    src = work / "wav"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i in range(n_files):
        np.save(src / f"w{i:05d}.npy", rng.standard_normal(16000).astype(np.float32))
    times: dict[str, float] = {"workers=0": float("inf"), "workers=2": float("inf"), "dask 2 workers": float("inf")}
    capacity = parallel_capacity()
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c,
        distributed.Client(c) as client,
    ):
        client.run(lambda: __import__("run"))  # (warm the workers: imports done before timing)
        for _attempt in range(2):  # best of two rounds, alternating, as other processes may share the CPUs
            for name in times:
                target = work / name.replace(" ", "_").replace("=", "")
                shutil.rmtree(target, ignore_errors=True)
                extra = {"workers": 2} if name == "workers=2" else {}
                if name.startswith("dask"):
                    extra = {"executor": client.get_executor()}
                t0 = time.perf_counter()
                ls.compile(src, target, stft_callback, callback_version="v1", **extra)
                times[name] = min(times[name], time.perf_counter() - t0)
    stores = [ls.open(work / name.replace(" ", "_").replace("=", "")) for name in times]
    assert all(s.keys == stores[0].keys for s in stores)
    assert all(np.array_equal(stores[0][i], s[i]) for s in stores[1:] for i in range(0, len(s), 97))
    return times, (capacity + parallel_capacity()) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--pg", default=os.environ.get("LARDON_STORE_TEST_PG"))
    args = parser.parse_args()
    if not args.pg:
        raise SystemExit("give --pg URL (a PostgreSQL server), or start one with .ci/postgres.sh")
    work = Path(tempfile.mkdtemp(prefix="lardon-dist-"))
    database = new_database(args.pg)
    try:
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        print(f"catalogs of {args.entries:,} entries (4 metadata keys), written through the library")
        sqlite = bench_catalog(work / "sqlite", None, args.entries)
        postgres = bench_catalog(work / "postgres", database, args.entries)
        print(f"  {'measure':<20} {'SQLite':>12} {'PostgreSQL':>12} {'ratio':>7}")
        for k in sqlite:
            if k == "selected":
                continue
            print(f"  {k:<20} {sqlite[k]:>12.1f} {postgres[k]:>12.1f} {postgres[k] / sqlite[k]:>7.2f}")
        print(f"  (1 % and 10 % selections: {sqlite['selected'][0]:,} and {sqlite['selected'][1]:,} entries)")
        print(f"compile of {args.files:,} waveforms through a CPU-heavy STFT callback (best of 2)")
        times, capacity = bench_compiles(work, args.files)
        base = times["workers=0"]
        for name, t in times.items():
            speedup = base / t
            print(f"  {name:<16} {t:>8.2f} s  speed-up {speedup:>5.2f}x  of the 2-process capacity "
                  f"{speedup / capacity:>5.2f}")  # fmt: skip
        print(f"  machine's 2-process capacity: {capacity:.2f}x; load average now {os.getloadavg()[0]:.2f}")
    finally:
        drop_database(args.pg, database)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
