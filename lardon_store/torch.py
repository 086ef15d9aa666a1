"""PyTorch adapter: a map-style Dataset over a Selection, and a collate for ragged items.

Needs the optional ``torch`` extra (``pip install lardon_store[torch]``); ``import lardon_store`` never imports torch.

The dataset pickles as the selection's columns and the store's path (never an open mmap or database connection), so
it works with ``DataLoader(num_workers=N)`` under ``fork``, ``spawn`` and ``forkserver`` without a
``worker_init_fn``: each worker maps the shards itself on first read.

Random crops (``randslice`` in ``index``):

- ``seed=<int>``: the crop of item ``i`` in epoch ``e`` is drawn from ``numpy.random.default_rng([seed, e, i])``: a
  pure function of ``(seed, e, i)``, the same whatever the number of workers or the order of reads. ``set_epoch(e)``
  moves to another epoch (call it before creating the epoch's iterator, as with ``DistributedSampler.set_epoch``).
- ``seed=None``: crops are drawn from a generator seeded by ``torch.initial_seed()`` of the reading process, which
  the DataLoader sets anew for each worker at each epoch; so crops differ between epochs and between workers, and
  ``torch.manual_seed(s)`` before the loop makes a run reproducible.

Aligned fields: on a store compiled with ``align=``, ``StoreDataset(sel, crop=L, fields=("mel", "f0"), seed=0)``
yields dicts of aligned crops of ``L`` steps (``Selection.random_crop``, drawn from the same generators), reading
only the fields named; ``collate()`` stacks each field's equal-length crops into one tensor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

try:
    import torch
    from torch.utils.data import Dataset
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("lardon_store.torch needs PyTorch: install it with `pip install lardon_store[torch]`.") from exc

from .errors import FieldError
from .selection.batching import batch, check_mode
from .selection.indexing import randslice, resolve
from .selection.selection import Selection
from .store import Store

__all__ = ["Collate", "StoreDataset", "collate"]

DEFAULT_INDEX = (slice(None), randslice(64))


class StoreDataset(Dataset):
    """Item ``i`` is ``transform(selection[i][index])`` (a numpy array unless ``transform`` makes something else).

    ``selection`` is a Selection (a query's result) or a Store (all its entries).

    On entries with named fields, item ``i`` is a dict ``{field: array}`` of ``fields`` (all by default): with
    ``crop=L``, an aligned random crop of ``L`` steps (``pad=True`` pads entries shorter than that with zeros;
    otherwise they raise IndexError naming the entry); without, the whole arrays. ``index`` is then not used.

    With ``return_metadata=True`` an item is ``(array, metadata_dict)``. See the module docstring for how random
    crops are drawn with and without ``seed``.
    """

    def __init__(
        self,
        selection: Selection,
        index: Any = DEFAULT_INDEX,
        transform: Callable[[np.ndarray], Any] | None = None,
        return_metadata: bool = False,
        seed: int | None = None,
        *,
        crop: int | None = None,
        fields: Sequence[str] | None = None,
        pad: bool = False,
    ):
        if isinstance(selection, Store):
            selection = selection.all()
        if not isinstance(selection, Selection):
            raise TypeError(f"StoreDataset needs a lardon_store Selection or Store, not {type(selection).__name__}")
        if (crop is not None or fields is not None) and not selection.fields:
            raise FieldError(
                f"{selection.store.root}: crop= and fields= need entries with named fields; these are bare arrays: "
                "crop them with index=(..., randslice(n))."
            )
        self.fields = selection.check_fields(fields) if selection.fields else None
        if crop is not None:
            if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
                raise ValueError(f"crop is a number of steps >= 1, not {crop!r}")
            selection.steps  # noqa: B018 - raises FieldError now when the store has no alignment spec
        self.crop, self.pad = crop, bool(pad)
        self.selection = selection
        self.index = index if isinstance(index, tuple) else (index,)
        self.transform = transform
        self.return_metadata = return_metadata
        self.seed = None if seed is None else int(seed)
        self.epoch = 0
        self._rng_key: tuple[int, int] | None = None
        self._rng: np.random.Generator | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s crops from now on (only changes anything when ``seed`` is given)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.selection)

    def rng(self, i: int) -> np.random.Generator:
        """The generator that draws item ``i``'s crop in this process and epoch."""
        if self.seed is not None:
            return np.random.default_rng([self.seed, self.epoch, i])
        key = (os.getpid(), torch.initial_seed())
        if self._rng is None or self._rng_key != key:
            self._rng = np.random.default_rng(key[1])
            self._rng_key = key
        return self._rng

    def __getitem__(self, i: int):
        n = len(self.selection)
        i = int(i)
        if i < -n or i >= n:
            raise IndexError(f"index {i} is out of range for a StoreDataset of {n} items")
        i %= n
        if self.fields is not None:
            x = self._fields_item(i)
        else:
            x = self._array_item(i)
        if self.transform is not None:
            x = self.transform(x)
        if self.return_metadata:
            return x, self.selection.metadata(i)
        return x

    def _fields_item(self, i: int) -> dict[str, np.ndarray]:
        if self.crop is not None:
            return self.selection.random_crop(i, self.crop, self.rng(i), self.pad, self.fields)
        return {name: self.selection.field(name)[i] for name in self.fields}

    def _array_item(self, i: int) -> np.ndarray:
        index = self.index
        if any(isinstance(item, randslice) for item in index):
            shape = self.selection.item_shape(i)
            try:
                index = resolve(index, shape, self.rng(i))
            except IndexError as exc:
                raise IndexError(f"item {i} (entry {self.selection.entry(i).key!r}, shape {shape}): {exc}") from None
        return self.selection[(i, *index)]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_rng"] = state["_rng_key"] = None
        return state


def _to_numpy(x: Any) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class Collate:
    """A DataLoader ``collate_fn`` that batches ragged arrays as ``batching.batch`` does, into tensors.

    ``mode`` is ``"pad"`` (pad each item at the end of each axis to the largest size; ``batch_args`` go to
    ``np.pad``), ``"crop"`` (cut to the smallest size) or ``"list"`` (a list of tensors). Items may be arrays
    (or tensors), dicts of them (one batch per key: the fields of aligned crops), or ``(item, metadata)`` pairs;
    pairs give ``(batch, [metadata, ...])``.
    """

    def __init__(self, mode: str = "pad", **batch_args: Any):
        self.mode = check_mode(mode)
        self.batch_args = batch_args

    def __call__(self, items: list[Any]):
        if items and isinstance(items[0], tuple) and len(items[0]) == 2:
            arrays, metadata = zip(*items)
            return self._batch(arrays), list(metadata)
        return self._batch(items)

    def _batch(self, items) -> Any:
        if items and isinstance(items[0], dict):
            return {name: self._batch([item[name] for item in items]) for name in items[0]}
        result = batch([_to_numpy(x) for x in items], self.mode, self.batch_args)
        if self.mode == "list":
            return [torch.from_numpy(np.ascontiguousarray(x)) for x in result]
        return torch.from_numpy(result)

    def __repr__(self) -> str:
        return f"Collate(mode={self.mode!r}, **{self.batch_args!r})"


def collate(mode: str = "pad", **batch_args: Any) -> Collate:
    """A picklable ``collate_fn`` for ragged items: ``DataLoader(ds, collate_fn=collate("pad"))``."""
    return Collate(mode, **batch_args)
