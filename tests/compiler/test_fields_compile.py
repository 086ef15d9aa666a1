"""Compiling entries with named fields: what is refused (naming the source and the fields), what is recorded, and
incremental recompiles, gc and verify on such stores."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fields_helpers import AUDIO_ALIGN, aligned_entry, fields_callback, fields_store, write_markers
from pg_helpers import catalog_sql

import lardon_store as ls


def read_all(store: ls.Store) -> dict[str, tuple[dict, dict]]:
    """key -> (fields as lists, metadata): what a store holds, to compare two stores."""
    return {k: ({f: v.tolist() for f, v in store[i].items()}, store.metadata(i)) for i, k in enumerate(store.keys)}


@pytest.fixture
def entries():
    rng = np.random.default_rng(0)
    return {f"s{i}": aligned_entry(rng, 20 + i) for i in range(3)}


def test_misaligned_fields_are_refused_naming_the_source_and_fields_and_nothing_is_lost(tmp_path, entries):
    store = fields_store(tmp_path, entries, AUDIO_ALIGN)
    before = read_all(store)
    entries["s1"] = aligned_entry(np.random.default_rng(1), 21, {"mel": 3})  # 3 steps more than audio and f0
    np.save(tmp_path / "raw" / "s1.npy", np.ones(2, np.int8))  # (the source changed)
    with pytest.raises(ls.InvalidDataError) as info:
        ls.compile(tmp_path / "raw", tmp_path / "store", fields_callback(entries))
    message = str(info.value)
    assert (
        "s1.npy" in message and "'mel': 24 samples = 24 steps" in message and "'f0': 21 samples = 21 steps" in message
    )
    assert "disagree by more than 2 steps" in message
    assert read_all(ls.open(tmp_path / "store")) == before
    skipped = ls.compile(tmp_path / "raw", tmp_path / "store", fields_callback(entries), on_error="skip")
    assert skipped.last_compile.failed == 1 and "s1" not in skipped.keys
    assert ls.compile(tmp_path / "raw", tmp_path / "store", fields_callback(entries), align_tolerance=3, force=True)


def test_every_entry_has_the_same_fields(tmp_path, entries):
    entries["s2"] = {"audio": entries["s2"]["audio"], "mel": entries["s2"]["mel"]}
    with pytest.raises(ls.InvalidDataError, match=r"s2.npy: the callback returned fields 'audio', 'mel', but this "):
        fields_store(tmp_path, entries)
    bare = write_markers(tmp_path / "bare", ["a"])
    ls.compile(bare, tmp_path / "bare_store")
    with pytest.raises(ls.InvalidDataError, match="entries have bare arrays"):
        ls.compile(bare, tmp_path / "bare_store", lambda p: ({"x": np.ones(2)}, {}), force=True)


@pytest.mark.parametrize(
    "align, match",
    [
        ({"audio": (0, 0)}, r"align\['audio'\] = \(0, 0\): give \(axis, rate\)"),
        ({"audio": 256}, r"align\['audio'\] = 256"),
        ({"2x": (0, 1)}, "field name '2x' is not an identifier"),
        ([("audio", (0, 1))], "align must be a dict"),
        ({"nope": (0, 1)}, r"the alignment names field\(s\) 'nope', which the callback did not return"),
        ({"mel": (2, 1)}, "field 'mel' of shape .* has no axis 2"),
    ],
)
def test_bad_alignment_specs_are_refused(tmp_path, entries, align, match):
    with pytest.raises(ls.InvalidDataError, match=match):
        fields_store(tmp_path, entries, align)


def test_bad_fields_are_refused(tmp_path):
    cases = {"a": {"not ok": np.ones(2)}, "b": {}, "c": {"x": np.ma.masked_array([1, 2], [0, 1])}, "d": {"x": "s"}}
    for name, fields in cases.items():
        with pytest.raises(ls.InvalidDataError, match=f"{name}.npy"):
            fields_store(tmp_path / name, {name: fields})


def test_the_alignment_is_recorded_and_cannot_change(tmp_path, entries):
    store = fields_store(tmp_path, entries, AUDIO_ALIGN)
    entries["s3"] = aligned_entry(np.random.default_rng(3), 9)
    write_markers(tmp_path / "raw", ["s3"])
    again = ls.compile(tmp_path / "raw", tmp_path / "store", fields_callback(entries))  # (no align: the recorded)
    assert again.alignment == store.alignment and again.steps.tolist() == [20, 21, 22, 9]
    with pytest.raises(ls.InvalidDataError, match="this store was compiled with align="):
        ls.compile(tmp_path / "raw", tmp_path / "store", fields_callback(entries), align={"audio": (0, 128)})
    with pytest.raises(ls.InvalidDataError, match="the compile aligns fields"):
        ls.compile(tmp_path / "raw", tmp_path / "store", lambda p: (np.ones(3), {}), force=True)
    assert ls.compile(tmp_path / "raw", tmp_path / "store", fields_callback(entries), align=AUDIO_ALIGN).keys


def test_an_incremental_recompile_equals_a_fresh_compile(tmp_path, entries):
    fields_store(tmp_path, entries, AUDIO_ALIGN)
    entries["s1"] = aligned_entry(np.random.default_rng(9), 30)
    np.save(tmp_path / "raw" / "s1.npy", np.ones(3, np.int8))
    (tmp_path / "raw" / "s2.npy").unlink()
    del entries["s2"]
    write_markers(tmp_path / "raw", ["s9"])
    entries["s9"] = aligned_entry(np.random.default_rng(10), 12)
    incremental = ls.compile(tmp_path / "raw", tmp_path / "store", fields_callback(entries))
    assert incremental.last_compile.changed == 1 and incremental.last_compile.new == 1
    fresh = ls.compile(tmp_path / "raw", tmp_path / "fresh", fields_callback(entries), align=AUDIO_ALIGN)
    assert read_all(incremental) == read_all(fresh)
    assert incremental.steps.tolist() == fresh.steps.tolist() == [20, 30, 12]
    old = incremental.at(incremental.history()[0].generation + 1)  # the first compile's entries, still kept
    assert old.keys == ["s0", "s1", "s2"] and old.steps.tolist() == [20, 21, 22]


def test_gc_moves_every_field_and_verify_names_the_damaged_one(tmp_path, entries):
    fields_store(tmp_path, entries, AUDIO_ALIGN, max_shard_bytes=1)
    entries["s0"] = aligned_entry(np.random.default_rng(4), 25)
    np.save(tmp_path / "raw" / "s0.npy", np.ones(3, np.int8))
    store = ls.compile(tmp_path / "raw", tmp_path / "store", fields_callback(entries))
    pinned = store.all()
    expected = read_all(store)
    assert ls.open(tmp_path / "store", readonly=False).gc(keep_seconds=0) > 0
    assert read_all(ls.open(tmp_path / "store")) == expected
    np.testing.assert_array_equal(pinned.crop(1, 3, 5)["audio"], entries["s1"]["audio"][3 * 256 : 8 * 256])
    report = store.verify()
    assert report.ok and report.entries_checked == 3 and report.arrays_checked == 9
    [(path, offset)] = catalog_sql(
        tmp_path / "store",
        'SELECT s.path, a."offset" FROM arrays a JOIN entries e ON e.id = a.entry_id JOIN shards s '
        "ON s.id = a.shard_id WHERE e.key = 's2' AND a.field = 'mel' AND e.died IS NULL",
    )
    with open(tmp_path / "store" / path, "r+b") as f:
        f.seek(offset + 8)
        f.write(b"\xff\xff\xff\xff")
    report = store.verify()
    assert not report.ok and [(d.key, d.field) for d in report.damaged] == [("s2", "mel")]
    assert "DAMAGED    s2 field mel (source s2.npy)" in str(report) and report.damaged_sources == ["s2.npy"]


def test_an_entry_missing_a_field_is_damage_that_reads_and_verify_name(tmp_path, entries):
    store = fields_store(tmp_path, entries, AUDIO_ALIGN)
    catalog_sql(
        tmp_path / "store",
        "DELETE FROM arrays WHERE field = 'f0' AND entry_id = (SELECT id FROM entries WHERE key = 's1')",
        write=True,
    )
    shutil.rmtree(tmp_path / "store" / "snapshot", ignore_errors=True)
    report = store.verify()
    assert [(d.key, d.source) for d in report.damaged] == [("s1", "s1.npy")]
    assert "no array for field(s) 'f0' (the store's fields are 'audio', 'f0', 'mel')" in report.damaged[0].reason
    with pytest.raises(ls.CorruptStoreError, match=r"entry 's1' has arrays for fields \['audio', 'mel'\]"):
        _ = ls.open(tmp_path / "store").keys
