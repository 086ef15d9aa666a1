"""Fields: the named arrays of one entry, and the alignment spec that lines up their time axes (pure code).

Fields
------
An entry owns one array per field. A callback that returns bare arrays makes stores with one unnamed field, whose
name is ``UNNAMED`` (``""``); a callback that returns a dict ``{name: array}`` names them. Names are ASCII Python
identifiers of at most 64 characters (``FIELD_PATTERN``). Every entry of a store has the same fields: the store's
``fields``, sorted, recorded in the catalog's ``store_info`` under ``FIELDS_KEY`` as a JSON list by the first write.

Alignment
---------
``align = {field: (axis, rate)}`` says, per field, which axis is time and how many of its samples make one *step*
(``rate`` a positive int; ``axis`` an int, negative counting from the last axis of each array). An entry's
``steps`` is the minimum over the aligned fields of ``shape[axis] // rate``. A crop of ``length`` steps from step
``start`` takes ``[start * rate, (start + length) * rate)`` on each aligned field's axis, every other axis whole:
the windows line up exactly, at integer ratios. A compile refuses an entry whose aligned fields disagree by more
than ``tolerance`` steps (``shape[axis] // rate`` differing from ``steps`` by more than that). Fields not named
carry whole. The spec is recorded in ``store_info`` under ``ALIGN_KEY`` as JSON ``{"fields": {name: [axis, rate]},
"tolerance": n}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptStoreError, InvalidDataError

__all__ = [
    "ALIGN_KEY",
    "DEFAULT_TOLERANCE",
    "FIELDS_KEY",
    "FIELD_PATTERN",
    "UNNAMED",
    "Alignment",
    "align_from_json",
    "array_name",
    "check_field_name",
    "field_axis",
    "fields_from_json",
    "fields_to_json",
    "parse_align",
]

UNNAMED = ""
FIELDS_KEY = "fields"
ALIGN_KEY = "align"
DEFAULT_TOLERANCE = 2
FIELD_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_field_name(name: Any, where: str) -> str:
    """``name`` when it is a valid field name; InvalidDataError naming ``where`` otherwise."""
    if not isinstance(name, str) or not FIELD_PATTERN.fullmatch(name):
        raise InvalidDataError(
            f"{where}: field name {name!r} is not an identifier: use ASCII letters, digits and '_' (at most 64, "
            "not starting with a digit), e.g. 'audio', 'mel', 'f0'."
        )
    return name


@dataclass(frozen=True, slots=True)
class Alignment:
    """A store's alignment spec: ``axes[f]`` and ``rates[f]`` for each aligned field ``f``, and the tolerance."""

    axes: dict[str, int]
    rates: dict[str, int]
    tolerance: int = DEFAULT_TOLERANCE

    def __bool__(self) -> bool:
        return bool(self.rates)

    def same_spec(self, other: Alignment) -> bool:
        """Whether ``other`` aligns the same fields on the same axes at the same rates (whatever its tolerance)."""
        return (self.axes, self.rates) == (other.axes, other.rates)

    def to_json(self) -> str:
        fields = {f: [self.axes[f], self.rates[f]] for f in sorted(self.rates)}
        return json.dumps({"fields": fields, "tolerance": self.tolerance}, sort_keys=True)

    def field_steps(self, name: str, shape: tuple[int, ...]) -> int:
        """How many whole steps the array of field ``name`` with this ``shape`` holds."""
        return shape[field_axis(self.axes[name], len(shape))] // self.rates[name]

    def steps(self, shapes: dict[str, tuple[int, ...]], where: str) -> int:
        """The steps of an entry whose fields have these ``shapes``; InvalidDataError naming ``where``, the fields
        and their lengths when a field is missing, has no such axis, or is longer than the others by more than the
        tolerance."""
        missing = sorted(set(self.rates) - set(shapes))
        if missing:
            raise InvalidDataError(
                f"{where}: the alignment names field(s) {', '.join(map(repr, missing))}, which the callback did not "
                f"return (it returned {', '.join(map(repr, sorted(shapes))) or 'none'})."
            )
        lengths = {}
        for name in sorted(self.rates):
            shape, axis = shapes[name], self.axes[name]
            if not -len(shape) <= axis < len(shape):
                raise InvalidDataError(
                    f"{where}: field {name!r} of shape {shape} has no axis {axis}, which the alignment says is time."
                )
            lengths[name] = self.field_steps(name, shape)
        steps = min(lengths.values())
        if max(lengths.values()) - steps > self.tolerance:
            said = ", ".join(
                f"{n!r}: {shapes[n][field_axis(self.axes[n], len(shapes[n]))]} samples = {lengths[n]} steps"
                for n in sorted(lengths)
            )
            raise InvalidDataError(
                f"{where}: the aligned fields disagree by more than {self.tolerance} steps ({said}): check the hop "
                "sizes in align={field: (axis, rate)}, trim the longer fields, or raise align_tolerance."
            )
        return steps


def array_name(key: str, field: str) -> str:
    """How messages name one array: ``entry 'k'``, or ``field 'mel' of entry 'k'``."""
    return f"field {field!r} of entry {key!r}" if field else f"entry {key!r}"


def field_axis(axis: int, ndim: int) -> int:
    """``axis`` counted from the front of an array of ``ndim`` dimensions."""
    return axis + ndim if axis < 0 else axis


def parse_align(align: Any, tolerance: Any = DEFAULT_TOLERANCE) -> Alignment:
    """The Alignment of a user's ``align={field: (axis, rate)}`` and ``align_tolerance``; InvalidDataError naming
    the entry at fault."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise InvalidDataError(f"align_tolerance must be an int >= 0 (steps), not {tolerance!r}.")
    if align is None:
        return Alignment({}, {}, tolerance)
    if not isinstance(align, dict):
        raise InvalidDataError(
            f"align must be a dict {{field: (axis, rate)}}, e.g. {{'audio': (0, 256), 'mel': (1, 1)}}, not "
            f"{type(align).__name__}."
        )
    axes, rates = {}, {}
    for name, spec in align.items():
        check_field_name(name, "align")
        if name == UNNAMED:
            raise InvalidDataError("align: an unnamed field cannot be aligned; return a dict of named fields.")
        ok = isinstance(spec, (tuple, list)) and len(spec) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in spec)
        if not ok or spec[1] < 1:
            raise InvalidDataError(
                f"align[{name!r}] = {spec!r}: give (axis, rate) as two ints, the time axis of the field's arrays and "
                "how many of its samples make one step (>= 1)."
            )
        axes[name], rates[name] = int(spec[0]), int(spec[1])
    return Alignment(axes, rates, tolerance)


def align_from_json(text: str | None, where: str) -> Alignment:
    """The Alignment recorded in the catalog (none when ``text`` is None); CorruptStoreError when it is damaged."""
    if text is None:
        return Alignment({}, {})
    try:
        data = json.loads(text)
        fields = data["fields"]
        return parse_align({k: tuple(v) for k, v in fields.items()}, data["tolerance"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptStoreError(f"{where}: the catalog's alignment spec {text!r:.80} is damaged ({exc}).") from None


def fields_from_json(text: str | None, where: str) -> tuple[str, ...]:
    """The store's field names recorded in the catalog (``(UNNAMED,)`` when none are); CorruptStoreError when the
    record is damaged."""
    if text is None:
        return (UNNAMED,)
    try:
        names = json.loads(text)
        if not isinstance(names, list) or not names or names != sorted(set(names)):
            raise ValueError("not a sorted list of distinct names")
        if names != [UNNAMED]:
            for name in names:
                check_field_name(name, where)
    except (ValueError, TypeError) as exc:
        raise CorruptStoreError(f"{where}: the catalog's field list {text!r:.80} is damaged ({exc}).") from None
    return tuple(names)


def fields_to_json(names: Iterable[str]) -> str:
    """The catalog's record of field ``names``."""
    return json.dumps(sorted(names))
