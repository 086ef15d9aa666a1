"""Pictures of the data: PNGs of the right size, not blank, showing the structure of a known array."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402

import lardon_store as ls  # noqa: E402
from lardon_store.cli import main  # noqa: E402
from lardon_store.testing import store_from_arrays  # noqa: E402


@pytest.fixture
def store(tmp_path) -> ls.Store:
    ramp = np.tile(np.arange(200, dtype=np.float32), (80, 1))  # values grow left to right
    rising = np.tile(np.arange(80, dtype=np.float32)[:, None], (1, 200))  # values grow bottom to top
    items = [
        ("spec/ramp", ramp, {"pitch": 60, "instrument": "violin"}),
        ("spec/rising", rising, {"pitch": 62, "instrument": "cello"}),
        ("wave", np.sin(np.linspace(0, 20, 4000)).astype(np.float32), {"pitch": 60.5, "instrument": "violin"}),
        ("cube", np.random.default_rng(0).random((3, 2, 16, 20)).astype(np.float32), {"instrument": "flute"}),
    ]
    return store_from_arrays(tmp_path / "s", items)


def picture(fig, path) -> np.ndarray:
    fig.savefig(path)
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert image[..., :3].std() > 0.05  # not blank
    return image


def test_an_image_shows_a_ramp_and_its_orientation(store, tmp_path):
    for key, rising_along in (("spec/ramp", 1), ("spec/rising", 0)):
        image = picture(store.show(key), tmp_path / "p.png")
        gray = image[..., :3].mean(axis=2)
        h, w = gray.shape
        # The image's interior (the left three quarters of the figure, past the title): brightness grows along the
        # axis the values grow along (magma: dark for low values, bright for high ones); rows run downwards.
        inner = gray[int(h * 0.35) : int(h * 0.85), int(w * 0.15) : int(w * 0.7)]
        profile = inner.mean(axis=0) if rising_along == 1 else inner.mean(axis=1)[::-1]
        assert np.corrcoef(np.arange(len(profile)), profile)[0, 1] > 0.9, key


def test_lines_grids_and_distributions(store, tmp_path):
    assert picture(store.show("wave"), tmp_path / "wave.png").shape[1] > 800
    fig = store.show("cube")
    assert len(fig.axes) >= 6  # six slices (each with its colour bar)
    picture(fig, tmp_path / "cube.png")
    fig = store.plot("pitch")
    assert "3 values, 1 entries without one" in fig.get_suptitle()
    picture(fig, tmp_path / "pitch.png")
    sel = store.where(instrument="violin")
    fig = sel.plot("instrument")
    assert "where instrument == 'violin'" in fig.get_suptitle()
    picture(fig, tmp_path / "inst.png")


def test_the_cli_writes_pngs(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["show", str(store.root), "spec/ramp"]) == 0
    assert (tmp_path / "spec_ramp.png").is_file()
    assert main(["plot", str(store.root), "pitch", "--where", "pitch > 60", "--out", "p.png"]) == 0
    assert imread(tmp_path / "p.png").shape[0] > 200
    assert main(["show", str(store.root), "nope"]) == 1
    assert "no entry with key 'nope'" in capsys.readouterr().err
