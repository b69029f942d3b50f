"""The idempotent end of the stream: one outcome per sample id, in memory that does not grow with the run.

Transport is at-least-once (a failed stage replays its batches), so the same sample can reach the end
twice. :class:`DeliveryLedger` records the first outcome of each id -- delivered (with its result) or
rejected (its frame failed to decode) -- and drops every later arrival of that id as a duplicate. Ids
are kept as a watermark (every id below it is settled) plus the settled ids above it, so the state is
bounded by what is in flight, not by the length of the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from pipeline.stream.metrics import LatencySketch

REJECTED_IDS_KEPT = 100
"""How many rejected sample ids the report lists (the count is always exact)."""

REJECT_ERRORS_KEPT = 5
"""How many distinct error texts of rejected frames the report keeps."""

UNSETTLED_RANGES_KEPT = 50
"""How many ranges of unsettled ids a failed run's report lists (the count is always exact)."""


class IdSet:
    """A set of non-negative ints stored as ``[0, watermark)`` plus the members above it."""

    def __init__(self) -> None:
        self.watermark = 0
        self._above: set[int] = set()

    def __contains__(self, i: int) -> bool:
        return i < self.watermark or i in self._above

    def __len__(self) -> int:
        return self.watermark + len(self._above)

    def add(self, i: int) -> bool:
        """Add ``i``; False if it was already a member."""
        if i in self:
            return False
        if i == self.watermark:
            self.watermark += 1
            while self.watermark in self._above:
                self._above.remove(self.watermark)
                self.watermark += 1
        else:
            self._above.add(i)
        return True

    def state(self) -> dict[str, Any]:
        """The set as plain data (a checkpoint's): its watermark and the members above it."""
        return {"watermark": self.watermark, "above": sorted(self._above)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> IdSet:
        """The set :meth:`state` describes."""
        out = cls()
        out.watermark = int(state["watermark"])
        out._above = {int(i) for i in state["above"] if int(i) > out.watermark}
        return out

    def gaps(self, end: int, limit: int) -> list[list[int]]:
        """The non-members below ``end`` as ``[first, last]`` ranges, at most ``limit`` of them."""
        out: list[list[int]] = []
        lo = self.watermark
        for i in [*sorted(m for m in self._above if m < end), end]:
            if i > lo and len(out) < limit:
                out.append([lo, i - 1])
            lo = max(lo, i + 1)
        return out

    @property
    def pending_above(self) -> int:
        """Members above the watermark (the part of the state that is not a single integer)."""
        return len(self._above)


class TextFidelity:
    """A text model's fidelity against the uncompressed model, folded one sample at a time in constant
    memory: embedding cosine (sentence encoders: mean and minimum), and for decoder LMs next-token
    agreement over every valid position and the log-likelihood difference per next token."""

    def __init__(self) -> None:
        self.samples = 0
        self.cosine_sum = 0.0
        self.cosine_n = 0
        self.cosine_min = math.inf
        self.positions = 0
        self.agree = 0
        self.transitions = 0
        self.loglik_delta = 0.0
        self.loglik_delta_min = math.inf  # the worst sample's mean difference per next token

    def add(self, record: dict[str, Any], j: int) -> None:
        """Fold in sample ``j`` of a sink's per-sample record (a no-op if it was not checked)."""
        cos, positions = record["cosine"][j], record["positions"][j]
        if cos is None and positions is None:
            return
        self.samples += 1
        if cos is not None:
            self.cosine_sum += float(cos)
            self.cosine_n += 1
            self.cosine_min = min(self.cosine_min, float(cos))
        if positions is not None:
            self.positions += int(positions)
            self.agree += int(record["agree"][j])
            steps, delta = int(record["transitions"][j]), float(record["loglik_delta"][j])
            self.transitions += steps
            self.loglik_delta += delta
            if steps:
                self.loglik_delta_min = min(self.loglik_delta_min, delta / steps)

    @classmethod
    def merged(cls, parts: Iterable[TextFidelity]) -> TextFidelity:
        """One aggregate of several (the fleet's edges)."""
        out = cls()
        for p in parts:
            for k in ("samples", "cosine_sum", "cosine_n", "positions", "agree", "transitions"):
                setattr(out, k, getattr(out, k) + getattr(p, k))
            out.loglik_delta += p.loglik_delta
            out.cosine_min = min(out.cosine_min, p.cosine_min)
            out.loglik_delta_min = min(out.loglik_delta_min, p.loglik_delta_min)
        return out

    def summary(self) -> dict[str, Any]:
        """The report's text fidelity keys: ``cosine`` (mean) and ``cosine_min`` for encoders;
        ``next_token_agreement``, ``loglik_delta`` (nats per next token, compressed minus
        uncompressed: negative = the codec made the text less likely), ``loglik_delta_min`` (the worst
        sample's) and ``next_tokens`` for decoder LMs. Empty when nothing was checked."""
        out: dict[str, Any] = {}
        if self.cosine_n:
            out["cosine"] = self.cosine_sum / self.cosine_n
            out["cosine_min"] = self.cosine_min
        if self.positions:
            out["next_token_agreement"] = self.agree / self.positions
            out["next_tokens"] = self.transitions
            if self.transitions:
                out["loglik_delta"] = self.loglik_delta / self.transitions
                out["loglik_delta_min"] = self.loglik_delta_min
        return out


class DeliveryLedger:
    """Settles sample ids ``first_id .. first_id+samples-1`` exactly once and aggregates their
    results (one ledger per edge: each edge's ids are its own range)."""

    def __init__(self, samples: int, first_id: int = 0, slo_s: float | None = None) -> None:
        self.samples = samples
        self.first_id = first_id
        self.slo_s = slo_s  # with a latency target, delivered samples within it are counted
        self.within_slo = 0
        self._settled = IdSet()
        self.delivered = 0
        self.rejected = 0
        self.dropped = 0  # shed by a live source that the stream could not keep up with
        self.dropped_ids: list[int] = []
        self.duplicates_dropped = 0
        self.unexpected = 0
        self.rejected_ids: list[int] = []
        self.reject_errors: list[str] = []
        self.labelled = 0
        self.correct = 0
        self.reference = 0  # samples checked against the uncompressed model
        self.agree_checked = 0  # ... of which their top-1 prediction
        self.agree = 0
        self.text = TextFidelity()
        self.latency = LatencySketch()
        self.resumed = 0  # ids settled by earlier runs of a resumed stream (see resume)
        self.last_fresh: list[int] = []  # positions that settled in the latest deliver / reject

    def resume(self, state: dict[str, Any]) -> None:
        """Start from an earlier run's settled ids (:meth:`settled_state`): they count as settled,
        and any of them arriving again is a duplicate."""
        self._settled = IdSet.from_state(state)
        self.resumed = len(self._settled)

    def settled_state(self) -> dict[str, Any]:
        """Which ids are settled, as plain data (relative to ``first_id``), for a checkpoint."""
        return self._settled.state()

    @property
    def watermark(self) -> int:
        """Every id below ``first_id + watermark`` is settled."""
        return self.first_id + self._settled.watermark

    def _fresh(self, ids: Iterable[int]) -> list[int]:
        """Positions of ids that settle now (also kept as ``last_fresh``); counts repeats and
        out-of-range ids."""
        keep: list[int] = []
        self.last_fresh = keep
        for j, i in enumerate(ids):
            i -= self.first_id
            if not 0 <= i < self.samples:
                self.unexpected += 1
            elif self._settled.add(i):
                keep.append(j)
            else:
                self.duplicates_dropped += 1
        return keep

    def deliver(
        self,
        ids: Sequence[int],
        latency_s: Sequence[float],
        correct: Sequence[bool] | None = None,
        agree: Sequence[int] | None = None,
        text: dict[str, Any] | None = None,
    ) -> int:
        """Record results of one batch (``agree``: 1/0 per sample, -1 where not checked; ``text``: a
        text model's per-sample fidelity record from the sink, or None); returns new ids."""
        keep = self._fresh(int(i) for i in ids)
        lat = np.asarray(latency_s, dtype=np.float64)
        for j in keep:
            self.latency.add(float(lat[j]))
            if self.slo_s is not None and lat[j] <= self.slo_s:
                self.within_slo += 1
            if correct is not None:
                self.labelled += 1
                self.correct += bool(correct[j])
            checked = agree is not None and agree[j] >= 0
            if text is not None:
                before = self.text.samples
                self.text.add(text, j)
                checked = checked or self.text.samples > before
            if agree is not None and agree[j] >= 0:
                self.agree_checked += 1
                self.agree += int(agree[j])
            self.reference += checked
        self.delivered += len(keep)
        return len(keep)

    def reject(self, ids: Sequence[int], errors: Sequence[str] = ()) -> int:
        """Record samples whose frames failed to decode; returns how many settle now."""
        keep = self._fresh(int(i) for i in ids)
        for j in keep:
            if len(self.rejected_ids) < REJECTED_IDS_KEPT:
                self.rejected_ids.append(int(ids[j]))
        for e in errors:
            if len(self.reject_errors) < REJECT_ERRORS_KEPT and e not in self.reject_errors:
                self.reject_errors.append(e)
        self.rejected += len(keep)
        return len(keep)

    def drop(self, ids: Sequence[int]) -> int:
        """Record samples a live source shed unread; returns how many settle now."""
        keep = self._fresh(int(i) for i in ids)
        for j in keep:
            if len(self.dropped_ids) < REJECTED_IDS_KEPT:
                self.dropped_ids.append(int(ids[j]))
        self.dropped += len(keep)
        return len(keep)

    @property
    def settled(self) -> int:
        """Delivered, rejected or dropped."""
        return len(self._settled)

    @property
    def lost(self) -> int:
        """Ids that were never settled."""
        return self.samples - self.settled

    def unsettled_ranges(self, limit: int = UNSETTLED_RANGES_KEPT) -> list[list[int]]:
        """The ids never settled, as ``[first, last]`` ranges (the first ``limit``): what a run that
        ended early did not finish."""
        if self.lost <= 0:
            return []
        gaps = self._settled.gaps(self.samples, limit)
        return [[self.first_id + a, self.first_id + b] for a, b in gaps]

    def summary(self) -> dict[str, Any]:
        """Delivery accounting and result aggregates for the report."""
        return {
            "delivered": self.delivered,
            "rejected": self.rejected,
            "lost": self.lost,
            # results folded into the aggregates beyond one per delivered id: a result counted twice
            # would show here (the check that the deduplication holds)
            "duplicated": self.latency.count - self.delivered,
            "duplicates_dropped": self.duplicates_dropped,
            "unexpected": self.unexpected,
            "rejected_ids": list(self.rejected_ids),
            "rejected_ids_truncated": self.rejected > len(self.rejected_ids),
            "reject_errors": list(self.reject_errors),
            "within_slo": self.within_slo,
            "accuracy": self.correct / self.labelled if self.labelled else None,
            "labelled_samples": self.labelled,
            "agreement": self.agree / self.agree_checked if self.agree_checked else None,
            "reference_samples": self.reference,
        }
