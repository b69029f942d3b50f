"""When a stream stops reading: at the end of its source, after ``--duration``, or on a signal.

The first stop request (SIGINT, SIGTERM, :meth:`StopControl.request`, or the duration running out)
stops reading: what is in flight drains and settles, the output and the report are written. A second
request aborts at once; the partial report and the output settled so far are still written. The control
holds flags only, so a signal handler may call it at any moment; the driver's loop polls it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StopControl:
    """Stop requests for one stream: ``stopping`` after the first, ``aborted`` after the second.

    ``duration_s`` requests a stop by itself once that long has passed since :meth:`start`;
    ``clock`` is the monotonic clock (a fake one in tests); ``on_stop(message)`` is told once, from
    the driver's loop (never from a signal handler), when the stream acts on the first request."""

    def __init__(
        self,
        duration_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_stop: Callable[[str], None] | None = None,
    ) -> None:
        if duration_s is not None and not duration_s > 0:
            raise ValueError(f"--duration: must be positive, got {duration_s}")
        self.duration_s = duration_s
        self.clock = clock
        self.reason: str | None = None  # "duration", "signal" or "request": why reading stopped
        self.signal: str | None = None  # the signal's name, when one stopped it
        self.requests = 0
        self.on_stop = on_stop
        self._told = False
        self._deadline: float | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """The stream starts now: ``duration_s`` counts from here."""
        if self.duration_s is not None:
            self._deadline = self.clock() + self.duration_s

    def request(self, reason: str = "request", signal_name: str | None = None) -> None:
        """Ask the stream to stop (the first call) or to abort (any later one)."""
        with self._lock:
            self.requests += 1
            if self.reason is None:
                self.reason, self.signal = reason, signal_name

    @property
    def stopping(self) -> bool:
        """True once the stream should read no more (a request, or the duration is over)."""
        if self.reason is None and self._deadline is not None and self.clock() >= self._deadline:
            with self._lock:
                if self.reason is None:
                    self.reason = "duration"
        return self.reason is not None

    def acted_on(self) -> None:
        """The driver stopped reading because of the first request: tell ``on_stop`` (once)."""
        if self._told or self.on_stop is None or self.reason is None:
            return
        self._told = True
        why = self.signal or self.reason
        again = f"send {self.signal} again" if self.signal else "stop it again"
        self.on_stop(
            f"stopping ({why}): reading stopped, draining what is in flight; {again} to abort"
        )

    @property
    def aborted(self) -> bool:
        """True after a second request: the stream ends without draining."""
        return self.requests >= 2

    def summary(self, finished: bool) -> dict[str, str | None]:
        """The report's ``stop``: why reading ended (``end`` of the source when nothing stopped it)."""
        reason = self.reason or ("end" if finished else None)
        if self.aborted:
            reason = "aborted"
        return {"reason": reason, "signal": self.signal}


@contextmanager
def signals_stop(control: StopControl) -> Iterator[StopControl]:
    """While inside, SIGINT and SIGTERM request a stop of ``control`` (the second one aborts) instead
    of raising ``KeyboardInterrupt`` or killing the process. Main thread only; the previous handlers
    come back on exit."""
    names = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

    def handler(signum: int, _frame: object) -> None:
        control.request("signal", names.get(signum, str(signum)))

    previous = {s: signal.signal(s, handler) for s in names}
    try:
        yield control
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
