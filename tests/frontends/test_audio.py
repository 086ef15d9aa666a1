"""The audio callback: sound files the test writes, through the Python API and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

import lardon_store  # noqa: E402
from lardon_store.callbacks import audio  # noqa: E402
from lardon_store.cli import main  # noqa: E402


def _tone(frames: int, channels: int, sr: int) -> np.ndarray:
    t = np.arange(frames) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)


@pytest.mark.parametrize(
    ("name", "subtype", "tol"),
    [("a.wav", "PCM_16", 1e-4), ("a.flac", "PCM_24", 1e-6), ("a.ogg", "VORBIS", 0.1), ("f.wav", "FLOAT", 0)],
)
def test_audio_decodes_channels_first(tmp_path, name, subtype, tol):
    data = _tone(4410, 2, 22050)
    sf.write(tmp_path / name, data, 22050, subtype=subtype)
    array, md = audio(str(tmp_path / name))
    assert array.dtype == np.float32 and array.shape == (2, 4410) and array.flags.c_contiguous
    assert md == {"sample_rate": 22050, "channels": 2, "frames": 4410, "duration": pytest.approx(0.2)}
    assert np.abs(array - data.T).max() <= tol + 1e-7


def test_audio_mono_is_one_channel(tmp_path):
    sf.write(tmp_path / "m.wav", _tone(100, 1, 8000)[:, 0], 8000, subtype="FLOAT")
    array, md = audio(str(tmp_path / "m.wav"))
    assert array.shape == (1, 100) and md["channels"] == 1


def test_cli_compile_callback_audio(tmp_path, capsys):
    src = tmp_path / "sounds"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "one.wav", _tone(1000, 1, 16000), 16000, subtype="FLOAT")
    sf.write(src / "sub" / "two.flac", _tone(2000, 2, 44100), 44100)
    sf.write(src / "three.ogg", _tone(2000, 2, 44100), 44100)  # not asked for
    (src / "notes.txt").write_text("not audio")
    assert main(["compile", str(src), str(tmp_path / "st"), "--callback", "audio", "--ext", ".wav", "--ext", ".flac",
                 "--quiet"]) == 0  # fmt: skip
    assert "2 new" in capsys.readouterr().out
    st = lardon_store.open(tmp_path / "st")
    assert st.keys == ["one", "sub/two"]
    assert st.shape_of(0) == (1, 1000) and st.shape_of(1) == (2, 2000)
    assert st.metadata(1) == {"sample_rate": 44100, "channels": 2, "frames": 2000, "duration": 2000 / 44100}
    np.testing.assert_allclose(st[0, 0, :50], _tone(1000, 1, 16000)[:50, 0], atol=1e-7)
    # The same with two worker processes gives the same entries.
    assert main(["compile", str(src), str(tmp_path / "st2"), "--callback", "audio", "--ext", ".wav", "--ext", ".flac",
                 "--quiet", "--workers", "2"]) == 0  # fmt: skip
    st2 = lardon_store.open(tmp_path / "st2")
    assert st2.keys == st.keys
    np.testing.assert_array_equal(st2[1], st[1])
