"""Batch modes: how several entries read at once come back.

- ``"list"``: a list of arrays, each its own shape.
- ``"pad"``: one array; every item padded at the end of each axis to the largest size, with ``np.pad`` (``batch_args``
  are its keyword arguments, e.g. ``mode="constant", constant_values=2``; default zeros).
- ``"crop"``: one array; every item cut at the end of each axis to the smallest size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import BatchError

BATCH_MODES = ("list", "pad", "crop")


def check_mode(mode: str) -> str:
    """``mode`` if it is a batch mode, else BatchError listing the modes."""
    if mode not in BATCH_MODES:
        raise BatchError(f"unknown batch_mode {mode!r}: use one of {', '.join(map(repr, BATCH_MODES))}.")
    return mode


def _common_ndim(items: Sequence[np.ndarray], mode: str) -> int:
    ndims = {np.ndim(x) for x in items}
    if len(ndims) > 1:
        raise BatchError(
            f"batch_mode={mode!r} cannot stack items with different numbers of dimensions {sorted(ndims)}: "
            "index them to the same ndim, or use batch_mode='list'."
        )
    return ndims.pop()


def batch(items: Sequence[np.ndarray], mode: str = "list", batch_args: dict[str, Any] | None = None):
    """Combine ``items`` as ``mode`` says (see the module docstring)."""
    check_mode(mode)
    if mode == "list":
        return list(items)
    if not items:
        raise BatchError(f"batch_mode={mode!r} needs at least one item to know the batch's shape.")
    ndim = _common_ndim(items, mode)
    shapes = np.array([np.shape(x) for x in items], dtype=np.int64).reshape(len(items), ndim)
    if mode == "pad":
        target = shapes.max(axis=0)
        kwargs = dict(batch_args or {})
        out = []
        for x, s in zip(items, shapes):
            width = [(0, int(t - n)) for t, n in zip(target, s)]
            out.append(np.pad(x, width, **kwargs) if any(w for _, w in width) else x)
        return np.stack(out)
    target = tuple(int(t) for t in shapes.min(axis=0))
    return np.stack([x[tuple(slice(0, t) for t in target)] for x in items])
