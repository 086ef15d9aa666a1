"""Every example of the seed project's README, run under ``import lardon_store as lardon``.

Each test runs in its own temporary folder (``chdir``), so the README's relative paths are used as written; the
"dumb dataset" keeps the README's layout with smaller shapes, and the README's absolute dataset path is replaced
by a temporary one.
"""

from __future__ import annotations

import numpy as np
import pytest

import lardon_store as lardon

N_ITEMS = 6


def make_dumb_dataset(path: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The README's "dumb dataset" (shapes (10, 2..4, 23, 70..89) instead of (10, 2..4, 23, 700..899))."""
    rng = np.random.default_rng(seed)
    lardon.checkdir(path)
    lardon.checkdir(path + "/data")
    arrays = {}
    for n in range(N_ITEMS):
        random_shape = (10, int(rng.integers(2, 5)), 23, int(rng.integers(70, 90)))
        x = np.reshape(np.arange(np.prod(random_shape)), random_shape)
        with open(f"{path}/data/dumb_{n}.npy", "wb") as f:
            np.save(f, x)
        arrays[f"dumb_{n}"] = x
    return arrays


def dumb_callback(filename):
    with open(filename, "rb") as f:
        # callback must return data as first argument, and metadata as second
        return np.load(f), {}


@pytest.fixture
def dumb(tmp_path, monkeypatch):
    """The README's "Data parsing" section: the dumb dataset compiled to dumb_dataset/parsed."""
    monkeypatch.chdir(tmp_path)
    arrays = make_dumb_dataset("dumb_dataset")
    path = "dumb_dataset"
    offline_list = lardon.compile(path + "/data", path + "/parsed", valid_exts=[".npy"], callback=dumb_callback)
    return offline_list, [arrays[k] for k in sorted(arrays)]


def test_quick_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arrays = make_dumb_dataset("dumb_dataset")
    data_path = "dumb_dataset/data"
    parsed_path = "dumb_dataset/parsed"

    # online parsing
    offline_list = lardon.compile(data_path, parsed_path, valid_exts=[".npy"], callback=lardon.default_callback)
    assert len(offline_list) == N_ITEMS

    # environment parsing: registering the file name reads it with the parser's callback (see docs)
    with lardon.LardonParser(data_path, parsed_path, valid_exts=[".npy"]) as parser:
        for f in parser:
            data = np.load(f)
            parser.register(f, {}, f)
    assert isinstance(data, np.ndarray)

    offline_list = lardon.parse_folder(parsed_path, drop_metadata=True)
    data, metadata = offline_list[0]  # what the README says: the first item's data and metadata
    np.testing.assert_array_equal(data, arrays["dumb_0"])
    assert metadata == {}
    assert len(offline_list) == N_ITEMS


def test_quick_start_generated_data(tmp_path, monkeypatch):
    """``data_path`` can be None: data generated while exporting it, and no iteration."""
    monkeypatch.chdir(tmp_path)
    with lardon.LardonParser(None, "generated") as parser:
        for i in range(3):
            parser.register(np.full((2, i + 1), i), {"i": i})
        with pytest.raises(TypeError, match="no data_path"):
            iter(parser)
    offline_list = lardon.parse_folder("generated", drop_metadata=True)
    for i in range(3):
        data, metadata = offline_list[i]
        np.testing.assert_array_equal(data, np.full((2, i + 1), i))
        assert metadata == {"i": i}


def test_data_parsing(dumb):
    offline_list, arrays = dumb
    assert len(offline_list) == N_ITEMS
    lo, hi = min(x.shape[3] for x in arrays), max(x.shape[3] for x in arrays)
    assert offline_list.shape[0] == N_ITEMS and offline_list.shape[3:] == (23, (lo, hi))
    for item, x in zip(offline_list, arrays):
        np.testing.assert_array_equal(item, x)


def test_data_loading(dumb):
    _, arrays = dumb
    offline_list = lardon.parse_folder("dumb_dataset/parsed")
    assert offline_list[0].shape == arrays[0].shape
    assert offline_list[0, 5, 0:2, 1:2, 0].shape == arrays[0][5, 0:2, 1:2, 0].shape == (2, 1)
    np.testing.assert_array_equal(offline_list[0, 5, 0:2, 1:2, 0], arrays[0][5, 0:2, 1:2, 0])
    # an additional dtype argument may be given to convert the loaded data
    converted = lardon.parse_folder("dumb_dataset/parsed", dtype=np.float32)
    assert converted.dtype == np.float32 and converted[0].dtype == np.float32
    np.testing.assert_array_equal(converted[0], arrays[0].astype(np.float32))


def test_data_loading_randslice(dumb):
    _, arrays = dumb
    offline_list = lardon.parse_folder("dumb_dataset/parsed")
    # The README's own index puts randslice(10, start=10, stop=50) on axis 1, of size 2..4: it cannot fit.
    with pytest.raises(IndexError, match=r"axis 1 of size [234]"):
        offline_list[0, 5, lardon.randslice(10, start=10, stop=50), 1:2, 0]
    # What the text means: a random window of 10 frames in [10, 50) of the sequence (the last axis).
    for _ in range(5):
        x = offline_list[0, 5, :, 1:2, lardon.randslice(10, start=10, stop=50)]
        assert x.shape == (arrays[0].shape[1], 1, 10)
        start = int(x[0, 0, 0] - arrays[0][5, 0, 1, 0])
        assert 10 <= start <= 40
        np.testing.assert_array_equal(x, arrays[0][5, :, 1:2, start : start + 10])


def test_batched_data(dumb, tmp_path):
    _, arrays = dumb
    path = str(tmp_path / "dumb_dataset")  # stands for the README's absolute dataset path
    target = tuple(max(x.shape[d] for x in arrays) for d in range(4))

    offline_list = lardon.parse_folder(
        path + "/parsed", batch_mode="pad", batch_args={"mode": "constant", "constant_values": 2}
    )
    batched_import = offline_list[:]
    assert batched_import.shape == (N_ITEMS, *target)
    for b, x in zip(batched_import, arrays):
        width = [(0, t - s) for t, s in zip(target, x.shape)]
        np.testing.assert_array_equal(b, np.pad(x, width, mode="constant", constant_values=2))

    offline_list = lardon.parse_folder(path + "/parsed", batch_mode="pad")
    batched_import = offline_list[:]
    assert batched_import.shape == (N_ITEMS, *target)
    x = arrays[0]
    np.testing.assert_array_equal(batched_import[0], np.pad(x, [(0, t - s) for t, s in zip(target, x.shape)]))


def test_basic_reshaping(dumb, tmp_path):
    _, arrays = dumb
    path = str(tmp_path / "dumb_dataset")
    offline_list = lardon.parse_folder(
        path + "/parsed", batch_mode="pad", batch_args={"mode": "constant", "constant_values": 2}
    )
    offline_list.expand_dims(2)
    batched_import = offline_list[0]
    assert batched_import.shape == np.expand_dims(arrays[0], 2).shape
    np.testing.assert_array_equal(batched_import, np.expand_dims(arrays[0], 2))
    assert offline_list[:].shape[3] == 1
