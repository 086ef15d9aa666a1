"""How arrays are described in catalog rows: dtype strings, shape texts, checksums, integer column texts.

Dtypes
------
Stored as numpy's ``dtype.str`` (``'<f4'``, ``'>i8'``, ``'|b1'``, ``'<c16'``): a byte-order character, a kind in
``biufc`` and an item size. Only booleans, integers, floats and complex numbers are accepted; object, structured,
string and datetime dtypes are refused, at write time with a message naming the source (``InvalidDataError``), and
at read time as a damaged row (``CorruptStoreError``).

Shapes
------
A JSON list of non-negative integers without spaces: ``[2,513,300]``; ``[]`` for a 0-d array.

Checksums
---------
The algorithm, a colon, and lowercase hex digits: ``xxh3:`` and the 16 digits of XXH3-64 of the array's bytes
(written since lardon_store 0.2: about 10 GB/s on one core, where ``zlib.crc32`` does about 2), or ``crc32:`` and the
8 digits of ``zlib.crc32`` (written before; still verified). A checksum detects damage; it is not a defence against
an attacker.
"""

from __future__ import annotations

import re
import warnings
import zlib
from collections.abc import Iterable

import numpy as np
import xxhash

from ..errors import CorruptStoreError, InvalidDataError

__all__ = [
    "checksum",
    "checksum_matches",
    "checksum_of_chunks",
    "descr_to_dtype",
    "dtype_to_descr",
    "parse_ints",
    "shape_to_text",
]

_DTYPE_PATTERN = re.compile(r"^[<>|][biufc][0-9]{1,2}$")
_INT_CHARS = re.compile(r"[0-9,-]*")  # no "+", no spaces: what SQLite writes for integers


def dtype_to_descr(dtype: np.dtype, where: str) -> str:
    """The catalog string of ``dtype``; raise InvalidDataError (naming ``where``) for a dtype a store cannot hold."""
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufc":
        raise InvalidDataError(
            f"{where}: arrays of dtype {dtype!r} cannot be stored: use a boolean, integer, float or complex dtype "
            "(convert strings and objects to numbers, or put them in the metadata)."
        )
    return dtype.str


def descr_to_dtype(descr: str, where: str) -> np.dtype:
    """The dtype of a catalog string; raise CorruptStoreError for anything but a plain numeric dtype."""
    if not isinstance(descr, str) or not _DTYPE_PATTERN.match(descr):
        raise CorruptStoreError(f"{where}: the catalog row has an invalid dtype {descr!r}: run `lardon-store verify`.")
    try:
        dtype = np.dtype(descr)
    except TypeError as exc:
        raise CorruptStoreError(f"{where}: the catalog row has an invalid dtype {descr!r}.") from exc
    if dtype.kind not in "biufc" or dtype.hasobject:
        raise CorruptStoreError(f"{where}: the catalog row has a non-numeric dtype {descr!r}.")
    return dtype


def shape_to_text(shape: tuple[int, ...]) -> str:
    """The catalog text of ``shape``: ``[d0,d1,...]``."""
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def checksum(data: memoryview | bytes) -> str:
    """The checksum stored for an array's bytes (``xxh3:``)."""
    return f"xxh3:{xxhash.xxh3_64_hexdigest(data)}"


def checksum_of_chunks(chunks: Iterable[bytes]) -> str:
    """The checksum of the concatenation of ``chunks`` (a large file read piece by piece)."""
    state = xxhash.xxh3_64()
    for chunk in chunks:
        state.update(chunk)
    return f"xxh3:{state.hexdigest()}"


def checksum_matches(data: memoryview | bytes, stored: str) -> bool:
    """Whether ``data`` has the checksum ``stored``, in the algorithm ``stored`` names (``xxh3:`` or ``crc32:``)."""
    if isinstance(stored, str) and stored.startswith("crc32:"):
        return stored == f"crc32:{zlib.crc32(data):08x}"
    return stored == checksum(data)


def parse_ints(text: str | None, count: int) -> np.ndarray | None:
    """The ``count`` integers of a comma-separated text (as SQLite's ``group_concat`` writes them), else None."""
    if not count:
        return np.empty(0, np.int64)
    if type(text) is not str or not _INT_CHARS.fullmatch(text):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns when a text does not parse to its end
        try:
            found = np.fromstring(text, np.int64, sep=",")
        except (ValueError, DeprecationWarning):
            return None
    if len(found) != count or (found >= 10**18).any() or (found <= -(10**18)).any():
        return None  # (a number past int64 would have been clipped without a word)
    return found
