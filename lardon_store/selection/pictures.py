"""Pictures of the data: one entry drawn, and how a metadata key is spread over a selection.

``entry_figure`` draws an array: 1-D as a line (a waveform, a pitch curve), 2-D as an image with a colour bar (a
spectrogram: its first axis goes up, as frequency does), higher dimensions as a grid of the 2-D slices of its leading
axes (at most 16). ``distribution_figure`` draws a metadata key: a histogram for numbers, a bar chart of counts for
strings and bools (the 30 most frequent), the number of entries without a value in the title.

Both return a matplotlib ``Figure`` made with the object API (no pyplot, no global backend: ``fig.savefig`` writes
PNG through Agg). matplotlib is the optional ``plot`` extra, imported only here and only when a picture is asked for.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

__all__ = ["distribution_figure", "entry_figure"]

_MAX_PANELS = 16


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("pictures need matplotlib: install it with `pip install lardon_store[plot]`.") from exc
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _title(key: str, array: np.ndarray, metadata: dict[str, Any]) -> str:
    text = json.dumps(metadata, sort_keys=True, default=str)
    text = text if len(text) <= 90 else text[:87] + "..."
    return f"{key}   shape {tuple(array.shape)} {array.dtype}\n{text}"


def _image(fig, ax, data: np.ndarray) -> None:
    shown = np.abs(data) if np.iscomplexobj(data) else data.astype(np.float64, copy=False)
    image = ax.imshow(shown, origin="lower", aspect="auto", interpolation="nearest", cmap="magma")
    ax.set_xlabel(f"axis -1 (frames, {data.shape[1]})")
    ax.set_ylabel(f"axis -2 (bins, {data.shape[0]})")
    fig.colorbar(image, ax=ax)


def entry_figure(key: str, array: np.ndarray, metadata: dict[str, Any]):
    """A Figure of one entry's array (see the module docstring), titled with its key, shape, dtype and metadata."""
    array = np.asarray(array)
    if array.ndim <= 1:
        fig = _figure(10, 3.5)
        ax = fig.add_subplot()
        values = np.abs(array) if np.iscomplexobj(array) else array
        ax.plot(np.atleast_1d(values), linewidth=0.8)
        ax.set_xlabel(f"index (0..{max(array.size - 1, 0)})")
        ax.set_ylabel("value")
    elif array.ndim == 2:
        fig = _figure(10, 5)
        _image(fig, fig.add_subplot(), array)
    else:
        slices = array.reshape(-1, *array.shape[-2:])
        count = min(len(slices), _MAX_PANELS)
        cols = int(np.ceil(np.sqrt(count)))
        rows = int(np.ceil(count / cols))
        fig = _figure(4 * cols + 1, 3 * rows + 1)
        leading = array.shape[:-2]
        for n in range(count):
            ax = fig.add_subplot(rows, cols, n + 1)
            _image(fig, ax, slices[n])
            ax.set_title(f"[{', '.join(map(str, np.unravel_index(n, leading)))}, :, :]", fontsize=9)
        if len(slices) > count:
            fig.text(0.99, 0.01, f"first {count} of {len(slices)} slices", ha="right", fontsize=8)
    fig.suptitle(_title(key, array, metadata), fontsize=10)
    return fig


def distribution_figure(key: str, values: np.ndarray, what: str):
    """A Figure of how metadata ``key`` is spread over ``values`` (one per entry, None where an entry has none):
    a histogram of numbers, or bars of the counts of strings and bools. ``what`` names the selection."""
    items = [v for v in values.tolist() if v is not None]
    missing = len(values) - len(items)
    numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    if numbers and len(numbers) == len(items):
        ax.hist(numbers, bins=min(50, max(5, len(set(numbers)))), color="#4c72b0")
        ax.set_xlabel(key)
        ax.set_ylabel("entries")
    else:
        counts = Counter(json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in items).most_common(30)
        labels = [label for label, _ in counts]
        ax.bar(range(len(counts)), [c for _, c in counts], color="#4c72b0")
        ax.set_xticks(range(len(counts)), labels, rotation=45 if len(labels) > 6 else 0, ha="right", fontsize=8)
        ax.set_ylabel("entries")
        ax.set_xlabel(key)
    fig.suptitle(f"{key} over {what}: {len(items)} values, {missing} entries without one", fontsize=10)
    return fig
