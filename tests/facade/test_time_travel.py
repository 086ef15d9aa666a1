"""Time travel against its oracle: ``store.at(g)`` for every generation gc kept equals the sources as they were at g;
and readers in other processes, holding pinned selections while a writer recompiles and collects, never see bytes of
one entry with the metadata of another."""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_generations import labelled

import lardon_store as ls

NAMES = [f"n{i}" for i in range(6)]


class TimeTravel(RuleBasedStateMachine):
    """Random writes, deletions, compiles and gcs; the sources are recorded at each generation."""

    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="lardon-time-"))
        self.src, self.dst = self.tmp / "src", self.tmp / "store"
        self.src.mkdir()
        self.files: dict[str, np.ndarray] = {}
        self.states: dict[int, dict[str, np.ndarray]] = {}
        self.required: set[int] = set()
        self.counter = 0

    @rule(name=st.sampled_from(NAMES), size=st.integers(0, 5))
    def write(self, name, size):
        self.counter += 1
        array = np.full(size, self.counter, np.int32)
        np.save(self.src / f"{name}.npy", array)
        self.files[name] = array

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def delete(self, data):
        name = data.draw(st.sampled_from(sorted(self.files)))
        (self.src / f"{name}.npy").unlink()
        del self.files[name]

    @rule()
    def compile(self):
        store = ls.compile(self.src, self.dst, labelled, max_shard_bytes=256)
        self.states[store.generation] = dict(self.files)
        self.required.add(store.generation)

    @precondition(lambda self: self.states)
    @rule(keep=st.integers(0, 3))
    def gc(self, keep):
        ls.gc_store(self.dst, keep_seconds=0, keep_generations=keep, max_shard_bytes=256)
        generations = [h.generation for h in ls.open(self.dst).history()]
        self.required = {g for g in self.required if g in generations[-1 - keep :]}

    @invariant()
    def each_kept_generation_is_the_sources_as_they_were(self):
        if not self.states:
            return
        store = ls.open(self.dst)
        for generation, files in self.states.items():
            try:
                sel = store.at(generation)
            except ls.GenerationExpiredError:
                assert generation not in self.required, f"generation {generation} should have been kept"
                continue
            assert sel.keys == sorted(files)
            for i, key in enumerate(sel.keys):
                np.testing.assert_array_equal(sel[i], files[key])
                assert sel.metadata(i) == {"name": f"{key}.npy", "total": float(files[key].sum())}

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


TimeTravel.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
test_time_travel_equals_the_sources_at_each_kept_generation = TimeTravel.TestCase


def _reader(root: str, manifests: list[dict], seconds: float, out) -> None:
    """Read pinned selections again and again; count mismatches of metadata and bytes, and expiries."""
    mismatches = expired = reads = 0
    deadline = time.monotonic() + seconds
    store = ls.open(root)
    while time.monotonic() < deadline:
        for manifest in [None, *manifests]:
            try:
                sel = store.all() if manifest is None else store.from_manifest(manifest)
                keys = sel.keys
                for i in range(len(sel)):
                    md = sel.metadata(i)
                    x = np.asarray(sel[i])
                    reads += 1
                    if md["name"] != keys[i] + ".npy" or float(x.sum()) != md["total"]:
                        mismatches += 1
            except ls.GenerationExpiredError:
                expired += 1
    out.put((mismatches, expired, reads))


def test_readers_of_pinned_selections_never_mix_generations(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        np.save(src / f"e{i:02d}.npy", rng.integers(0, 100, int(rng.integers(1, 40))).astype(np.float32))
    store = ls.compile(src, dst, labelled, max_shard_bytes=2048)
    manifests = [store.all().manifest(), store.where("total > 1000").manifest()]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(str(dst), manifests, 6.0, out)) for _ in range(8)]
    for p in readers:
        p.start()
    started, rounds = time.monotonic(), 0
    while time.monotonic() - started < 5.0:
        rounds += 1
        for i in rng.choice(20, 4, replace=False):
            path = src / f"e{i:02d}.npy"
            if path.exists() and rng.random() < 0.3:
                path.unlink()
            else:
                np.save(path, rng.integers(0, 100, int(rng.integers(1, 40))).astype(np.float32))
        ls.compile(src, dst, labelled, max_shard_bytes=2048)
        ls.gc_store(dst, keep_seconds=0.5, max_shard_bytes=2048)
    results = [out.get(timeout=60) for _ in readers]
    for p in readers:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(r[0] for r in results) == 0, results  # zero mismatches
    assert sum(r[2] for r in results) > 0 and rounds >= 3
    assert sum(r[1] for r in results) > 0  # the first generation's manifests expired while they were read
