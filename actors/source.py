"""Source actor: produces batches of samples, sized by the adaptive batcher, optionally paced.

The driver owns the position in the stream (the next sample id) and the stream's start time, and passes
both on every call, so a restarted source carries on where the last one stopped. ``rebuild`` makes any
earlier batch again from its sample ids (the source is deterministic), for replays whose stored inputs
were lost with a node.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from actors.base import StageBase
from pipeline.stream.data import SampleSource, SourceSpec, arrival_offsets, nbytes
from pipeline.stream.flow import AdaptiveBatcher


class Source(StageBase):
    """Emits sample ids ``first_id .. first_id+samples-1`` (an edge's range); with ``rate_sps`` they
    arrive at that rate.

    ``next_batch(start, t0)`` returns ``(meta, batch)`` (call it with ``num_returns=2`` so the driver
    only fetches the small ``meta``): ``meta = {"n", "start", "done", "t0", "t_created", ...}``;
    ``batch`` is a dict of ids, inputs, labels and source timestamps, or None once exhausted.
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
        *,
        first_id: int = 0,
        arrival: dict[str, Any] | None = None,
        threads: int = 1,
    ) -> None:
        super().__init__(0, threads)
        self.src = SampleSource(spec)
        self.first_id = first_id
        self.end = first_id + samples
        self.rate_sps = rate_sps
        self.batcher = AdaptiveBatcher(max_batch_size, max_wait_ms, min_batch_size, adaptive)
        # paced: when each sample arrives after t0 (steady, poisson or bursty; see arrival_offsets)
        self.offsets = None
        if rate_sps is not None:
            a = arrival or {}
            self.offsets = arrival_offsets(
                samples, rate_sps, a.get("pattern", "steady"), a.get("period_s", 2.0),
                a.get("duty", 0.5), seed=spec.seed + first_id,
            )  # fmt: skip

    def _arrived(self, now: float, t0: float) -> int:
        """The id after the last sample that has arrived by ``now`` (all for an unpaced source)."""
        if self.offsets is None:
            return self.end
        return self.first_id + int(np.searchsorted(self.offsets, now - t0, side="right"))

    def _arrival_time(self, i: int, t0: float) -> float:
        """When sample ``i`` arrives (its source timestamp)."""
        if self.offsets is None:
            return time.time()
        k = min(i - self.first_id, len(self.offsets) - 1)
        return t0 + float(self.offsets[k])

    def _batch(self, start: int, n: int, t0: float, t_created: float) -> dict[str, Any]:
        ids = np.arange(start, start + n, dtype=np.int64)
        x, labels = self.src.get(ids)
        if self.offsets is None:
            t_src = np.full(n, t_created)
        else:
            t_src = t0 + self.offsets[ids - self.first_id]
        return {"ids": ids, "x": x, "labels": labels, "t_src": t_src}

    def next_batch(self, start: int, t0: float | None = None):
        """The batch starting at sample ``start`` (blocks for pacing and linger)."""
        t0 = time.time() if t0 is None else t0
        if start >= self.end:
            return {"n": 0, "start": start, "done": True, "t0": t0}, None
        while True:
            now = time.time()
            pending = self._arrived(now, t0) - start
            oldest_wait = now - self._arrival_time(start, t0) if pending > 0 else 0.0
            # everything that will ever arrive is here: no point lingering for more
            if self.batcher.should_emit(pending, oldest_wait) or (
                pending > 0 and self._arrived(now, t0) >= self.end
            ):
                break
            wait = self._arrival_time(start + max(pending, 0), t0) - now
            if pending > 0:
                wait = min(wait, self.batcher.time_to_deadline(oldest_wait))
            time.sleep(max(0.0005, wait))
        begin = self._begin()
        n = self.batcher.take(pending)
        batch = self._batch(start, n, t0, begin)
        meta = self._meta(begin, n, 0, nbytes(batch["x"]))
        meta.update(start=start, done=start + n >= self.end, t0=t0, t_created=begin)
        return meta, batch

    def rebuild(self, start: int, n: int, t0: float, t_created: float):
        """The batch of samples ``start .. start+n-1`` again, with its original timestamps."""
        begin = self._begin()
        batch = self._batch(start, n, t0, t_created)
        meta = self._meta(begin, n, 0, nbytes(batch["x"]))
        meta.update(start=start, done=False, t0=t0, t_created=t_created)
        return meta, batch
