"""Incremental recompilation: only new and changed sources run the callback, and the store always equals a fresh
compile of the current tree."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from incremental_helpers import assert_same, check_catalog, expected, load, make_tree, store_contents, write_npy
from pg_helpers import catalog_sql

import lardon_store as ls
from lardon_store.cli import main

NAMES = [f"{d}/f{i}.npy" for d in ("a", "b/c") for i in range(4)]
contents = st.lists(st.integers(-3, 3), min_size=1, max_size=6)


class Counting:
    """The tests' loader, counting its calls per source path."""

    def __init__(self):
        self.calls: Counter[str] = Counter()

    def __call__(self, path: str):
        self.calls[path] += 1
        return load(path)


class IncrementalMachine(RuleBasedStateMachine):
    """Random edits of a source tree between compiles and gcs."""

    @initialize()
    def setup(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="lardon-inc-"))
        self.src, self.dst = self.tmp / "src", self.tmp / "store"
        self.src.mkdir()
        self.clock = 1_700_000_000 * 10**9
        self.files: dict[str, bytes] = {}  # current content of each source file
        self.compiled: dict[str, bytes] = {}  # content at the last compile that ran the callback on it
        self.bad: set[str] = set()
        self.failed_stat: dict[str, tuple[int, int]] = {}  # (size, mtime_ns) of each bad file when it last failed
        self.loader = Counting()

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _tick(self) -> int:
        self.clock += 1_000_000_007  # distinct, well-separated mtimes
        return self.clock

    def _write(self, name: str, values: list[int] | None) -> None:
        path = self.src / name
        if values is None:  # not an .npy file: the callback fails on it
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not an npy file")
            self.bad.add(name)
        else:
            write_npy(path, np.asarray(values, dtype="i2"))
            self.bad.discard(name)
        t = self._tick()
        os.utime(path, ns=(t, t))
        self.files[name] = path.read_bytes()

    @rule(name=st.sampled_from(NAMES), values=contents)
    def add_or_modify(self, name, values):
        self._write(name, values)

    @rule(name=st.sampled_from(NAMES))
    def add_bad(self, name):
        self._write(name, None)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def delete(self, data):
        name = data.draw(st.sampled_from(sorted(self.files)))
        (self.src / name).unlink()
        del self.files[name]
        self.bad.discard(name)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def touch(self, data):
        name = data.draw(st.sampled_from(sorted(self.files)))
        t = self._tick()
        os.utime(self.src / name, ns=(t, t))

    @rule()
    def compile(self):
        self.loader.calls.clear()
        store = ls.compile(self.src, self.dst, self.loader, callback_version="v1", on_error="skip")
        stat = {n: (os.stat(self.src / n).st_size, os.stat(self.src / n).st_mtime_ns) for n in self.files}
        known = {n for n in self.bad if self.failed_stat.get(n) == stat[n]}  # failed, unchanged since: not run
        want_calls = {
            name
            for name, content in self.files.items()
            if (name in self.bad and name not in known) or (name not in self.bad and self.compiled.get(name) != content)
        }
        assert set(self.loader.calls) == {str(self.src / n) for n in want_calls}
        assert all(n == 1 for n in self.loader.calls.values())
        summary = store.last_compile
        assert summary.failed == len(self.bad) - len(known) and sorted(summary.known_failures) == sorted(known)
        assert summary.new + summary.changed + summary.failed == len(want_calls)
        assert summary.unchanged == len(self.files) - len(want_calls) - len(known)
        self.compiled = {n: c for n, c in self.files.items() if n not in self.bad}
        self.failed_stat = {n: stat[n] for n in self.bad}
        failed = [f["path"] for f in store.info().failed_sources]
        assert failed == sorted(self.bad)
        self._check_equals_fresh_compile()

    @precondition(lambda self: (self.dst / "catalog.sqlite").exists())
    @rule()
    def gc(self):
        before = store_contents(self.dst)
        ls.gc_store(self.dst, keep_seconds=0)
        assert_same(store_contents(self.dst), before)
        report = ls.verify_store(self.dst)
        assert report.ok and report.reclaimable_bytes == report.retired_bytes == 0

    def _check_equals_fresh_compile(self):
        fresh = self.tmp / "fresh"
        shutil.rmtree(fresh, ignore_errors=True)
        ls.compile(self.src, fresh, load, on_error="skip")
        assert_same(store_contents(self.dst), store_contents(fresh))
        check_catalog(self.dst)

    @invariant()
    def store_is_intact(self):
        if (self.dst / "catalog.sqlite").exists():
            assert ls.verify_store(self.dst).ok


TestIncremental = IncrementalMachine.TestCase
TestIncremental.settings = settings(
    max_examples=30, stateful_step_count=12, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_touch_runs_no_callback_and_keeps_ids(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 6)
    loader = Counting()
    ls.compile(src, dst, loader)
    placed = 'SELECT id, key, shard_id, "offset" FROM entries JOIN arrays ON entry_id = id ORDER BY key'
    rows = catalog_sql(dst, placed)
    for path in src.rglob("*.npy"):
        path.touch()
    loader.calls.clear()
    summary = ls.compile(src, dst, loader).last_compile
    assert not loader.calls and summary.unchanged == 6
    assert catalog_sql(dst, placed) == rows


def test_content_hashes_of_the_previous_release_still_tell_a_touch_from_a_change(tmp_path):
    """Stores written before XXH3 hold bare SHA-256 hex digests: a touched source stays unchanged, an edited one
    (same size, new content) is recompiled."""
    import hashlib

    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 4)
    ls.compile(src, dst, load)
    for (path,) in catalog_sql(dst, "SELECT path FROM sources"):
        digest = hashlib.sha256((src / path).read_bytes()).hexdigest()
        catalog_sql(dst, "UPDATE sources SET content_hash = ? WHERE path = ?", (digest, path), write=True)
    files = sorted(src.rglob("*.npy"))
    files[0].touch()
    edited = np.load(files[1])
    write_npy(files[1], edited + 1)  # same size, new bytes, new mtime
    summary = ls.compile(src, dst, load).last_compile
    assert (summary.unchanged, summary.changed) == (3, 1)
    assert_same(store_contents(dst), expected(src))


def test_callback_version_and_force_recompile_everything(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 5)
    loader = Counting()
    ls.compile(src, dst, loader, callback_version="1")
    for kwargs in ({"callback_version": "1", "force": True}, {"callback_version": "2"}):
        loader.calls.clear()
        summary = ls.compile(src, dst, loader, **kwargs).last_compile
        assert len(loader.calls) == 5 and summary.changed == 5
    loader.calls.clear()
    assert ls.compile(src, dst, loader, callback_version="2").last_compile.unchanged == 5
    assert not loader.calls


def test_default_version_is_the_callbacks_fingerprint(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 3)

    def first(path):
        return load(path)

    def second(path):
        array, md = load(path)
        return array * 2, md

    assert ls.compile(src, dst, first).last_compile.new == 3
    assert ls.compile(src, dst, first).last_compile.unchanged == 3
    assert ls.compile(src, dst, second).last_compile.changed == 3
    np.testing.assert_array_equal(ls.open(dst)[0], 2 * expected(src)[ls.open(dst).keys[0]][0])


def test_fingerprint_of_callable_objects_is_stable():
    from lardon_store.compiler.callback import callback_fingerprint

    assert callback_fingerprint(Counting()) == callback_fingerprint(Counting())
    assert callback_fingerprint(load) != callback_fingerprint(Counting())


def test_callback_error_aborts_naming_the_source_and_keeps_earlier_sources(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 6)
    ls.compile(src, dst, load, callback_version="1")
    before = store_contents(dst)
    write_npy(src / "d0" / "s000.npy", np.arange(3.0))
    write_npy(src / "d2" / "s005.npy", np.arange(4.0))

    def fails_on_s005(path):
        if path.endswith("s005.npy"):
            raise RuntimeError("cannot decode")
        return load(path)

    with pytest.raises(ls.CallbackError, match=r"s005\.npy.*RuntimeError: cannot decode") as info:
        ls.compile(src, dst, fails_on_s005, callback_version="1")
    assert isinstance(info.value.__cause__, RuntimeError)
    after = store_contents(dst)
    np.testing.assert_array_equal(after["d0/s000"][0], np.arange(3.0))  # compiled before the failure: kept
    np.testing.assert_array_equal(after["d2/s005"][0], before["d2/s005"][0])  # the failed source: untouched
    check_catalog(dst)
    assert ls.compile(src, dst, load, callback_version="1").last_compile.changed == 1
    assert_same(store_contents(dst), expected(src))


def test_multi_entry_source_failing_midway_leaves_nothing_partial(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 3)

    def pairs(path):
        array, md = load(path)
        return [(array, md), (array + 1, md)]

    def bad_second(path):
        array, md = load(path)
        return [(array, md), (np.array(["text"]), md)]

    ls.compile(src, dst, pairs)
    before = store_contents(dst)
    write_npy(src / "d1" / "s001.npy", np.arange(5.0))
    with pytest.raises(ls.InvalidDataError, match=r"s000\.npy item 1"):
        ls.compile(src, dst, bad_second, callback_version="x")
    assert_same(store_contents(dst), before)


def test_skip_records_failures_reports_them_until_they_change_and_info_lists_them(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 4)
    (src / "d0" / "broken.npy").write_bytes(b"garbage")
    store = ls.compile(src, dst, load, on_error="skip", callback_version="1")
    summary = store.last_compile
    assert summary.failed == 1 and summary.new == 4 and summary.failures[0][0] == "d0/broken.npy"
    assert [f["path"] for f in store.info().failed_sources] == ["d0/broken.npy"]
    assert main(["info", str(dst)]) == 0
    assert "FAILED     d0/broken.npy" in capsys.readouterr().out
    loader = Counting()
    again = ls.compile(src, dst, loader, callback_version="1").last_compile  # (on_error="raise": nothing raised)
    assert list(loader.calls) == [] and again.known_failures == ["d0/broken.npy"] and again.failed == 0
    assert main(["compile", str(src), str(dst), "--callback-version", "1", "--quiet"]) == 0  # an unchanged run
    assert "known failures" in capsys.readouterr().out
    forced = ls.compile(src, dst, loader, callback_version="1", on_error="skip", force=True).last_compile
    assert forced.failed == 1 and str(src / "d0" / "broken.npy") in loader.calls  # retried with force
    write_npy(src / "d0" / "broken.npy", np.ones(2))
    store = ls.compile(src, dst, loader, on_error="skip", callback_version="1")
    assert store.info().failed_sources == [] and len(store) == 5


def test_cli_compile_prints_the_summary(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 3)
    assert main(["compile", str(src), str(dst), "--quiet", "--callback-version", "1"]) == 0
    assert "3 new" in capsys.readouterr().out
    (src / "d0" / "s000.npy").unlink()
    assert main(["compile", str(src), str(dst), "--quiet", "--callback-version", "1", "--on-error", "skip"]) == 0
    assert "2 unchanged, 1 deleted" in capsys.readouterr().out
    assert main(["gc", str(dst)]) == 0
    assert "bytes reclaimed" in capsys.readouterr().out


def test_a_new_file_clashing_with_a_compiled_key_is_refused(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 2)
    ls.compile(src, dst, load, callback_version="1")
    before = store_contents(dst)
    (src / "d0" / "s000.x").write_bytes((src / "d0" / "s000.npy").read_bytes())
    with pytest.raises(ls.InvalidDataError, match=r"d0/s000\.npy.*d0/s000\.x|d0/s000\.x.*d0/s000\.npy"):
        ls.compile(src, dst, load, callback_version="1")
    assert_same(store_contents(dst), before)


def test_excluded_sources_are_as_if_absent(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_tree(src, 6)
    (src / "d0" / "broken.npy").write_bytes(b"garbage")
    with pytest.raises(ls.CallbackError):
        ls.compile(src, dst, load)
    store = ls.compile(src, dst, load, exclude=["*broken*"])
    assert "d0/broken" not in store.keys and len(store) == 6
    store = ls.compile(src, dst, load, exclude=["d1/*", "*broken*"])
    assert all(not k.startswith("d1/") for k in store.keys) and store.last_compile.deleted == 2
    assert main(["compile", str(src), str(dst), "--exclude", "*broken*", "--quiet"]) == 0
    assert "d1/" in " ".join(ls.open(dst).keys)
