"""Indexing: every basic numpy index on an entry gives numpy's result (and numpy's exception), alone or composed,
and the selection's first axis takes ints, slices, int lists and arrays."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from conftest import write_sources
from hypothesis import given, settings
from hypothesis import strategies as st

import lardon_store as ls

SETTINGS = settings(max_examples=60, deadline=None)

SHAPES = [(), (0,), (1,), (7,), (3, 4), (0, 5), (5, 0, 2), (2, 3, 4), (4, 1, 6), (2, 2, 2, 3), (6, 5)]
SOURCES = {
    f"e{i:02d}": np.asarray(np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape) * 3 + i)
    for i, shape in enumerate(SHAPES)
}


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    """A store holding one entry per shape of SHAPES, in the same order."""
    tmp = tmp_path_factory.mktemp("indexing")
    store = ls.compile(write_sources(tmp / "raw", SOURCES), tmp / "store", valid_exts=[".npy"])
    assert store.keys == list(SOURCES)
    return store, list(SOURCES.values())


def as_tuple(index) -> tuple:
    return index if isinstance(index, tuple) else (index,)


def outcome(function):
    """``function()``'s result, or the type of the exception it raised."""
    try:
        return function()
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return type(exc)


def assert_same(ours, theirs) -> None:
    if isinstance(theirs, type):
        assert ours is theirs, f"raised {ours!r}, numpy raised {theirs!r}"
        return
    assert not isinstance(ours, type), f"raised {ours!r}, numpy returned {theirs!r}"
    assert np.shape(ours) == np.shape(theirs)
    assert np.asarray(ours).dtype == np.asarray(theirs).dtype
    np.testing.assert_array_equal(ours, theirs)


@st.composite
def entry_and_index(draw, count: int = 1):
    i = draw(st.integers(0, len(SHAPES) - 1))
    shape = SHAPES[i]
    indices = []
    for _ in range(count):
        index = draw(hnp.basic_indices(shape, min_dims=0, allow_ellipsis=True, allow_newaxis=True))
        indices.append(index)
        shape = np.empty(shape)[index].shape
    return i, indices


@SETTINGS
@given(case=entry_and_index(), negative=st.booleans(), np_int=st.booleans())
def test_basic_index_matches_numpy(shaped, case, negative, np_int):
    store, arrays = shaped
    i, (index,) = case
    src = arrays[i]
    position = i - len(arrays) if negative else i
    position = np.int64(position) if np_int else position
    expected = src[index]
    got = store[(position, *as_tuple(index))]
    assert_same(got, expected)
    if as_tuple(index):  # sel[(i,)] is sel[i], the whole entry as an array; otherwise scalars stay scalars
        assert isinstance(got, np.ndarray) == isinstance(expected, np.ndarray)
    assert_same(store.all()[(position, *as_tuple(index))], expected)


@SETTINGS
@given(case=entry_and_index(count=2))
def test_two_composed_views_match_numpy(shaped, case):
    store, arrays = shaped
    i, (first, second) = case
    expected = np.asarray(arrays[i][first][second])
    view = store.entry(i)[first][second]
    assert view.shape == expected.shape
    assert view.dtype == expected.dtype
    assert view.nbytes == expected.nbytes
    assert_same(np.asarray(view), expected)
    assert_same(np.asarray(view.read()), expected)


ITEMS = st.one_of(
    st.integers(-12, 12),
    st.integers(-12, 12).map(np.int64),
    st.builds(
        slice,
        st.none() | st.integers(-12, 12),
        st.none() | st.integers(-12, 12),
        st.none() | st.integers(-4, 4),  # includes step 0
    ),
    st.just(None),
    st.just(Ellipsis),
    st.just(1.5),
    st.just("a"),
    st.just(True),
)


@settings(max_examples=200, deadline=None)
@given(i=st.integers(0, len(SHAPES) - 1), index=st.lists(ITEMS, max_size=6).map(tuple))
def test_any_index_raises_what_numpy_raises(shaped, i, index):
    store, arrays = shaped
    expected = outcome(lambda: arrays[i][index])
    assert_same(outcome(lambda: store[(i, *index)]), expected)
    assert_same(outcome(lambda: np.asarray(store.entry(i)[index])), expected)


@pytest.mark.parametrize(
    "index",
    [(3,), (-4,), (0, 4), (0, -5), (slice(None), 4), (0, 0, 0), (Ellipsis, Ellipsis), (0, 1.0), (slice(0, 1, 0),)],
)
def test_bad_index_on_a_3_by_4_entry(shaped, index):
    store, arrays = shaped
    i = SHAPES.index((3, 4))
    expected = outcome(lambda: arrays[i][index])
    assert isinstance(expected, type)
    assert outcome(lambda: store[(i, *index)]) is expected
    assert outcome(lambda: store.entry(i)[index]) is expected
    assert outcome(lambda: store.entry(i)[1:][index]) is outcome(lambda: arrays[i][1:][index])


def test_stepped_and_negative_slices(shaped):
    store, arrays = shaped
    i = SHAPES.index((6, 5))
    src = arrays[i]
    for index in [(slice(None, None, -1),), (slice(-2, 0, -2), slice(None, None, 3)), (np.int64(-1), slice(4, 0, -3)),
                  (Ellipsis, slice(None, None, -2)), (slice(1, -1), None, np.int64(2))]:  # fmt: skip
        np.testing.assert_array_equal(store[(i, *index)], src[index])
        np.testing.assert_array_equal(np.asarray(store.entry(i)[index][::-1]), src[index][::-1])


def test_entry_position_errors(shaped):
    store, arrays = shaped
    n = len(arrays)
    for bad in (n, -n - 1, np.int64(n)):
        with pytest.raises(IndexError):
            store[bad]
        with pytest.raises(IndexError):
            store.entry(bad)
    with pytest.raises(IndexError):
        store[[0, n]]
    with pytest.raises(TypeError):
        store[1.0]
    with pytest.raises(TypeError):
        store.entry(True)


def test_first_axis_slices_lists_and_arrays(shaped):
    store, arrays = shaped
    n = len(arrays)
    positions = np.arange(n)
    for first in [slice(None), slice(2, 7), slice(None, None, -2), slice(-3, None), slice(5, 2), [0, 3, -1, 3],
                  np.array([4, 1]), np.array([], dtype=np.int64), np.arange(n) % 3 == 0, [np.int64(2)]]:  # fmt: skip
        got = store[first]
        expected = [arrays[p] for p in np.atleast_1d(positions[first])]
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same(g, e)
    # An index after the first axis applies to every selected entry.
    got = store[[SHAPES.index((3, 4)), SHAPES.index((6, 5))], 1:, ::-2]
    assert_same(got[0], arrays[SHAPES.index((3, 4))][1:, ::-2])
    assert_same(got[1], arrays[SHAPES.index((6, 5))][1:, ::-2])


def test_take_and_batch_modes(shaped):
    store, arrays = shaped
    a, b = SHAPES.index((3, 4)), SHAPES.index((6, 5))
    sub = store.all().take([b, a])
    assert len(sub) == 2
    assert_same(sub[0], arrays[b])
    assert_same(sub[-1, 1], arrays[a][1])
    padded = store.select(batch_mode="pad")[[a, b]]
    assert padded.shape == (2, 6, 5)
    assert_same(padded[0, :3, :4], arrays[a])
    assert not padded[0, 3:].any() and not padded[0, :, 4:].any()
    cropped = store.select(batch_mode="crop")[[a, b]]
    assert_same(cropped, np.stack([arrays[a][:3, :4], arrays[b][:3, :4]]))


def windows(array: np.ndarray, axis: int, length: int) -> list[np.ndarray]:
    return [np.take(array, np.arange(t, t + length), axis=axis) for t in range(array.shape[axis] - length + 1)]


def test_randslice_draws_a_window_inside_the_axis(shaped):
    store, arrays = shaped
    i = SHAPES.index((2, 3, 4))
    src = arrays[i]
    seen = set()
    for _ in range(60):
        x = store[i, :, :, ls.randslice(2)]
        assert x.shape == (2, 3, 2)
        matches = [t for t, w in enumerate(windows(src, 2, 2)) if np.array_equal(w, x)]
        assert matches
        seen.add(matches[0])
    assert seen == {0, 1, 2}
    for _ in range(30):
        x = store[i, ls.randslice(1, 1, 3)]  # length 1 drops the axis; drawn from [1, 3)
        assert x.shape == (3, 4)
        assert np.array_equal(x, src[1])
        y = np.asarray(store.entry(i)[..., ls.randslice(3, start=-3)])
        assert np.array_equal(y, src[..., 1:4])


def test_randslice_that_cannot_fit_raises_index_error(shaped):
    store, arrays = shaped
    i = SHAPES.index((2, 3, 4))
    with pytest.raises(IndexError):
        store[i, :, :, ls.randslice(5)]
    with pytest.raises(IndexError):
        store[i, ls.randslice(2, start=1)]
    with pytest.raises(IndexError):
        store.entry(i)[:, :, :, ls.randslice(1)]
    with pytest.raises(IndexError):
        store[SHAPES.index((0, 5)), ls.randslice(1)]
    with pytest.raises(ValueError):
        ls.randslice(0)


def test_seeded_selections_draw_the_same_windows(shaped):
    store, _ = shaped
    i = SHAPES.index((6, 5))
    a = store.select(seed=7)
    b = store.select(seed=7)
    draws_a = [a[i, ls.randslice(2), ls.randslice(2)] for _ in range(10)]
    draws_b = [b[i, ls.randslice(2), ls.randslice(2)] for _ in range(10)]
    for x, y in zip(draws_a, draws_b):
        np.testing.assert_array_equal(x, y)


FIRST_AXIS = st.one_of(
    st.slices(len(SHAPES) + 3),
    st.lists(st.integers(-2 * len(SHAPES), 2 * len(SHAPES)), max_size=5),
    st.lists(st.integers(-len(SHAPES), len(SHAPES) - 1), max_size=5).map(lambda v: np.array(v, dtype=np.int64)),
    st.lists(st.booleans(), min_size=len(SHAPES), max_size=len(SHAPES)).map(np.array),
    st.integers(-2 * len(SHAPES), 2 * len(SHAPES)),
    st.integers(-2 * len(SHAPES), 2 * len(SHAPES)).map(np.array),  # 0-d arrays index like ints
)


@settings(max_examples=100, deadline=None)
@given(first=FIRST_AXIS)
def test_first_axis_matches_a_list_of_arrays(shaped, first):
    """The first axis behaves as numpy on the positions: same picks, same exception types."""
    store, arrays = shaped
    picked = outcome(lambda: np.arange(len(arrays))[first])
    got = outcome(lambda: store[first])
    if isinstance(picked, type):
        assert got is picked
    elif np.ndim(picked) == 0:
        assert_same(got, arrays[int(picked)])
    else:
        assert isinstance(got, list) and len(got) == len(picked)
        for g, p in zip(got, picked.tolist()):
            assert_same(g, arrays[p])
