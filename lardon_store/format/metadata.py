"""Entry metadata: what a callback may return, and how it is kept in the catalog.

Metadata is a dict with identifier keys (``^[A-Za-z_][A-Za-z0-9_]*$``) and JSON values: None, bool, int, float
(finite), str, and lists or dicts of those. numpy scalars become Python numbers. The whole dict is stored as JSON
(``entries.metadata``); each top-level scalar also becomes a row of ``meta_values`` so that filters use indexes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from ..errors import CorruptStoreError, InvalidDataError

__all__ = [
    "BOOL",
    "FLOAT",
    "INT",
    "KEY_PATTERN",
    "MISSING",
    "NULL",
    "STR",
    "TYPE_CODES",
    "from_json",
    "is_key",
    "normalize",
    "scalar_rows",
    "to_json",
]

# meta_values.type as a small integer (the query snapshot's type codes); 0 is "no scalar value for this key"
# (missing, or a list/dict kept in the JSON only).
TYPE_CODES = {"int": 1, "float": 2, "bool": 3, "str": 4, "null": 5}
MISSING, INT, FLOAT, BOOL, STR, NULL = 0, 1, 2, 3, 4, 5

KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # used with fullmatch: "$" would accept "a\n"


def is_key(key: Any) -> bool:
    """Whether ``key`` is a valid metadata key (an ASCII identifier)."""
    return isinstance(key, str) and KEY_PATTERN.fullmatch(key) is not None


MAX_DEPTH = 64  # lists and dicts nested deeper than this (or containing themselves) are refused


def _text(value: str, where: str, path: str) -> str:
    """``value`` if it can be stored as text: valid Unicode (no lone surrogate), and no NUL character (which
    PostgreSQL's text cannot hold: refused on both catalogs, so that a store behaves the same on either)."""
    if "\x00" in value:
        raise InvalidDataError(
            f"{where}: metadata {path} holds a NUL character (\\x00) at position {value.index(chr(0))}: text in a "
            "catalog cannot; remove it (or store the bytes as an array)."
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidDataError(
                f"{where}: metadata {path} has a character that is not valid text at position {exc.start} (a lone "
                "surrogate, as from a file name decoded with errors='surrogateescape'): decode it properly."
            ) from None
    return value


def _clean(value: Any, where: str, path: str, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(str(value), where, path)
    if depth >= MAX_DEPTH:
        raise InvalidDataError(
            f"{where}: metadata {path.split('[')[0]} is nested more than {MAX_DEPTH} levels deep (or contains itself): "
            "flatten it."
        )
    if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_, np.void, np.datetime64)):
        value = value.item()
        if isinstance(value, complex):
            raise InvalidDataError(f"{where}: metadata {path} is complex ({value!r}): store its real and imag parts.")
        return _clean(value, where, path, depth)
    if isinstance(value, np.str_):
        return _text(str(value), where, path)
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise InvalidDataError(
                f"{where}: metadata {path} is an integer beyond 64 bits ({value}): SQLite cannot index it; store it "
                "as a string."
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidDataError(
                f"{where}: metadata {path} is {value!r}: NaN and infinity cannot be queried; use None for a "
                "missing value."
            )
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_clean(v, where, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidDataError(f"{where}: metadata {path} has a non-string key {k!r}: use string keys.")
            out[_text(k, where, f"{path} (a key)")] = _clean(v, where, f"{path}[{k!r}]", depth + 1)
        return out
    hint = " (use .tolist())" if isinstance(value, np.ndarray) else ""
    raise InvalidDataError(
        f"{where}: metadata {path} has unsupported type {type(value).__name__}{hint}: use None, bool, int, float, "
        "str, or lists and dicts of those."
    )


def normalize(metadata: Any, where: str) -> dict[str, Any]:
    """A clean copy of ``metadata`` (a dict), or InvalidDataError naming ``where`` and the key at fault."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidDataError(f"{where}: metadata must be a dict, not {type(metadata).__name__}.")
    out = {}
    for key, value in metadata.items():
        if type(key) is not str or key not in _VALID_KEYS:
            if not is_key(key):
                raise InvalidDataError(
                    f"{where}: metadata key {key!r} is not an identifier: keys must match {KEY_PATTERN.pattern} "
                    "(rename it, e.g. with underscores)."
                )
            if type(key) is str and len(_VALID_KEYS) < 100_000:
                _VALID_KEYS.add(key)
        kind = type(value)
        if kind is str and value.isascii() and "\x00" not in value:  # (the common cases first)
            out[key] = value
        elif kind is bool or value is None:
            out[key] = value
        elif kind is int and -(2**63) <= value < 2**63:
            out[key] = value
        elif kind is float and math.isfinite(value):
            out[key] = value
        else:
            out[key] = _clean(value, where, repr(key))
    return out


_VALID_KEYS: set[str] = set()  # keys already checked: metadata repeats the same few keys on every entry


def to_json(metadata: dict[str, Any]) -> str:
    """The JSON text stored in ``entries.metadata``."""
    return _ENCODER.encode(metadata)


_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), sort_keys=True)  # (one, not one per entry)


def scalar_rows(metadata: dict[str, Any]) -> list[tuple[str, str, float | None, str | None]]:
    """(key, type, num, text) for each top-level scalar: the rows of ``meta_values``."""
    rows = []
    for key, value in metadata.items():
        if value is None:
            rows.append((key, "null", None, None))
        elif isinstance(value, bool):
            rows.append((key, "bool", float(value), None))
        elif isinstance(value, int):
            rows.append((key, "int", float(value), None))
        elif isinstance(value, float):
            rows.append((key, "float", value, None))
        elif isinstance(value, str):
            rows.append((key, "str", None, value))
    return rows


def from_json(raw: Any, where: str) -> dict[str, Any]:
    """The metadata dict of an ``entries.metadata`` text; CorruptStoreError naming ``where`` if it is not an object."""
    try:
        found = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError):
        found = None
    if not isinstance(found, dict):
        raise CorruptStoreError(
            f"{where} has malformed metadata {raw!r:.80}: it must be a JSON object; run `lardon-store verify`."
        )
    return found
