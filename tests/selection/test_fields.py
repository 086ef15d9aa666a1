"""Entries with several named fields: aligned crops against numpy slices of the sources, and every refusal."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fields_helpers import AUDIO_ALIGN, aligned_entry, fields_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lardon_store as ls
from lardon_store.format.fields import field_axis


@st.composite
def field_sets(draw):
    """A store's worth of entries: per field an ndim, a time axis (maybe negative), a rate, and whether it is
    aligned; per entry a number of steps and, per aligned field, extra samples within the tolerance."""
    tolerance = draw(st.integers(0, 2))
    names = draw(st.lists(st.sampled_from(["audio", "mel", "f0", "loud", "x_1"]), min_size=1, max_size=4, unique=True))
    specs = {}
    for name in names:
        ndim = draw(st.integers(1, 3))
        axis = draw(st.integers(-ndim, ndim - 1))
        specs[name] = (ndim, axis, draw(st.integers(1, 5)), draw(st.booleans()) or name == names[0])
    entries = {}
    for e in range(draw(st.integers(1, 4))):
        steps = draw(st.integers(0, 12))
        fields = {}
        for name, (ndim, axis, rate, aligned) in specs.items():
            shape = [draw(st.integers(1, 3)) for _ in range(ndim)]
            if aligned:
                shape[field_axis(axis, ndim)] = steps * rate + draw(st.integers(0, rate * (tolerance + 1) - 1))
            size = int(np.prod(shape))
            fields[name] = (np.arange(size, dtype=np.int32) + 1000 * e).reshape(shape)
        entries[f"e{e}"] = fields
    align = {name: (axis, rate) for name, (_, axis, rate, aligned) in specs.items() if aligned}
    return entries, align, tolerance


def expected_steps(fields: dict[str, np.ndarray], align: dict) -> int:
    return min(fields[n].shape[field_axis(a, fields[n].ndim)] // r for n, (a, r) in align.items())


def numpy_window(fields, align, start: int, length: int) -> dict[str, np.ndarray]:
    out = {}
    for name, x in fields.items():
        if name in align:
            axis, rate = align[name]
            axis = field_axis(axis, x.ndim)
            x = x[(slice(None),) * axis + (slice(start * rate, (start + length) * rate),)]
        out[name] = x
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field_sets(), st.data())
def test_every_crop_equals_the_numpy_slices_of_the_sources(case, data):
    entries, align, tolerance = case
    tmp = Path(tempfile.mkdtemp())
    try:
        store = fields_store(tmp, entries, align=align, align_tolerance=tolerance)
        names = sorted(entries)
        assert store.fields == tuple(sorted(entries["e0"])) and store.alignment == dict(sorted(align.items()))
        steps = store.steps
        assert steps.tolist() == [expected_steps(entries[n], align) for n in names]
        for i, name in enumerate(names):
            n = int(steps[i])
            start = data.draw(st.integers(0, n))
            length = data.draw(st.integers(0, n - start))
            crop = store.crop(i, start, length)
            want = numpy_window(entries[name], align, start, length)
            assert crop.keys() == want.keys()
            for f in want:
                np.testing.assert_array_equal(crop[f], want[f])
                assert crop[f].dtype == want[f].dtype
            # A window past the entry's steps is refused, never cut short.
            for bad_start, bad_length in ((n - length + 1, length), (-1, 1), (0, n + 1)):
                with pytest.raises(IndexError, match=repr(name)):
                    store.crop(i, bad_start, bad_length)
            whole = store[i]
            for f in entries[name]:
                np.testing.assert_array_equal(whole[f], entries[name][f])
                np.testing.assert_array_equal(store.field(f)[i], entries[name][f])
    finally:
        shutil.rmtree(tmp)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    rng = np.random.default_rng(0)
    entries = {f"s{i}": aligned_entry(rng, 70 + 10 * i, {"audio": i * 37, "mel": i % 2}) for i in range(4)}
    metadata = {name: {"speaker": "p225" if i % 2 else "p226", "n": i} for i, name in enumerate(sorted(entries))}
    store = fields_store(tmp_path_factory.mktemp("audio"), entries, AUDIO_ALIGN, metadata)
    return store, entries


def test_the_issue_example(audio):
    store, entries = audio
    assert store.fields == ("audio", "f0", "mel")
    sel = store.where(speaker="p225")
    assert sel.keys == ["s1", "s3"] and sel.steps.tolist() == [80, 100]
    np.testing.assert_array_equal(sel.field("mel")[1, :, 10:74], entries["s3"]["mel"][:, 10:74])
    crop = sel.crop(1, start=10, length=64)
    assert {k: v.shape for k, v in crop.items()} == {"audio": (16384,), "f0": (64,), "mel": (80, 64)}
    np.testing.assert_array_equal(crop["audio"], entries["s3"]["audio"][2560 : 2560 + 16384])
    a = sel.random_crop(0, length=64, rng=np.random.default_rng(5))
    b = sel.random_crop(0, length=64, rng=np.random.default_rng(5))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    start = int(a["f0"][0] - entries["s1"]["f0"][0])
    np.testing.assert_array_equal(a["audio"], entries["s1"]["audio"][start * 256 : (start + 64) * 256])
    np.testing.assert_array_equal(a["mel"], entries["s1"]["mel"][:, start : start + 64])
    only = sel.crop(1, 10, 4, fields=("f0",))
    assert list(only) == ["f0"]


def test_random_crops_cover_every_start_and_stay_inside(audio):
    store, entries = audio
    starts = set()
    rng = np.random.default_rng(1)
    for _ in range(400):
        c = store.random_crop(0, 66, rng=rng, fields=("f0",))
        starts.add(int(round(float(c["f0"][0] - entries["s0"]["f0"][0]))))
    assert starts == set(range(0, 70 - 66 + 1))


def test_short_entries_raise_unless_padded(audio):
    store, entries = audio
    with pytest.raises(IndexError, match="'s0' has 70 steps, fewer than the crop's 72"):
        store.random_crop(0, 72)
    padded = store.random_crop(0, 72, pad=True)
    assert {k: v.shape for k, v in padded.items()} == {"audio": (72 * 256,), "f0": (72,), "mel": (80, 72)}
    np.testing.assert_array_equal(padded["audio"][: 70 * 256], entries["s0"]["audio"][: 70 * 256])
    assert not padded["audio"][70 * 256 :].any() and not padded["mel"][:, 70:].any()


def test_whole_entries_are_dicts_and_one_field_reads_point_to_field(audio):
    store, entries = audio
    item = store[2]
    assert sorted(item) == ["audio", "f0", "mel"]
    for read in (lambda: store[2, 0:4], lambda: store.shape, lambda: store.shape_of(0), lambda: store.show(0)):
        with pytest.raises(ls.FieldError, match=r"sel.field\(name\)"):
            read()
    with pytest.raises(ls.FieldError, match="no field 'pitch'; the entries have fields 'audio', 'f0', 'mel'"):
        store.field("pitch")
    lazy = store.entry(2)["mel"]
    assert lazy.shape == entries["s2"]["mel"].shape
    np.testing.assert_array_equal(np.asarray(lazy[:, 3:9]), entries["s2"]["mel"][:, 3:9])
    for read in (lambda: np.asarray(store.entry(2)), lambda: store.entry(2).ndim, lambda: store.entry(2).nbytes,
                 lambda: len(store.entry(2)), lambda: store.select(batch_mode="pad")[0:2]):  # fmt: skip
        with pytest.raises(ls.FieldError, match=r"choose one with sel.field\(name\) \(e.g. sel.field\('audio'\)\)"):
            read()
    with pytest.raises(TypeError, match="crop length must be an int, not float"):
        store.random_crop(0, 64.7)
    mel = store.field("mel")
    assert mel.shape == (4, 80, (70, 101)) and mel.fields == store.fields
    assert len(mel.scatter(0)) == 4 * 80
    assert store[[0, 1]][1].keys() == item.keys()  # (a list of dicts in the default batch mode)
    rows = store.rows()
    assert rows[0]["fields"]["mel"] == {"shape": [80, 70], "dtype": "<f4"} and "shape" not in rows[0]
    assert store.nbytes == sum(x.nbytes for e in entries.values() for x in e.values())


def test_info_describes_each_field(audio):
    store, _ = audio
    info = store.info()
    assert info.fields["mel"] == {2: ([80, 70], [80, 101])} and info.alignment["audio"] == (0, 256)
    assert info.dtypes == {"audio: <f4": 4, "f0: <f4": 4, "mel: <f4": 4} and info.shape_ranges == {}
    assert "field      mel: (80, 70..101), time axis -1, 1 per step" in str(info)


def test_selections_of_bare_arrays_have_no_fields(store):
    assert store.fields == () and store.alignment == {}
    with pytest.raises(ls.FieldError, match="bare arrays"):
        store.field("audio")
    with pytest.raises(ls.FieldError, match="no alignment spec"):
        _ = store.steps


def test_a_store_without_alignment_carries_fields_whole(tmp_path):
    entries = {"a": {"x": np.ones((2, 3)), "y": np.arange(4)}, "b": {"x": np.zeros((1, 1)), "y": np.arange(9)}}
    store = fields_store(tmp_path, entries)
    assert store.fields == ("x", "y") and store.alignment == {}
    np.testing.assert_array_equal(store[1]["y"], np.arange(9))
    with pytest.raises(ls.FieldError, match="align="):
        store.crop(0, 0, 1)
