"""Indices over one entry: numpy's basic indices, lazily composed, and ``randslice``.

An entry view is a chain of numpy indices applied one after the other to the entry's array. Applied to an ndarray
placed on a memory map, basic indices only make views, so a whole chain reads nothing until the final copy; and
because numpy itself applies them, results and exceptions are numpy's. A view's shape is found by applying the
chain to a zero-strided stand-in of the entry's shape, which costs no memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["randslice", "resolve", "view_shape"]


@dataclass(frozen=True, slots=True)
class randslice:  # noqa: N801 - named as in the seed project `lardon`
    """A random window of ``length`` along one axis, drawn within ``[start, stop)`` at each read.

    ``length == 1`` draws an integer index (the axis is dropped, as with an int); a longer window draws a slice.
    Negative ``start``/``stop`` count from the end, as in a slice.
    """

    length: int = 1
    start: int | None = None
    stop: int | None = None

    def __post_init__(self) -> None:
        if int(self.length) < 1:
            raise ValueError(f"randslice length must be >= 1, not {self.length}")

    def draw(self, size: int, axis: int, rng: np.random.Generator) -> int | slice:
        """A concrete index for an axis of ``size``; IndexError when the window cannot fit."""
        lo, hi, _ = slice(self.start, self.stop).indices(size)
        if hi - lo < self.length:
            raise IndexError(
                f"randslice(length={self.length}, start={self.start}, stop={self.stop}) does not fit axis {axis} "
                f"of size {size}: the window [{lo}, {hi}) holds {max(hi - lo, 0)} elements; use a shorter length "
                "or a wider start/stop."
            )
        first = int(rng.integers(lo, hi - self.length + 1))
        return first if self.length == 1 else slice(first, first + self.length)


def _as_tuple(index: Any) -> tuple:
    return index if isinstance(index, tuple) else (index,)


def _consumes_axes(item: Any) -> int:
    if item is None or item is Ellipsis:
        return 0
    if isinstance(item, np.ndarray) and item.dtype == bool:
        return item.ndim
    return 1


def has_random(index: Any) -> bool:
    """Whether ``index`` holds a randslice (and so must be resolved before each read)."""
    return any(isinstance(item, randslice) for item in _as_tuple(index))


def resolve(index: Any, shape: tuple[int, ...], rng: np.random.Generator) -> tuple:
    """``index`` as a plain numpy index tuple, with each randslice drawn for the axis it falls on."""
    items = _as_tuple(index)
    if not any(isinstance(item, randslice) for item in items):
        return items
    consumed = sum(_consumes_axes(item) for item in items)
    out, axis = [], 0
    for item in items:
        if item is Ellipsis:
            axis += max(len(shape) - consumed, 0)
        elif isinstance(item, randslice):
            if axis >= len(shape):
                raise IndexError(f"randslice at axis {axis}: the array has only {len(shape)} dimensions")
            item = item.draw(shape[axis], axis, rng)
            axis += 1
        else:
            axis += _consumes_axes(item)
        out.append(item)
    return tuple(out)


def stand_in(shape: tuple[int, ...]) -> np.ndarray:
    """A read-only array of ``shape`` that occupies one byte: numpy indexing on it gives shapes and errors only."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype=np.uint8), shape=shape, strides=(0,) * len(shape))


def view_shape(shape: tuple[int, ...], chain: tuple[tuple, ...]) -> tuple[int, ...]:
    """The shape after applying each index of ``chain`` in turn (raising numpy's own errors for bad indices)."""
    x = stand_in(shape)
    for index in chain:
        x = x[index]
    return np.shape(x)
