"""Ready-made compile callbacks (each maps a source file path to ``(array, metadata)``).

``audio`` needs the optional ``audio`` extra (``pip install lardon_store[audio]``, which brings ``soundfile``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["audio"]


def audio(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a sound file (wav, flac, ogg, aiff... whatever libsndfile reads) into float32 ``(channels, frames)``.

    Metadata: ``sample_rate`` (Hz), ``channels``, ``frames`` and ``duration`` (seconds). No resampling: filter or
    resample by ``sample_rate`` afterwards. Use it as ``compile(src, dst, audio, [".wav", ".flac"])`` or
    ``lardon-store compile SRC DST --callback audio --ext .wav``.
    """
    try:
        import soundfile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "lardon_store.callbacks.audio needs soundfile: install it with `pip install lardon_store[audio]`."
        ) from exc
    data, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
    array = np.ascontiguousarray(data.T)
    channels, frames = array.shape
    return array, {
        "sample_rate": int(sample_rate),
        "channels": int(channels),
        "frames": int(frames),
        "duration": frames / sample_rate,
    }
