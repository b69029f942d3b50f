"""Source actor: produces batches of samples, sized by the adaptive batcher, optionally paced."""

from __future__ import annotations

import time
from typing import Any

from actors.base import StageBase
from pipeline.stream.data import SampleSource, SourceSpec
from pipeline.stream.flow import AdaptiveBatcher


class Source(StageBase):
    """Emits ``samples`` ids in order; with ``rate_sps`` samples arrive at that rate.

    ``next_batch()`` returns ``(meta, batch)`` (call with ``num_returns=2`` so the driver only
    fetches the small ``meta``): ``meta = {"n", "done"}``; ``batch`` is a dict of ids, inputs,
    labels and source timestamps, or None once exhausted.
    """

    stage = "source"

    def __init__(
        self,
        spec: SourceSpec,
        samples: int,
        max_batch_size: int,
        max_wait_ms: float,
        min_batch_size: int = 1,
        adaptive: bool = True,
        rate_sps: float | None = None,
    ) -> None:
        super().__init__(0)
        self.src = SampleSource(spec)
        self.samples = samples
        self.rate_sps = rate_sps
        self.batcher = AdaptiveBatcher(max_batch_size, max_wait_ms, min_batch_size, adaptive)
        self.next_id = 0
        self.t0: float | None = None

    def _arrived(self, now: float) -> int:
        """Samples that have arrived by ``now`` (all of them for an unpaced source)."""
        if self.rate_sps is None or self.t0 is None:
            return self.samples
        return min(self.samples, int((now - self.t0) * self.rate_sps) + 1)

    def _arrival_time(self, i: int) -> float:
        if self.rate_sps is None or self.t0 is None:
            return time.time()
        return self.t0 + i / self.rate_sps

    def next_batch(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The next batch (blocks for pacing / linger), or ``({"done": True}, None)``."""
        if self.t0 is None:
            self.t0 = time.time()
        if self.next_id >= self.samples:
            return {"n": 0, "done": True}, None
        while True:
            now = time.time()
            pending = self._arrived(now) - self.next_id
            oldest_wait = now - self._arrival_time(self.next_id) if pending > 0 else 0.0
            # everything that will ever arrive is here: no point lingering for more
            if self.batcher.should_emit(pending, oldest_wait) or (
                pending > 0 and self._arrived(now) >= self.samples
            ):
                break
            nxt = self._arrival_time(self.next_id + max(pending, 0))
            wait = nxt - now
            if pending > 0:
                wait = min(wait, self.batcher.time_to_deadline(oldest_wait))
            time.sleep(max(0.0005, wait))
        start = time.time()
        n = self.batcher.take(pending)
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        import numpy as np

        id_arr = np.asarray(ids, dtype=np.int64)
        x, labels = self.src.get(id_arr)
        t_src = np.asarray([self._arrival_time(i) if self.rate_sps else start for i in ids])
        batch = {"ids": id_arr, "x": x, "labels": labels, "t_src": t_src}
        self.rec.record(start, time.time(), n, 0, int(x.nbytes))
        return {"n": n, "done": self.next_id >= self.samples}, batch

    def batch_sizes(self) -> list[int]:
        """Sizes the batcher emitted, in order."""
        return list(self.batcher.history)
