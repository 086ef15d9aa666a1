"""The single-writer lock of a store: an exclusive ``flock`` on ``write.lock`` in the store folder.

Compile, gc, ``LardonParser`` and the legacy importer hold it while they write. It is released when the holder closes
it or dies (a killed writer frees it at once), and a second writer gets ``StoreLockedError`` at once instead of
waiting. Readers never take it: SQLite's WAL lets them read while a writer commits.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ReadOnlyStoreError, StoreLockedError
from ..format.layout import LOCK_NAME

__all__ = ["store_lock"]


@contextmanager
def store_lock(root: Path) -> Iterator[None]:
    """Hold the store's single-writer lock; StoreLockedError at once if another process holds it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise ReadOnlyStoreError(
                f"{root}: cannot write here ({exc.strerror}): the store is on a read-only filesystem or in a folder "
                "you cannot write. Read it with lardon_store.open(path); write to a writable copy."
            ) from None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLockedError(
                f"{root}: another process is writing to this store (compile, gc or a parser); wait for it to finish."
            ) from None
        yield
    finally:
        os.close(fd)
