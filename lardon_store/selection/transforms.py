"""Per-item transforms of a selection (``expand_dims``, ``squeeze``) and the list shape summary.

Transforms are applied to each item after it is read and indexed, and before items are batched (as the seed
project ``lardon`` did), so their ``axis`` counts in one item, not in the batch. The list shape is the seed's:
``(len, d1, d2, ...)`` where a dimension that varies across items is given as ``(min, max)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import BatchError

__all__ = ["TRANSFORMS", "apply_transforms", "check_transform", "list_shape", "shape_ranges"]

TRANSFORMS = ("expand_dims", "squeeze")


def apply_transforms(x: np.ndarray, transforms: Sequence[tuple[str, int]]) -> np.ndarray:
    """``x`` with each ``(name, axis)`` transform applied in order."""
    for name, axis in transforms:
        x = np.expand_dims(x, axis) if name == "expand_dims" else np.squeeze(x, axis)
    return x


def shape_ranges(ndim: np.ndarray, dims: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each number of dimensions present, the per-axis (min, max) sizes of the items that have it."""
    out = {}
    for nd in np.unique(ndim).tolist():
        rows = dims[ndim == nd, :nd]
        out[nd] = (rows.min(axis=0), rows.max(axis=0))
    return out


def _transform_range(lo: np.ndarray, hi: np.ndarray, name: str, axis: int) -> tuple[np.ndarray, np.ndarray]:
    nd = len(lo)
    if name == "expand_dims":
        if not -nd - 1 <= axis <= nd:
            raise np.exceptions.AxisError(f"expand_dims({axis}): axis out of bounds for items of {nd} dimensions")
        a = axis if axis >= 0 else axis + nd + 1
        return np.insert(lo, a, 1), np.insert(hi, a, 1)
    if not -nd <= axis < nd:
        raise np.exceptions.AxisError(f"squeeze({axis}): axis out of bounds for items of {nd} dimensions")
    a = axis if axis >= 0 else axis + nd
    if lo[a] != 1 or hi[a] != 1:
        size = int(lo[a]) if lo[a] == hi[a] else (int(lo[a]), int(hi[a]))
        raise ValueError(f"squeeze({axis}): axis {a} has size {size} in some items, not 1; it cannot be squeezed.")
    return np.delete(lo, a), np.delete(hi, a)


def transformed_ranges(
    ranges: dict[int, tuple[np.ndarray, np.ndarray]], transforms: Sequence[tuple[str, int]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (min, max) sizes per axis of the items once ``transforms`` are applied, one pair per original ndim."""
    out = []
    for lo, hi in ranges.values():
        for name, axis in transforms:
            lo, hi = _transform_range(lo, hi, name, axis)
        out.append((lo, hi))
    return out


def check_transform(ranges, transforms: Sequence[tuple[str, int]], name: str, axis: int) -> tuple[str, int]:
    """The transform ``(name, axis)``, checked to apply to every item after ``transforms``; numpy's errors if not."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}: use one of {TRANSFORMS}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: axis must be an int, not {type(axis).__name__}")
    transformed_ranges(ranges, [*transforms, (name, int(axis))])
    return name, int(axis)


def list_shape(length: int, ranges, transforms: Sequence[tuple[str, int]]) -> tuple:
    """The seed's list shape: ``(length, *dims)``, a varying dimension given as ``(min, max)``."""
    if length == 0:
        return (0,)
    pairs = transformed_ranges(ranges, transforms)
    if len(pairs) > 1:
        raise BatchError(
            f"the items have different numbers of dimensions ({sorted(len(lo) for lo, _ in pairs)}): the list has "
            "no common shape; use shape_of(i), or select items of one ndim."
        )
    lo, hi = pairs[0]
    return (length, *(int(a) if a == b else (int(a), int(b)) for a, b in zip(lo.tolist(), hi.tolist())))
