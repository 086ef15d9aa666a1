"""What a compile callback is and returns: the default callback, its version fingerprint, and result checks.

A callback maps a source path to ``(data, metadata)`` or a list of such pairs (several entries per source, keyed
``<key>#0``, ``<key>#1``...). ``data`` is an array (a store of bare arrays) or a dict ``{field: array}`` of named,
aligned fields (see ``format/fields.py``). Its version (by default a fingerprint of its code) is stored with each
source, so that a new version recompiles every source.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InvalidDataError
from ..format.codecs import dtype_to_descr
from ..format.fields import Alignment, check_field_name
from ..format.metadata import normalize

__all__ = ["Callback", "callback_fingerprint", "default_callback", "prepare", "split_result"]

Callback = Callable[[str], Any]
_MAP_FROM = 1 << 20


def default_callback(path: str) -> tuple[np.ndarray, dict]:
    """Load a ``.npy`` file (never a pickle) with empty metadata.

    A file of at least 1 MiB is mapped read-only rather than read: the compile copies its bytes from the page cache
    straight into the shard (reading 1.2 GB of them into memory first took 0.9 s of a 2.2 s compile, in
    ``np.fromfile``). A smaller one is read (mapping 10,000 small files made their compile 20 % slower).
    """
    try:
        return np.load(path, mmap_mode="r" if os.path.getsize(path) >= _MAP_FROM else None, allow_pickle=False), {}
    except ValueError as exc:
        if path.lower().endswith(".npy") and "pickle" not in str(exc):
            raise
        detail = "" if "pickle" in str(exc) else f" ({exc})"  # (numpy's advice there is to unpickle: never)
        raise InvalidDataError(
            f"{path}: not a .npy file of numbers{detail}; compile .npy files only (valid_exts=['.npy'], --ext .npy), "
            "or give a callback that reads this format (--callback audio for sound files, or your own "
            "module:function)."
        ) from None


def callback_fingerprint(callback: Callback) -> str:
    """A version for ``callback``: its qualified name and a hash of its source code (when available).

    A callable object is fingerprinted by its class, a ``functools.partial`` by its function and arguments.
    """
    target, extra = callback, ""
    if isinstance(callback, functools.partial):
        target, extra = callback.func, repr((callback.args, sorted(callback.keywords.items())))
    if not (inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target)):
        target = type(target)
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
    cached = _weakable(target)
    code = _SOURCES.get(target) if cached else None
    if code is None:
        try:
            code = inspect.getsource(target)
        except (OSError, TypeError):
            code = ""
        if cached:
            _SOURCES[target] = code  # (the source of the code this process runs: read once)
    return f"{name}:{hashlib.sha256((code + extra).encode()).hexdigest()[:16]}"


_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weakable(target: Any) -> bool:
    try:
        weakref.ref(target)
    except TypeError:
        return False
    return True


def split_result(result: Any, where: str) -> list[tuple[str, np.ndarray, dict]]:
    """(key suffix, array, metadata) items of a callback's result: one ``(array, dict)`` pair or a list of pairs."""
    if isinstance(result, tuple) and len(result) == 2 and (result[1] is None or isinstance(result[1], dict)):
        return [("", result[0], result[1])]
    if isinstance(result, list):
        items = []
        for i, item in enumerate(result):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise InvalidDataError(f"{where}: item {i} of the callback's list is not an (array, metadata) pair.")
            items.append((f"#{i}", item[0], item[1]))
        return items
    raise InvalidDataError(
        f"{where}: the callback returned {type(result).__name__}; it must return (array, metadata_dict) or a list "
        "of such pairs."
    )


def _array(array: Any, where: str) -> np.ndarray:
    """``array`` as a storable ndarray, or InvalidDataError naming ``where``."""
    if isinstance(array, np.ma.MaskedArray):
        raise InvalidDataError(
            f"{where}: the callback returned a masked array: a store keeps no mask. Return array.filled(value), and "
            "the mask as another field or in the metadata."
        )
    if not isinstance(array, np.ndarray):
        if isinstance(array, np.generic) or isinstance(array, (int, float, bool, complex, list)):
            array = np.asarray(array)
        else:
            raise InvalidDataError(
                f"{where}: the callback returned {type(array).__name__} as data; return a numpy array."
            )
    dtype_to_descr(array.dtype, where)
    return array


def prepare(
    data: Any, metadata: Any, where: str, alignment: Alignment | None = None
) -> tuple[np.ndarray | dict[str, np.ndarray], dict]:
    """A storable ``(data, metadata)`` pair, or InvalidDataError naming ``where``: ``data`` an array, or a dict of
    field names to arrays whose aligned fields (``alignment``) agree on their length."""
    if not isinstance(data, dict):
        if alignment:
            raise InvalidDataError(
                f"{where}: the callback returned a bare array, but the compile aligns fields "
                f"({', '.join(map(repr, sorted(alignment.rates)))}): return a dict {{field: array}}."
            )
        return _array(data, where), normalize(metadata, where)
    if not data:
        raise InvalidDataError(f"{where}: the callback returned an empty dict of fields; return at least one array.")
    fields = {check_field_name(name, where): _array(a, f"{where} field {name!r}") for name, a in sorted(data.items())}
    if alignment:
        alignment.steps({name: a.shape for name, a in fields.items()}, where)
    return fields, normalize(metadata, where)
