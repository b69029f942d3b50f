"""The Python API's iterable source: a thread in the driver pulls items from the user's iterable into a
small bounded buffer, and the driver hands them to the edge a batch at a time.

The buffer holds at most ``capacity`` items, so the iterable is read no faster than the stream takes
batches: the same backpressure as every other source (a slow link slows the iterable's consumer, and a
generator that produces frames on demand is simply asked less often). A ``ray.data.Dataset`` is read
the same way, through its own streaming iterator.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

_END = object()


def dataset_items(ds: Any, column: str | None) -> Iterator[Any]:
    """The inputs of a ``ray.data.Dataset``'s rows: ``column`` of each row, or its only column."""
    for row in ds.iter_rows():
        if column is not None:
            if column not in row:
                raise ValueError(f"data.column: the dataset has no column {column!r}: {list(row)}")
            yield row[column]
        elif len(row) == 1:
            yield next(iter(row.values()))
        else:
            raise ValueError(f"data.column: name the dataset's input column, one of {list(row)}")


class ItemFeeder:
    """Reads ``items`` on a daemon thread into a buffer of ``capacity`` items; at most ``limit``
    items in all (None: to the iterable's end). ``skip`` items are read and dropped first (a resumed
    run skips what its checkpoint has settled)."""

    def __init__(
        self,
        items: Iterable[Any],
        capacity: int,
        limit: int | None = None,
        skip: int = 0,
    ) -> None:
        self.capacity = max(1, int(capacity))
        self._it = iter(items)
        self._limit = limit
        self._skip = skip
        self._buf: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.error: BaseException | None = None  # what the iterable raised, if it did
        self.exhausted = False  # the iterable has ended (the buffer may still hold items)
        self.taken = 0
        self._thread = threading.Thread(target=self._pull, name="splitstream-feeder", daemon=True)
        self._thread.start()

    def _pull(self) -> None:
        try:
            it = itertools.islice(self._it, self._skip, None)
            if self._limit is not None:
                it = itertools.islice(it, self._limit)
            for item in it:
                with self._cond:
                    while len(self._buf) >= self.capacity and not self._closed:
                        self._cond.wait(0.1)
                    if self._closed:
                        return
                    self._buf.append(item)
                    self._cond.notify_all()
        except BaseException as exc:  # the user's iterable failed: the stream ends and says so
            self.error = exc
        finally:
            with self._cond:
                self.exhausted = True
                self._cond.notify_all()

    def take(self, n: int, wait_s: float = 0.0) -> list[Any]:
        """Up to ``n`` buffered items (waiting up to ``wait_s`` for the first one)."""
        with self._cond:
            if not self._buf and not self.exhausted and wait_s > 0:
                self._cond.wait(wait_s)
            out = [self._buf.popleft() for _ in range(min(n, len(self._buf)))]
            self._cond.notify_all()
        self.taken += len(out)
        return out

    @property
    def done(self) -> bool:
        """True when every item has been taken."""
        with self._cond:
            return self.exhausted and not self._buf

    def close(self) -> None:
        """Stop reading (the thread ends at its next item)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
