"""Running a compile's callbacks (in the calling process, or in a pool of worker processes), and work done beside them.

``run_callbacks`` yields one ``Outcome`` per path, always in the order of the paths, so that the compiler's single
writer appends bytes and commits rows exactly as it would without workers: the store is the same byte for byte.
With workers, at most ``2 * workers + 2`` results are in flight at once, so memory stays bounded however many
sources there are. The callback is sent once to each worker (it must pickle: a function defined at the top level
of an importable module, or an instance of such a class).
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from ..errors import CallbackError

__all__ = ["Outcome", "in_background", "run_callbacks"]

_callback: Callable[[str], Any] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the callback did on one path: its result, or the exception it raised."""

    result: Any = None
    error: BaseException | None = None

    def unwrap(self) -> Any:
        """The result, or the callback's exception raised again."""
        if self.error is not None:
            raise self.error
        return self.result


def _install(callback: Callable[[str], Any]) -> None:
    global _callback
    _callback = callback


def _call(path: str) -> Any:
    return _callback(path)


def check_picklable(callback: Callable[[str], Any]) -> None:
    """CallbackError unless ``callback`` can be sent to worker processes."""
    try:
        pickle.dumps(callback)
    except Exception as exc:
        name = getattr(callback, "__qualname__", repr(callback))
        raise CallbackError(
            f"callback {name!r} cannot be sent to worker processes ({type(exc).__name__}: {exc}): define it at "
            "the top level of an importable module (not a lambda or a local function), or compile with workers=0."
        ) from exc


def run_callbacks(callback: Callable[[str], Any], paths: Sequence[str], workers: int = 0) -> Iterator[Outcome]:
    """Outcomes of ``callback(path)`` for each of ``paths``, in order; ``workers > 0`` runs them in that many
    processes. Close the iterator (``.close()``) to stop the pool early."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, not {workers}")
    if workers == 0 or not paths:
        return _serial(callback, paths)
    check_picklable(callback)
    return _pooled(callback, paths, workers)


def _serial(callback: Callable[[str], Any], paths: Sequence[str]) -> Iterator[Outcome]:
    for path in paths:
        try:
            yield Outcome(result=callback(path))
        except Exception as exc:
            yield Outcome(error=exc)


def _pooled(callback: Callable[[str], Any], paths: Sequence[str], workers: int) -> Iterator[Outcome]:
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_install, initargs=(callback,))
    in_flight: deque[tuple[str, Future]] = deque()
    todo = iter(paths)
    try:
        # The first window is submitted now, not at the first next(): the workers are forked before the caller
        # starts its own threads (forking a process that runs other threads can copy a lock that one of them holds).
        for path in todo:
            in_flight.append((path, pool.submit(_call, path)))
            if len(in_flight) >= 2 * workers + 2:
                break
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    return _results(pool, in_flight, todo)


def _results(pool: ProcessPoolExecutor, in_flight: deque, todo: Iterator[str]) -> Iterator[Outcome]:
    try:
        while in_flight:
            path, future = in_flight.popleft()
            try:
                outcome = Outcome(result=future.result())
            except BrokenProcessPool as exc:
                raise CallbackError(
                    f"{path}: a worker process died while running the callback (killed, out of memory, or a crash "
                    "in native code); sources already committed are kept: compile again to resume (workers=0 shows the "
                    "error)."
                ) from exc
            except Exception as exc:
                outcome = Outcome(error=exc)
            nxt = next(todo, None)
            if nxt is not None:
                in_flight.append((nxt, pool.submit(_call, nxt)))
            yield outcome
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def in_background(function: Callable[[Any], Any], items: Sequence[Any], ahead: int = 8) -> Iterator[Any]:
    """``function(item)`` for each item, in order, computed by one background thread at most ``ahead`` items in
    advance: work that releases the GIL (reading and hashing files) overlaps the caller's. Close the iterator to
    stop early; an exception is raised when its item is reached."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lardon-store")
    pending: deque[Future] = deque()
    todo = iter(items)
    try:
        for item in todo:
            pending.append(pool.submit(function, item))
            if len(pending) >= ahead:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(todo, _END)
            if nxt is not _END:
                pending.append(pool.submit(function, nxt))
            yield result
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


_END = object()
