"""The recorded scan state: a recompile reads the source rows of changed folders only, and classifies exactly as a
compile that reads them all (the oracle: the same compile with the state ignored)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from incremental_helpers import assert_same, load, store_contents, write_npy
from pg_helpers import catalog_sql

import lardon_store as ls
from lardon_store.compiler import pipeline


class RowsRead:
    """Spy on the plan: how many source rows and scanned files it classified, and whether the state was current."""

    def __init__(self, monkeypatch):
        self.rows: list[int] = []
        self.files: list[int] = []
        self.current: list[bool] = []
        classify, plan = pipeline._classify, pipeline.plan

        def spy_classify(conn, source, stats, rows, force):
            self.rows.append(len(rows))
            self.files.append(len(stats))
            return classify(conn, source, stats, rows, force)

        def spy_plan(*args, **kwargs):
            result = plan(*args, **kwargs)
            self.current.append(result.state_current)
            return result

        monkeypatch.setattr(pipeline, "_classify", spy_classify)
        monkeypatch.setattr(pipeline, "plan", spy_plan)


def make_folders(src, folders: int, per_folder: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for d in range(folders):
        for i in range(per_folder):
            write_npy(src / f"d{d:02d}" / f"s{i}.npy", rng.standard_normal(int(rng.integers(1, 9))).astype("f4"))


def summary_counts(store) -> tuple:
    s = store.last_compile
    return s.new, s.changed, s.unchanged, s.deleted, s.failed, sorted(s.known_failures)


def test_no_change_reads_no_source_row(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_folders(src, 10, 5)
    ls.compile(src, dst, load)
    spy = RowsRead(monkeypatch)
    store = ls.compile(src, dst, load)
    assert summary_counts(store) == (0, 0, 50, 0, 0, [])
    assert spy.rows == [0] and spy.current == [True]
    generations = len(store.history())
    ls.compile(src, dst, load)
    assert len(ls.open(dst).history()) == generations  # (a no-change compile commits no generation)


def test_one_changed_file_reads_the_rows_of_its_folder_only(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_folders(src, 10, 5)
    make_folders(src / "d03" / "sub", 2, 3, seed=1)  # (a subfolder's rows lie in d03/'s path range)
    ls.compile(src, dst, load)
    write_npy(src / "d03" / "s2.npy", np.arange(7, dtype="f4"))
    spy = RowsRead(monkeypatch)
    store = ls.compile(src, dst, load)
    assert summary_counts(store) == (0, 1, 55, 0, 0, [])
    assert spy.rows == [5] and spy.files == [5]
    (src / "d03" / "sub" / "d01" / "s0.npy").unlink()
    write_npy(src / "d03" / "new.npy", np.ones(3, "f4"))
    store = ls.compile(src, dst, load)
    assert summary_counts(store) == (1, 0, 55, 1, 0, [])
    assert spy.rows[1:] == [5 + 3] and spy.files[1:] == [6 + 2]
    assert_same(store_contents(dst), store_contents(ls.compile(src, tmp_path / "fresh", load).root))


def test_many_changed_folders_and_removed_folders(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_folders(src, 30, 2)
    write_npy(src / "top.npy", np.zeros(2, "f4"))
    ls.compile(src, dst, load)
    for d in range(20):
        write_npy(src / f"d{d:02d}" / "s0.npy", np.full(d + 1, d, "f4"))
    shutil.rmtree(src / "d29")
    spy = RowsRead(monkeypatch)
    store = ls.compile(src, dst, load)
    assert summary_counts(store) == (0, 20, 61 - 20 - 2, 2, 0, [])
    assert spy.rows == [20 * 2 + 2]  # (every row read once, only the changed folders' kept)
    (src / "top.npy").unlink()
    store = ls.compile(src, dst, load)
    assert summary_counts(store) == (0, 0, 58, 1, 0, [])
    assert spy.rows[1:] == [1]  # (the top folder: the rows without a "/")
    assert_same(store_contents(dst), store_contents(ls.compile(src, tmp_path / "fresh", load).root))


def test_other_writes_a_new_version_and_a_bad_state_mean_reading_every_row(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_folders(src, 4, 3)
    ls.compile(src, dst, load, callback_version="1")
    spy = RowsRead(monkeypatch)
    with ls.LardonParser(None, dst) as parser:  # (another writer: a new generation)
        parser.register(np.ones(2, "f4"), {}, filename="extra.npy")
    assert summary_counts(ls.compile(src, dst, load, callback_version="1")) == (0, 0, 12, 0, 0, [])
    assert spy.rows == [12] and spy.current == [False]
    assert summary_counts(ls.compile(src, dst, load, callback_version="2")) == (0, 12, 0, 0, 0, [])
    assert spy.rows[1:] == [12]
    bad_values = (
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"version": "2", "generation": "x", "folders": {}, "failed": []}),
        json.dumps({"version": "2", "generation": 99, "folders": {}, "failed": [1]}),
    )
    for bad in bad_values:
        catalog_sql(dst, "UPDATE store_info SET value = ? WHERE key = 'scan_state'", (bad,), write=True)
        assert summary_counts(ls.compile(src, dst, load, callback_version="2")) == (0, 0, 12, 0, 0, [])
    assert spy.rows[2:] == [12, 12, 12, 12]
    assert summary_counts(ls.compile(src, dst, load, callback_version="2")) == (0, 0, 12, 0, 0, [])
    assert spy.rows[6:] == [0]
    assert summary_counts(ls.compile(src, dst, load, callback_version="2", force=True)) == (0, 12, 0, 0, 0, [])


def test_exclude_and_extensions_change_what_is_scanned(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "store"
    make_folders(src, 3, 3)
    (src / "d01" / "notes.txt").write_text("x")
    assert summary_counts(ls.compile(src, dst, load, ["npy"], exclude=["d01/s1*"])) == (8, 0, 0, 0, 0, [])
    assert summary_counts(ls.compile(src, dst, load, ["npy"])) == (1, 0, 8, 0, 0, [])
    assert summary_counts(ls.compile(src, dst, load, ["npy"], exclude=["*/s0.npy"])) == (0, 0, 6, 3, 0, [])
    store = ls.compile(src, dst, load, on_error="skip")
    assert summary_counts(store) == (3, 0, 6, 0, 1, [])
    store = ls.compile(src, dst, load, on_error="skip")
    assert summary_counts(store) == (0, 0, 9, 0, 0, ["d01/notes.txt"])


def plans_with_and_without_the_state(src, dst, version: str) -> tuple:
    """The plan of the next compile, made with the recorded state and with it ignored (each in a transaction that
    is rolled back)."""
    from lardon_store.compiler.scan import scan_tree
    from lardon_store.handle import StoreHandle

    handle = StoreHandle.create(dst)
    scan = scan_tree(src, None, dst)
    found = []
    for ignore in (False, True):
        with handle.engine.connect() as conn, conn.begin() as transaction:
            original = pipeline.recorded_state
            if ignore:
                pipeline.recorded_state = lambda conn, version: None
            try:
                made = pipeline.plan(conn, src, scan, version, False)
            finally:
                pipeline.recorded_state = original
            found.append((made.todo, sorted(made.deleted), made.unchanged, made.known_failures))
            transaction.rollback()
    return tuple(found)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["write", "touch", "delete", "bad"]),
            st.sampled_from(["a.npy", "x/a.npy", "x/b.npy", "x/y/a.npy", "x/y/z/a.npy", "w/a.npy", "w2/a.npy"]),
            st.integers(1, 5),
        ),
        max_size=6,
    ),
    rounds=st.integers(1, 3),
)
def test_plan_with_the_state_equals_the_plan_without(tmp_path_factory, edits, rounds):
    """Random edits between compiles: the plan made with the recorded state equals the one made reading every
    source row, and the store ends equal to a fresh compile of the sources."""
    tmp = tmp_path_factory.mktemp("state")
    src, dst = tmp / "src", tmp / "store"
    clock = 1_700_000_000 * 10**9
    for name in ["a.npy", "x/a.npy", "x/y/a.npy", "w/a.npy"]:
        write_npy(src / name, np.arange(3, dtype="f4"), mtime_ns=clock)
    ls.compile(src, dst, load, on_error="skip", callback_version="t")
    for r in range(rounds):
        for i, (what, name, n) in enumerate(edits[r::rounds] if rounds > 1 else edits):
            clock += 1_000_000_007
            path = src / name
            if what == "write":
                write_npy(path, np.full(n, i, "f4"), mtime_ns=clock)
            elif what == "bad":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"not npy")
                os.utime(path, ns=(clock, clock))
            elif path.exists() and what == "touch":
                os.utime(path, ns=(clock, clock))
            elif path.exists():
                path.unlink()
        with_state, without = plans_with_and_without_the_state(src, dst, "t")
        assert with_state == without
        ls.compile(src, dst, load, on_error="skip", callback_version="t")
    shutil.rmtree(tmp / "fresh", ignore_errors=True)
    fresh = ls.compile(src, tmp / "fresh", load, on_error="skip", callback_version="t")
    assert_same(store_contents(dst), store_contents(fresh.root))


@pytest.mark.parametrize("layout", ["flat", "deep"])
def test_scan_digests_change_with_any_stat(tmp_path, layout):
    from lardon_store.compiler.scan import scan_tree

    src = tmp_path / "src"
    folder = src if layout == "flat" else src / "a" / "b"
    write_npy(folder / "f.npy", np.zeros(3, "f4"), mtime_ns=10**18)
    write_npy(folder / "g.npy", np.zeros(3, "f4"), mtime_ns=10**18)
    key = "" if layout == "flat" else "a/b/"
    first = scan_tree(src, None, None).folders
    assert set(first) == {key}
    os.utime(folder / "f.npy", ns=(10**18 + 1, 10**18 + 1))
    second = scan_tree(src, None, None).folders
    write_npy(folder / "f.npy", np.zeros(4, "f4"), mtime_ns=10**18 + 1)
    third = scan_tree(src, None, None).folders
    (folder / "g.npy").rename(folder / "h.npy")
    fourth = scan_tree(src, None, None).folders
    assert len({first[key], second[key], third[key], fourth[key]}) == 4
