"""A chaos monkey for soak tests: SIGKILLs a random stage actor of a local stream every so often.

Stage actors are found by their Ray process titles (``ray::EdgeNode``, ``ray::CloudNode.process``,
...) among the descendants of a process (by default this one, which started the local Ray), so it
never touches another Ray on the machine. Ray restarts a killed actor (``flow.max_restarts``) and the
stream replays what it lost, so a soak shows that kills cost replays, not samples::

    with ChaosMonkey(every_s=(30, 60), seed=1) as monkey:
        report = run_pipeline(cfg)
    print(monkey.kills)  # [(time.time() of the kill, actor class, pid), ...]

The gap before each kill is drawn uniformly from ``every_s``, from a seeded generator, so a run's
schedule can be repeated.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from types import TracebackType

import psutil

STAGE_CLASSES = (
    "EdgeNode", "EdgeHost", "CloudNode", "Source", "HeadModel", "Encoder", "Transport", "Decoder",
    "TailModel", "Sink",
)  # fmt: skip


def stage_processes(root: int | None = None, classes: tuple[str, ...] = STAGE_CLASSES) -> list:
    """The live processes under ``root`` (default: this process) whose Ray title names one of the
    stage ``classes``, as ``(class, psutil.Process)``."""
    found = []
    for p in psutil.Process(root or os.getpid()).children(recursive=True):
        try:
            title = (p.cmdline() or [""])[0]
        except psutil.Error:
            continue
        if not title.startswith("ray::"):
            continue
        cls = title[5:].split(".", 1)[0].split(" ", 1)[0]
        if cls in classes:
            found.append((cls, p))
    return found


class ChaosMonkey(threading.Thread):
    """Kills one random stage actor process every ``every_s`` seconds (a ``(low, high)`` range)
    until stopped; :attr:`kills` lists ``(wall-clock time, class, pid)`` (``time.time()``)."""

    def __init__(
        self,
        every_s: tuple[float, float] = (30.0, 60.0),
        *,
        seed: int = 0,
        classes: tuple[str, ...] = STAGE_CLASSES,
        root: int | None = None,
    ) -> None:
        low, high = every_s
        if not 0 < low <= high:
            raise ValueError(f"every_s must be 0 < low <= high, got {every_s}")
        super().__init__(daemon=True, name="chaos-monkey")
        self.every_s, self.classes, self.root = (low, high), classes, root
        self.rng = random.Random(seed)
        self.kills: list[tuple[float, str, int]] = []
        self.misses = 0  # kills due when no stage process was found
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.rng.uniform(*self.every_s)):
            targets = stage_processes(self.root, self.classes)
            if not targets:
                self.misses += 1
                continue
            cls, proc = self.rng.choice(targets)
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                self.misses += 1
                continue
            self.kills.append((time.time(), cls, proc.pid))

    def stop(self) -> None:
        """No more kills after this returns."""
        self._stop_event.set()
        if self.is_alive():
            self.join()

    def __enter__(self) -> ChaosMonkey:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
