"""The PyTorch adapter: DataLoader workers under fork and spawn, seeded crops, epochs, collate."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import lardon_store  # noqa: E402
from lardon_store import randslice  # noqa: E402
from lardon_store.selection.indexing import resolve  # noqa: E402
from lardon_store.torch import StoreDataset, collate  # noqa: E402

N, FRAMES = 12, 40


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for i in range(N):
        # Each entry's values encode (entry, frame) so a crop tells where it came from.
        frames = FRAMES + i
        x = np.empty((2, frames), np.float32)
        x[0] = i
        x[1] = np.arange(frames)
        np.save(src / f"e{i:02d}.npy", x)
    return lardon_store.compile(src, tmp_path_factory.mktemp("store") / "st")


def _starts(batches) -> dict[int, int]:
    """Map entry number -> crop start frame from a list of (B, 2, L) batches."""
    out = {}
    for b in batches:
        b = b.numpy()
        for item in b:
            out[int(item[0, 0])] = int(item[1, 0])
    return out


def _epoch(ds, workers, ctx=None, batch_size=4):
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=workers, multiprocessing_context=ctx, shuffle=False
    )
    return _starts(list(loader))


def test_item_shape_and_values(store):
    ds = StoreDataset(store.all(), index=(slice(None), randslice(8)), seed=1)
    assert len(ds) == N
    x = ds[3]
    assert x.shape == (2, 8) and x.dtype == np.float32
    assert (x[0] == 3).all()
    np.testing.assert_array_equal(x[1], np.arange(x[1, 0], x[1, 0] + 8))
    with pytest.raises(IndexError):
        ds[N]
    np.testing.assert_array_equal(StoreDataset(store, index=(), seed=1)[-1], store[N - 1])
    with pytest.raises(TypeError, match="Selection or Store"):
        StoreDataset([np.zeros(3)])


@pytest.mark.parametrize("ctx", ["fork", "spawn", "forkserver"])
def test_dataloader_two_workers(store, ctx):
    ds = StoreDataset(store.all(), index=(slice(None), randslice(8)), seed=5)
    got = _epoch(ds, 2, ctx)
    assert sorted(got) == list(range(N))
    assert got == _epoch(ds, 0)


def test_seeded_crops_are_pure_in_seed_epoch_item(store):
    ds = StoreDataset(store.all(), index=(slice(None), randslice(8)), seed=7)
    first = _epoch(ds, 0)
    assert _epoch(ds, 2, "fork", batch_size=3) == first
    # Reading in another order, or one item at a time, gives the same crops.
    assert {i: int(ds[i][1, 0]) for i in reversed(range(N))} == first
    ds.set_epoch(1)
    second = _epoch(ds, 2, "fork")
    assert second != first
    assert _epoch(ds, 0) == second
    ds.set_epoch(0)
    assert _epoch(ds, 0) == first
    other = StoreDataset(store.all(), index=(slice(None), randslice(8)), seed=8)
    assert _epoch(other, 0) != first


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**63), epoch=st.integers(0, 1000), i=st.integers(0, N - 1), length=st.integers(1, FRAMES))
def test_seeded_crop_oracle(store, seed, epoch, i, length):
    """Item i of epoch e is the stored array indexed by the window default_rng([seed, e, i]) draws."""
    sel = store.all()
    ds = StoreDataset(sel, index=(slice(None), randslice(length)), seed=seed)
    ds.set_epoch(epoch)
    window = resolve((slice(None), randslice(length)), sel.shape_of(i), np.random.default_rng([seed, epoch, i]))
    np.testing.assert_array_equal(ds[i], sel[i][window])


def test_unseeded_crops_follow_torch_seed(store):
    ds = StoreDataset(store.all(), index=(slice(None), randslice(8)))
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork")
        runs.append([_starts(list(loader)) for _epoch_number in range(2)])
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][1]
    torch.manual_seed(124)
    assert _epoch(ds, 0) != runs[0][0]


def test_pickles_without_handles(store):
    sel = store.all()
    ds = StoreDataset(sel, seed=3, index=(slice(None), randslice(8)))
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[5], ds[5])
    assert b"mmap" not in pickle.dumps(ds)


def test_collate_pad_crop_and_metadata(store):
    ds = StoreDataset(store.all(), index=(slice(None), slice(None)), return_metadata=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate("pad", constant_values=-1))
    x, md = next(iter(loader))
    assert x.shape == (3, 2, FRAMES + 2) and isinstance(x, torch.Tensor)
    assert md == [{}, {}, {}]
    assert (x[0, :, FRAMES:] == -1).all() and (x[2, 1, :] == torch.arange(FRAMES + 2)).all()
    crop = torch.utils.data.DataLoader(
        StoreDataset(store.all(), index=()), batch_size=4, collate_fn=collate("crop"), num_workers=2
    )
    shapes = [tuple(b.shape) for b in crop]
    assert shapes == [(4, 2, FRAMES), (4, 2, FRAMES + 4), (4, 2, FRAMES + 8)]
    as_list = collate("list")([ds[0][0], ds[1][0]])
    assert [tuple(t.shape) for t in as_list] == [(2, FRAMES), (2, FRAMES + 1)]


def test_transform(store):
    ds = StoreDataset(store.all(), index=(0, randslice(4)), transform=lambda x: x * 2, seed=0)
    np.testing.assert_array_equal(ds[2], np.full(4, 4, np.float32))


def test_import_lardon_store_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, lardon_store; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_crop_longer_than_its_entry_names_the_item_and_entry(store):
    ds = StoreDataset(store, index=(slice(None), randslice(10**6)), seed=0)
    with pytest.raises(IndexError, match=r"item 3 \(entry 'e03', shape \(2, \d+\)\)"):
        ds[3]
