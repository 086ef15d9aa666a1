"""The seed's list behaviour (parse_folder, LardonParser) checked against numpy on in-memory copies of the data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import basic_indices

import lardon_store as lardon
from lardon_store import BatchError, InvalidDataError, StoreLockedError

SHAPES = [(3, 4, 7), (3, 2, 9), (3, 5, 4), (3, 4, 6), (3, 3, 8)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("lardon_list")
    arrays = [np.arange(np.prod(s), dtype=np.float32).reshape(s) * (i + 1) for i, s in enumerate(SHAPES)]
    with lardon.LardonParser(None, root / "store") as parser:
        for i, x in enumerate(arrays):
            parser.register(x, {"i": i, "name": f"item{i}"}, f"items/item_{i}.npy")
    return str(root / "store"), arrays


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_basic_indices_at_every_depth(dataset, data):
    path, arrays = dataset
    lst = lardon.parse_folder(path)
    i = data.draw(st.integers(-len(arrays), len(arrays) - 1))
    index = data.draw(basic_indices(shape=arrays[i].shape, allow_newaxis=True, allow_ellipsis=True))
    index = index if isinstance(index, tuple) else (index,)
    np.testing.assert_array_equal(lst[(i, *index)], arrays[i][index])


def test_two_ints_and_entry_selection(dataset):
    path, arrays = dataset
    lst = lardon.parse_folder(path)
    np.testing.assert_array_equal(lst[1, 2], arrays[1][2])
    np.testing.assert_array_equal(lst[-1, -1, 0], arrays[-1][-1, 0])
    # the seed failed on each of these: numpy ints, a crop ending on the last frame, negative starts, ..., steps
    np.testing.assert_array_equal(lst[np.int64(1), np.int64(2)], arrays[1][2])
    np.testing.assert_array_equal(lst[0, :, :, 3:7], arrays[0][:, :, 3:7])
    np.testing.assert_array_equal(lst[0, ..., -3:], arrays[0][..., -3:])
    np.testing.assert_array_equal(lst[4, ::-2, 1::2, ::3], arrays[4][::-2, 1::2, ::3])
    assert len(lst) == len(arrays)
    for got, want in zip(lst, arrays):
        np.testing.assert_array_equal(got, want)
    for sl in (slice(None), slice(1, 4), slice(None, None, -2), slice(3, 0, -1)):
        got = lst[sl]
        want = arrays[sl]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    got = lst[[0, 3], 1, 0:2]
    assert [g.tolist() for g in got] == [arrays[0][1, 0:2].tolist(), arrays[3][1, 0:2].tolist()]
    with pytest.raises(IndexError):
        lst[len(arrays)]


def test_shape_ndim_dtype_entries(dataset):
    path, arrays = dataset
    lst = lardon.parse_folder(path)
    assert lst.shape == (5, 3, (2, 5), (4, 9))
    assert lst.ndim == 4
    assert lst.dtype == np.float32
    conv = lardon.parse_folder(path, dtype="int16")
    assert conv.dtype == np.int16
    assert conv[2].dtype == np.int16 and conv[2, 0, 0].dtype == np.int16
    np.testing.assert_array_equal(conv[2], arrays[2].astype(np.int16))
    entries = lst.entries
    assert len(entries) == 5 and entries[1].shape == SHAPES[1]
    np.testing.assert_array_equal(np.asarray(entries[1][0, 1:]), arrays[1][0, 1:])


def test_take_and_files(dataset):
    path, arrays = dataset
    lst = lardon.parse_folder(path)
    sub = lst.take([4, 0])
    assert len(sub) == 2 and sub.shape == (2, 3, (3, 4), (7, 8))
    np.testing.assert_array_equal(sub[0], arrays[4])
    np.testing.assert_array_equal(np.asarray(lst.take(2)), arrays[2])
    picked = lardon.parse_folder(path, files=["items/item_3.npy", "items/item_1"])
    assert picked.keys == ["items/item_3", "items/item_1"]
    np.testing.assert_array_equal(picked[0], arrays[3])
    with pytest.raises(KeyError, match="item_9"):
        lardon.parse_folder(path, files=["items/item_9.npy"])


def test_metadata_items(dataset):
    path, arrays = dataset
    lst = lardon.parse_folder(path, drop_metadata=True)
    data, metadata = lst[2]
    np.testing.assert_array_equal(data, arrays[2])
    assert metadata == {"i": 2, "name": "item2"}
    batch, metas = lst[1:3]
    assert [m["i"] for m in metas] == [1, 2] and len(batch) == 2
    assert [m["i"] for _, m in lst] == list(range(5))
    both = lardon.parse_folder(path, drop_metadata=True, return_indices=True)
    data, metadata, index = both[-1, 0]
    assert metadata["i"] == 4 and index == (4, 0)
    np.testing.assert_array_equal(data, arrays[4][0])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), i=st.integers(0, 4), length=st.integers(1, 3))
def test_randslice_indices_reread_exactly(dataset, seed, i, length):
    path, arrays = dataset
    lst = lardon.parse_folder(path, return_indices=True, seed=seed)
    x, index = lst[i, lardon.randslice(), :, lardon.randslice(length, start=1)]
    np.testing.assert_array_equal(x, arrays[i][index[1:]])
    again, index2 = lst[index]
    assert index2 == index
    np.testing.assert_array_equal(again, x)
    assert index[0] == i and isinstance(index[1], int)
    if length == 1:
        assert isinstance(index[3], int) and index[3] >= 1
        assert x.shape == (arrays[i].shape[1],)  # randslice(1) draws an int index, which drops its axis
    else:
        assert index[3].stop - index[3].start == length and index[3].start >= 1
    batch, indices = lst[:, 0, 0, lardon.randslice(2)]
    for row, idx in zip(batch, indices):
        np.testing.assert_array_equal(row, arrays[idx[0]][idx[1:]])


def test_randslice_reproducible_with_seed(dataset):
    path, _ = dataset

    def draws(seed):
        lst = lardon.parse_folder(path, return_indices=True, seed=seed)
        return [lst[k % 5, :, :, lardon.randslice(2)][1] for k in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_randslice_that_cannot_fit(dataset):
    path, _ = dataset
    lst = lardon.parse_folder(path)
    with pytest.raises(IndexError, match=r"axis 1 of size 2.*\[2, 2\)"):
        lst[1, 0, lardon.randslice(3, start=2)]


def test_pad_and_crop(dataset):
    path, arrays = dataset
    pad = lardon.parse_folder(path, batch_mode="pad", batch_args={"mode": "constant", "constant_values": 2})
    out = pad[:]
    target = (3, 5, 9)
    assert out.shape == (5, *target)
    for b, x in zip(out, arrays):
        np.testing.assert_array_equal(b, np.pad(x, [(0, t - s) for t, s in zip(target, x.shape)], constant_values=2))
    crop = lardon.parse_folder(path, batch_mode="crop")
    out = crop[[0, 2], :, :, 1:]
    assert out.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(out[1], arrays[2][:, :4, 1:4])


def test_expand_dims_and_squeeze_before_batching(dataset):
    path, arrays = dataset
    lst = lardon.parse_folder(path, batch_mode="pad")
    lst.expand_dims(0)
    assert lst.shape == (5, 1, 3, (2, 5), (4, 9))
    np.testing.assert_array_equal(lst[1], arrays[1][None])
    assert lst[:].shape == (5, 1, 3, 5, 9)
    lst.expand_dims(-1)
    assert lst[3].shape == (1, *SHAPES[3], 1)
    lst.squeeze(0)
    assert lst.shape == (5, 3, (2, 5), (4, 9), 1)
    np.testing.assert_array_equal(lst[2, 1], arrays[2][1][..., None])  # the transform follows the index
    with pytest.raises(ValueError, match="axis 1 has size"):
        lst.squeeze(1)
    with pytest.raises(np.exceptions.AxisError):
        lst.expand_dims(9)
    assert lst.transforms == (("expand_dims", 0), ("expand_dims", -1), ("squeeze", 0))


def test_scatter(dataset):
    path, arrays = dataset
    lst = lardon.parse_folder(path)
    sc = lst.scatter(1)
    expected = [x[:, j] for x in arrays for j in range(x.shape[1])]
    assert len(sc) == len(expected) == sum(s[1] for s in SHAPES)
    assert sc.shape == (len(expected), 3, (4, 9))
    for k, want in enumerate(expected):
        np.testing.assert_array_equal(sc[k], want)
    np.testing.assert_array_equal(sc[5, 1:, ::2], expected[5][1:, ::2])
    assert sc.metadata(5)["i"] == 1
    sub = sc.take([0, 7])
    np.testing.assert_array_equal(sub[1], expected[7])
    nested = lst.scatter(0).scatter(0)
    assert len(nested) == sum(3 * s[1] for s in SHAPES)
    np.testing.assert_array_equal(nested[4], arrays[0][1, 0])
    lst.expand_dims(0)
    with pytest.raises(ValueError, match="scatter first"):
        lst.scatter(0)


def test_ragged_ndim(tmp_path):
    with lardon.LardonParser(None, tmp_path / "ragged") as parser:
        parser.register(np.zeros((2, 3)), {})
        parser.register(np.zeros((2, 3, 4)), {})
    lst = lardon.parse_folder(tmp_path / "ragged", batch_mode="pad")
    with pytest.raises(BatchError, match=r"different numbers of dimensions \[2, 3\]"):
        lst[:]
    with pytest.raises(BatchError, match="different numbers of dimensions"):
        _ = lst.shape
    assert [x.shape for x in lardon.parse_folder(tmp_path / "ragged")[:]] == [(2, 3), (2, 3, 4)]


def test_parser_exception_commits_nothing(tmp_path):
    target = tmp_path / "store"
    with lardon.LardonParser(None, target) as parser:
        parser.register(np.arange(3), {"v": 1}, "keep")
    with pytest.raises(RuntimeError, match="boom"):
        with lardon.LardonParser(None, target) as parser:
            parser.register(np.arange(5), {"v": 2}, "keep")
            parser.register(np.arange(4), {}, "new")
            raise RuntimeError("boom")
    lst = lardon.parse_folder(target, drop_metadata=True)
    assert lst.keys == ["keep"]
    data, md = lst[0]
    np.testing.assert_array_equal(data, np.arange(3))
    assert md == {"v": 1}


def test_parser_holds_the_lock_and_replaces(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for n in range(3):
        np.save(src / f"f{n}.npy", np.full(4, n))
    (src / "skip.txt").write_text("not data")
    target = tmp_path / "store"
    with lardon.LardonParser(src, target, valid_exts=[".npy"]) as parser:
        files = list(parser)
        assert [f.rsplit("/", 1)[1] for f in files] == ["f0.npy", "f1.npy", "f2.npy"]
        with pytest.raises(StoreLockedError):
            lardon.compile(src, target, valid_exts=[".npy"])
        for f in files[:2]:
            parser.register(np.load(f) * 10, {}, f)
        with pytest.raises(InvalidDataError, match="already registered"):
            parser.register(np.zeros(1), {}, files[0])
        with pytest.raises(InvalidDataError, match="outside"):
            parser.register(np.zeros(1), {}, tmp_path / "elsewhere.npy")
    assert lardon.parse_folder(target).keys == ["f0", "f1"]
    with lardon.LardonParser(src, target) as parser:
        parser.register(np.arange(2), {}, "f1.npy")
        parser.register(np.arange(3), {})
    lst = lardon.parse_folder(target)
    assert lst.keys == ["data_0", "f0", "f1"]
    np.testing.assert_array_equal(lst[2], np.arange(2))
    with lardon.LardonParser(None, target, force=True) as parser:
        parser.register(np.arange(1), {})
    assert lardon.parse_folder(target).keys == ["data_0"]


def test_parser_killed_inside_block_leaves_previous_state(tmp_path):
    """SIGKILL inside the block (bytes appended, rows not committed): the store shows the previous commit only."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    target = tmp_path / "store"
    with lardon.LardonParser(None, target) as parser:
        parser.register(np.arange(3), {}, "before")
    script = textwrap.dedent(
        f"""
        import numpy as np, lardon_store as lardon
        with lardon.LardonParser(None, {str(target)!r}) as parser:
            parser.register(np.arange(1000), {{}}, "before")
            parser.register(np.ones(50), {{}}, "after")
        """
    )
    # Killed on exit, after the bytes are synced and before the rows commit.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LARDON_STORE_CRASH_AT": "after_write"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    lst = lardon.parse_folder(target)
    assert lst.keys == ["before"]
    np.testing.assert_array_equal(lst[0], np.arange(3))
    with lardon.LardonParser(None, target) as parser:  # the lock died with the process
        parser.register(np.zeros(2), {}, "after")
    assert lardon.parse_folder(target).keys == ["after", "before"]


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_entry_slices_with_inner_indices(dataset, data):
    """``lst[entries, *index]`` is ``[x[index] for x in arrays[entries]]`` (list mode), for any entry slice."""
    path, arrays = dataset
    lst = lardon.parse_folder(path)
    entries = data.draw(st.slices(len(arrays)) | st.lists(st.integers(-5, 4), max_size=6))
    smallest = tuple(min(s[d] for s in SHAPES) for d in range(3))
    index = data.draw(basic_indices(shape=smallest, allow_newaxis=True))
    index = index if isinstance(index, tuple) else (index,)
    picked = arrays[entries] if isinstance(entries, slice) else [arrays[e] for e in entries]
    got = lst[(entries, *index)]
    assert len(got) == len(picked)
    for g, x in zip(got, picked):
        np.testing.assert_array_equal(g, x[index])


def test_scatter_axes_and_errors(dataset):
    path, arrays = dataset
    lst = lardon.parse_folder(path)
    sc = lst.scatter(-1)
    expected = [x[:, :, j] for x in arrays for j in range(x.shape[2])]
    assert len(sc) == len(expected) and sc.shape == (len(expected), 3, (2, 5))
    for k in (0, 6, len(expected) - 1):
        np.testing.assert_array_equal(sc[k], expected[k])
    with pytest.raises(np.exceptions.AxisError, match="only 3 dimensions"):
        lst.scatter(3)
    assert len(lst.take([]).scatter(0)) == 0


def test_indexing_counts_in_the_coordinates_shape_reports(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    for i in range(3):
        np.save(src / f"x{i}.npy", np.arange(2 * 100, dtype=np.float32).reshape(2, 100) + i)
    lst = lardon.parse_folder(lardon.compile(src, tmp_path / "st").root)
    lst.expand_dims(0)
    assert lst.shape == (3, 1, 2, 100)
    crops = lst[0:3, :, :, lardon.randslice(64)]
    assert len(crops) == 3 and all(c.shape == (1, 2, 64) for c in crops)
    assert lst[1, 0, 1, 5] == 100 + 5 + 1
    with pytest.raises(IndexError, match=r"entry 'x0' of shape \(1, 2, 100\)"):
        lst[0, :, :, lardon.randslice(500)]
