"""The PyTorch adapter on entries with aligned fields: dicts of crops, the same from any number of workers."""

from __future__ import annotations

import numpy as np
import pytest
from fields_helpers import AUDIO_ALIGN, aligned_entry, fields_store

torch = pytest.importorskip("torch")

import lardon_store as ls  # noqa: E402
from lardon_store.torch import StoreDataset, collate  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    entries = {f"s{i:02d}": aligned_entry(rng, 20 + i) for i in range(10)}
    return fields_store(tmp_path_factory.mktemp("fields"), entries, AUDIO_ALIGN)


def _batches(ds, workers: int, ctx: str | None = None) -> list[dict[str, np.ndarray]]:
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=workers, multiprocessing_context=ctx, collate_fn=collate("pad")
    )
    return [{k: v.numpy() for k, v in b.items()} for b in loader]


def test_items_are_dicts_of_aligned_crops_a_pure_function_of_seed_epoch_item(store):
    ds = StoreDataset(store.all(), crop=8, fields=("mel", "f0"), seed=3)
    item = ds[4]
    assert sorted(item) == ["f0", "mel"] and item["mel"].shape == (80, 8) and item["f0"].shape == (8,)
    rng = np.random.default_rng([3, 0, 4])
    expected = store.random_crop(4, 8, rng=rng)
    np.testing.assert_array_equal(item["mel"], expected["mel"])
    np.testing.assert_array_equal(item["f0"], expected["f0"])
    ds.set_epoch(1)
    assert not all(np.array_equal(ds[i]["f0"], StoreDataset(store.all(), crop=8, seed=3)[i]["f0"]) for i in range(10))


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_two_workers_give_the_same_dicts_as_none(store, ctx):
    ds = StoreDataset(store.all(), crop=16, seed=7)
    serial, parallel = _batches(ds, 0), _batches(ds, 2, ctx)
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys() == {"audio", "f0", "mel"}
        assert a["audio"].shape == (4, 16 * 256) or a["audio"].shape == (2, 16 * 256)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_whole_fields_without_crop_and_bad_arguments(store):
    ds = StoreDataset(store.where("name == 's03'"), fields=("f0",), return_metadata=True)
    item, md = ds[0]
    assert list(item) == ["f0"] and item["f0"].shape == (23,) and md == {"name": "s03"}
    with pytest.raises(ls.FieldError, match="no field 'pitch'"):
        StoreDataset(store.all(), crop=8, fields=("pitch",))
    with pytest.raises(ValueError, match="crop is a number of steps"):
        StoreDataset(store.all(), crop=0)
    with pytest.raises(IndexError, match="'s00' has 20 steps, fewer than the crop's 21"):
        StoreDataset(store.all(), crop=21, seed=0)[0]
    assert StoreDataset(store.all(), crop=21, seed=0, pad=True)[0]["f0"].shape == (21,)


def test_crop_on_bare_arrays_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(4))
    plain = ls.compile(tmp_path, tmp_path / "store")
    with pytest.raises(ls.FieldError, match="bare arrays"):
        StoreDataset(plain.all(), crop=2)
