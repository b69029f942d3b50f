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
from pipeline.stream.data import UNBOUNDED, SampleSource, SourceSpec, arrival_offsets, nbytes
from pipeline.stream.flow import AdaptiveBatcher


class Source(StageBase):
    """Emits sample ids ``first_id .. first_id+samples-1`` (an edge's range); with ``rate_sps`` they
    arrive at that rate.

    ``next_batch(start, t0)`` returns ``(meta, batch)`` (call it with ``num_returns=2`` so the driver
    only fetches the small ``meta``): ``meta = {"n", "start", "done", "t0", "t_created", ...}``;
    ``batch`` is a dict of ids, inputs, labels and source timestamps, or None once exhausted. The user's
    data adds ``keys`` (every sample's) and ``rejected`` (``[id, reason]`` of the samples that did not
    load) to ``meta``; ``good`` counts the samples that go on in ``batch``. An iterable source gets
    its items from the driver with each call (``items``), so its batches are the driver's.

    Shedding (``overflow`` other than ``block``, paced sources only): when more samples wait than it
    keeps, the oldest are dropped unread. ``meta["dropped"]`` counts them (ids ``start ..
    start+dropped-1``, their keys in ``dropped_keys``) and the batch starts after them, at
    ``meta["first"]``.
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
        overflow: str = "block",
        overflow_samples: int | None = None,
    ) -> None:
        super().__init__(0, threads)
        # a paced source that the stream falls behind: keep at most this many waiting samples (the
        # newest), dropping the older ones; None blocks (every sample waits its turn)
        self.keep = {"block": None, "latest": 1, "drop_oldest": overflow_samples or max_batch_size}[
            overflow
        ]
        self.src = SampleSource(spec, threads)
        self.first_id = first_id
        self.end = first_id + samples
        self.rate_sps = rate_sps
        self.batcher = AdaptiveBatcher(max_batch_size, max_wait_ms, min_batch_size, adaptive)
        # paced: when each sample arrives after t0 (steady, poisson or bursty; see arrival_offsets);
        # an endless source arrives steadily, computed per sample
        self.offsets = None
        if rate_sps is not None and samples < UNBOUNDED:
            a = arrival or {}
            self.offsets = arrival_offsets(
                samples, rate_sps, a.get("pattern", "steady"), a.get("period_s", 2.0),
                a.get("duty", 0.5), seed=spec.seed + first_id, steps=a.get("steps"),
            )  # fmt: skip

    def _offset(self, k: np.ndarray | int) -> Any:
        """When the ``k``-th sample of this edge arrives, in seconds after t0."""
        if self.offsets is not None:
            return self.offsets[np.minimum(k, len(self.offsets) - 1)]
        assert self.rate_sps is not None
        return np.asarray(k, dtype=np.float64) / self.rate_sps

    def _arrived(self, now: float, t0: float) -> int:
        """The id after the last sample that has arrived by ``now`` (all for an unpaced source)."""
        if self.rate_sps is None:
            return self.end
        if self.offsets is None:
            return min(self.end, self.first_id + int((now - t0) * self.rate_sps) + 1)
        return self.first_id + int(np.searchsorted(self.offsets, now - t0, side="right"))

    def _arrival_time(self, i: int, t0: float) -> float:
        """When sample ``i`` arrives (its source timestamp)."""
        if self.rate_sps is None:
            return time.time()
        return t0 + float(self._offset(i - self.first_id))

    def _batch(
        self, start: int, n: int, t0: float, t_created: float, items: list[Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The batch of samples ``start .. start+n-1`` and what the driver learns of it."""
        ids = np.arange(start, start + n, dtype=np.int64)
        got = self.src.load(ids, items)
        if self.rate_sps is None:
            t_src = np.full(n, t_created)
        else:
            t_src = t0 + self._offset(ids - self.first_id)
        good = got.good
        labels = got.labels
        batch = {"ids": ids[good], "x": got.x, "labels": labels, "t_src": t_src[good]}
        info: dict[str, Any] = {"good": len(good)}
        if self.src.spec.user_data:
            info["keys"] = got.keys
            info["rejected"] = [[int(ids[j]), r] for j, r in sorted(got.rejected.items())]
        return batch, info

    def next_batch(self, start: int, t0: float | None = None, items: list[Any] | None = None):
        """The batch starting at sample ``start`` (blocks for pacing and linger); an iterable source
        takes ``items`` as its batch."""
        t0 = time.time() if t0 is None else t0
        if start >= self.end:
            return {"n": 0, "start": start, "done": True, "t0": t0}, None
        if items is not None:
            pending = len(items)
        else:
            pending = self._wait(start, t0)
        begin = self._begin()
        dropped = 0
        if self.keep is not None and items is None and pending > self.keep:
            dropped = pending - self.keep  # the oldest go: the stream could not keep up
            pending = self.keep
        first = start + dropped
        n = pending if items is not None else self.batcher.take(pending)
        batch, info = self._batch(first, n, t0, begin, items)
        meta = self._meta(begin, n, 0, nbytes(batch["x"]))
        meta.update(start=start, first=first, done=first + n >= self.end, t0=t0, t_created=begin)
        meta.update(info)
        if dropped:
            meta["dropped"] = dropped
            meta["dropped_keys"] = self.src.keys(np.arange(start, first, dtype=np.int64))
        return meta, batch

    def _wait(self, start: int, t0: float) -> int:
        """Sleep until a batch is due (pacing and linger); returns the samples that have arrived."""
        while True:
            now = time.time()
            arrived = self._arrived(now, t0)
            pending = arrived - start
            oldest_wait = now - self._arrival_time(start, t0) if pending > 0 else 0.0
            # everything that will ever arrive is here: no point lingering for more
            if self.batcher.should_emit(pending, oldest_wait) or (
                pending > 0 and arrived >= self.end
            ):
                return pending
            wait = self._arrival_time(start + max(pending, 0), t0) - now
            if pending > 0:
                wait = min(wait, self.batcher.time_to_deadline(oldest_wait))
            time.sleep(max(0.0005, wait))

    def rebuild(
        self, start: int, n: int, t0: float, t_created: float, items: list[Any] | None = None
    ):
        """The batch of samples ``start .. start+n-1`` again, with its original timestamps."""
        begin = self._begin()
        batch, info = self._batch(start, n, t0, t_created, items)
        meta = self._meta(begin, n, 0, nbytes(batch["x"]))
        meta.update(start=start, first=start, done=False, t0=t0, t_created=t_created, **info)
        return meta, batch
