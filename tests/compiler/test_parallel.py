"""Parallel compile: callbacks in worker processes give the very same store as in the calling process."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pg_helpers import catalog_sql

import lardon_store
from lardon_store import CallbackError
from lardon_store.compiler.parallel import run_callbacks


def features(path: str):
    """Two entries per source, some metadata; fails on sources named bad*."""
    x = np.load(path)
    if "bad" in path:
        raise ValueError("bad source")
    return [(x * 2, {"n": int(x.size), "kind": "double"}), (x[::2].astype(np.int16), {"n": int(x[::2].size)})]


def _sources(root, n=30):
    rng = np.random.default_rng(1)
    for i in range(n):
        np.save(root / f"{'bad' if i % 11 == 5 else 'f'}{i:03d}.npy", rng.random(int(rng.integers(1, 300))))


def _dump(store) -> tuple:
    entries = catalog_sql(
        store.root,
        'SELECT e.key, s.path, a."offset", a.nbytes, a.dtype, a.shape, a.checksum, e.metadata '
        "FROM entries e JOIN arrays a ON a.entry_id = e.id JOIN shards s ON s.id = a.shard_id ORDER BY e.key",
    )
    srcs = catalog_sql(
        store.root, "SELECT path, size, content_hash, callback_version, status, error FROM sources ORDER BY path"
    )
    meta = catalog_sql(
        store.root,
        "SELECT e.key, m.key, m.type, m.num, m.text FROM meta_values m JOIN entries e ON e.id = m.entry_id "
        "ORDER BY e.key, m.key",
    )
    blobs = {p.name: p.read_bytes() for p in sorted((store.root / "blobs").iterdir())}
    return entries, srcs, meta, blobs


def test_workers_give_the_same_store(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _sources(src)
    stores = {}
    for workers in (0, 2):
        target = tmp_path / f"w{workers}"
        stores[workers] = lardon_store.compile(
            src, target, features, on_error="skip", workers=workers, max_shard_bytes=20_000
        )
    assert stores[0].last_compile.failed == stores[2].last_compile.failed == 3
    assert stores[0].last_compile.failures == stores[2].last_compile.failures
    assert _dump(stores[0]) == _dump(stores[2])
    # Incremental: change one source, delete one, add one.
    np.save(src / "f001.npy", np.arange(7.0))
    (src / "f002.npy").unlink()
    np.save(src / "g999.npy", np.ones(3))
    for workers in (0, 2):
        s = lardon_store.compile(src, tmp_path / f"w{workers}", features, on_error="skip", workers=workers,
                                 max_shard_bytes=20_000)  # fmt: skip
        assert (s.last_compile.new, s.last_compile.changed, s.last_compile.deleted) == (1, 1, 1)
    assert _dump(stores[0]) == _dump(stores[2])
    np.testing.assert_array_equal(stores[2].refresh()["f001#0"][()], np.arange(7.0) * 2)


def test_worker_error_raises_callback_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _sources(src, 8)
    with pytest.raises(CallbackError, match="bad005.npy: the callback raised ValueError: bad source"):
        lardon_store.compile(src, tmp_path / "st", features, workers=2)
    # Entries before the failing source may be committed or not, but what is there reads back.
    st = lardon_store.open(tmp_path / "st")
    for i in range(len(st)):
        st[i]


def dies(path: str):
    import os
    import signal

    if path.endswith("003.npy"):
        os.kill(os.getpid(), signal.SIGKILL)
    return np.load(path), {}


def test_dead_worker_stops_the_compile(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _sources(src, 6)
    with pytest.raises(CallbackError, match="a worker process died"):
        lardon_store.compile(src, tmp_path / "st", dies, workers=2)


def test_unpicklable_callback_is_refused_clearly(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _sources(src, 3)
    with pytest.raises(CallbackError, match="cannot be sent to worker processes.*workers=0"):
        lardon_store.compile(src, tmp_path / "st", lambda p: (np.load(p), {}), workers=2)
    # The same lambda works in the calling process.
    st = lardon_store.compile(src, tmp_path / "st", lambda p: (np.load(p), {}), workers=0)
    assert len(st) == 3


def test_run_callbacks_order_and_bounds():
    paths = [str(i) for i in range(40)]
    outcomes = run_callbacks(int, paths, workers=2)
    assert [o.unwrap() for o in outcomes] == list(range(40))
    bad = list(run_callbacks(int, ["1", "x", "3"], workers=2))
    assert bad[0].unwrap() == 1 and isinstance(bad[1].error, ValueError) and bad[2].unwrap() == 3
    stopped = run_callbacks(int, paths, workers=2)
    assert next(stopped).unwrap() == 0
    stopped.close()
    with pytest.raises(ValueError, match="workers must be >= 0"):
        run_callbacks(int, paths, workers=-1)


def passthrough(path: str):
    """One entry per source, or a list of entries for sources named multi*; sources named bad* fail."""
    if "bad" in path:
        raise RuntimeError(f"cannot read {path}")
    x = np.load(path)
    if "multi" in path:
        return [(x, {"part": 0}), (x[..., ::-1].copy(), {"part": 1, "label": "rev"})]
    return x, {"size": int(x.size), "mean": float(np.real(x).astype(np.float64).mean()) if x.size else None}


@settings(max_examples=15, deadline=None)
@given(
    sources=st.lists(
        st.tuples(
            st.sampled_from(["f", "multi", "bad"]),
            hnp.arrays(
                st.sampled_from([np.float32, np.int16, np.uint8, np.complex64, np.bool_]),
                hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
            ),
        ),
        max_size=12,
    ),
    shard=st.sampled_from([64, 256, 1 << 20]),
)
def test_workers_match_serial_property(tmp_path_factory, sources, shard):
    """Any sources, any shard size: workers=2 writes exactly the store workers=0 writes."""
    base = tmp_path_factory.mktemp("prop")
    src = base / "src"
    src.mkdir()
    for i, (kind, x) in enumerate(sources):
        np.save(src / f"{kind}{i:03d}.npy", x)
    dumps = []
    for workers in (0, 2):
        s = lardon_store.compile(src, base / f"w{workers}", passthrough, on_error="skip", workers=workers,
                                 max_shard_bytes=shard)  # fmt: skip
        dumps.append(_dump(s))
    assert dumps[0] == dumps[1]
