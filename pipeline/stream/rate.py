"""Rate control: per batch, the codec setting that holds a latency SLO on a changing link.

A **profile** maps each codec setting (bits, level, per-tensor or per-channel) to the bytes one
sample costs and the fidelity it keeps, measured offline
(``python -m pipeline.evaluation.evaluate --profile``) or from the stream's first samples at start-up.
The **controller** picks, before each batch, the setting with the best profiled fidelity whose bytes
the link can carry within the SLO.

The algorithm borrows from adaptive-bitrate video streaming:

* *throughput-based* selection, as in FESTIVE and in MPC's predictor: the link rate is the harmonic
  mean of the last few per-batch rates measured at the receiver, which discounts a single fast
  sample;
* a *buffer* term, as in BOLA, steered to a target queueing delay as LEDBAT (RFC 6817) and Copa
  do: the bytes already waiting on the link (the backlog), in seconds at the measured rate, set how
  much of the link the next batches may use. An empty queue lets them send above the rate for a
  while (the latency budget absorbs it), a queue past the target makes them send below it, so a
  building queue lowers the setting before latency shows it;
* *latency feedback*: when the recent end-to-end latency nears the SLO anyway, the setting is capped
  one step below the current one;
* *hysteresis*, as in practical ABR players: a setting goes down at once, but up only one step, after
  the higher setting has fit with a safety margin for several consecutive batches;
* a *stall bound*, as a TCP sender reads a timeout: a batch that has been on the link for ``age``
  seconds bounds the link's rate by its bytes over ``age``, before any delivery confirms a drop;
* *probing*, as TCP and BBR probe for bandwidth: a link that carries everything sent shows no
  queue, so its rate cannot be measured; rate samples expire, and while none is fresh and latency
  stays low, the setting climbs one step per hysteresis period until the link queues again.

Everything it is fed is measured by the stream (arrival stamps and bytes at the receiver, the
driver's view of the link backlog, latencies at the sink); nothing is read from the emulated link's
configuration. Pure Python, no Ray: the executor owns one controller per edge.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codec import CodecSettings

DEFAULT_BITS = (8, 6, 4, 3, 2)
"""The bit widths an adaptive stream may choose from unless ``rate.bits`` says otherwise."""


@dataclass(frozen=True)
class ProfileEntry:
    """What one setting costs and keeps: payload bytes per sample, fidelity (0..1, higher is
    better) and a finer error that separates settings of equal fidelity (lower is better; the mean
    KL divergence of the outputs from the uncompressed model's)."""

    setting: CodecSettings
    bytes_per_sample: float
    fidelity: float
    error: float = 0.0


@dataclass
class RateProfile:
    """The rate-fidelity profile of one (model, split)."""

    model: str
    split: str
    metric: str  # what ``fidelity`` measures, e.g. "agreement" (top-1 with the uncompressed model)
    samples: int  # inputs the figures rest on
    source: str  # where it was measured ("offline: ...", "start-up: first N samples")
    entries: list[ProfileEntry]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "split": self.split,
            "metric": self.metric,
            "samples": self.samples,
            "source": self.source,
            "settings": [
                {
                    **e.setting.as_dict(),
                    "bytes_per_sample": e.bytes_per_sample,
                    "fidelity": e.fidelity,
                    "error": e.error,
                }
                for e in self.entries
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RateProfile:
        entries = [
            ProfileEntry(
                CodecSettings(int(s["bits"]), int(s.get("level", 3)), s.get("axis"), s.get("clip")),
                float(s["bytes_per_sample"]),
                float(s["fidelity"]),
                float(s.get("error", 0.0)),
            )
            for s in d["settings"]
        ]
        return cls(d["model"], d["split"], d["metric"], int(d["samples"]), d["source"], entries)


def save_profiles(profiles: Iterable[RateProfile], path: str | Path) -> Path:
    """Write profiles as JSON (``{"profiles": [...]}``), one per (model, split)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"profiles": [p.to_dict() for p in profiles]}, indent=1))
    return out


def load_profile(path: str | Path, model: str, split: str) -> RateProfile:
    """The profile of ``(model, split)`` in a file written by :func:`save_profiles`; ``ValueError``
    (naming what is there) when the file holds none for them."""
    data = json.loads(Path(path).read_text())
    found = [p for p in data.get("profiles", []) if (p["model"], p["split"]) == (model, split)]
    if not found:
        have = [f"{p['model']}@{p['split']}" for p in data.get("profiles", [])]
        raise ValueError(f"no profile for {model}@{split} in {path} (it has {have})")
    return RateProfile.from_dict(found[0])


class RateController:
    """Chooses a :class:`codec.CodecSettings` per batch; see the module docstring for the idea.

    Each decision compares a setting's bit rate at the measured input rate with an *allowance*: the
    link's estimated rate times ``utilization + gain * (target_delay - queue_delay) / target_delay``
    (between 0.05 and ``1 + gain``), where the queue delay is the backlog over the rate and the
    target delay is ``target`` of the SLO less the latency that is not the link's (linger, compute,
    propagation: the recent minimum). The best
    setting that fits is chosen; a setting goes down at once, and up one step only after the next
    better one has fit with ``margin`` to spare for ``hysteresis`` consecutive decisions.
    ``allowed_bits`` bounds the choice: a setting outside it is never picked, nor one whose profiled
    fidelity is below ``min_fidelity`` (unless none reaches it: then the best ones stay).
    """

    def __init__(
        self,
        profile: RateProfile,
        slo_s: float,
        allowed_bits: Sequence[int] = DEFAULT_BITS,
        *,
        target: float = 0.4,
        gain: float = 0.5,
        utilization: float = 0.95,
        margin: float = 0.9,
        hysteresis: int = 3,
        window: int = 5,
        overhead_bytes: float = 600.0,
        stale_s: float = 0.5,
        min_fidelity: float = 0.0,
    ) -> None:
        allowed = [e for e in profile.entries if e.setting.bits in set(allowed_bits)]
        if not allowed:
            raise ValueError(f"the profile has no setting with bits in {list(allowed_bits)}")
        # a setting that keeps too little is never worth its bytes; the best one is kept regardless
        best = max(e.fidelity for e in allowed)
        usable = [e for e in allowed if e.fidelity >= min(min_fidelity, best)]
        # best fidelity first; among equals, the smaller error, then the fewer bytes
        ladder = sorted(usable, key=lambda e: (-e.fidelity, e.error, e.bytes_per_sample))
        # drop settings that cost more than a better one (never worth choosing)
        self.ladder: list[ProfileEntry] = []
        for e in ladder:
            if all(e.bytes_per_sample < k.bytes_per_sample for k in self.ladder):
                self.ladder.append(e)
        self.slo_s = slo_s
        self.target, self.gain = target, gain
        self.utilization, self.margin = utilization, margin
        self.hysteresis = hysteresis
        self.overhead_bytes = overhead_bytes  # Arrow bytes a batch adds beyond its frame payload
        self.rates: deque[tuple[float, float]] = deque(maxlen=window)  # (when, bytes/s)
        self.stale_s = stale_s  # a rate sample older than this no longer describes the link
        self.latencies: deque[float] = deque(maxlen=window)  # worst latency of recent batches
        self.rests: deque[float] = deque(maxlen=4 * window)  # their latency outside the link
        self.input_sps: float | None = None  # samples/s reaching the encoder (EWMA)
        self._last_t: float | None = None
        self.current = 0  # index in the ladder (0 = best fidelity)
        self.fits = 0  # consecutive decisions in which the next better setting fitted with margin
        self.changes = 0
        self.decisions = 0

    # -------------------------------------------------------------- measurements
    def observe_rate(self, nbytes: float, seconds: float, now: float | None = None) -> None:
        """A batch of ``nbytes`` arrived ``seconds`` after the previous one while the link was busy
        the whole time (the sender had it queued): one sample of the link's rate, taken at ``now``
        (the clock of :meth:`choose`; None: it never goes stale)."""
        if nbytes > 0 and seconds > 0:
            self.rates.append((math.inf if now is None else now, nbytes / seconds))

    def observe_batch(self, setting: CodecSettings, samples: int, wire_bytes: int) -> None:
        """A batch was coded: what it really cost on the wire beyond its samples' profiled bytes
        (Arrow columns, frame headers and tables, which a small batch pays for few samples) becomes
        the per-batch overhead the costs use (a moving average)."""
        profiled = next((e.bytes_per_sample for e in self.ladder if e.setting == setting), None)
        if profiled is None or samples <= 0:
            return
        extra = max(0.0, wire_bytes - samples * profiled)
        self.overhead_bytes = 0.8 * self.overhead_bytes + 0.2 * extra

    def observe_latency(self, worst_s: float, link_s: float = 0.0) -> None:
        """A batch's worst end-to-end latency, and how much of it the link accounts for: the rest
        is the part outside the link, tracked as its recent minimum."""
        self.latencies.append(worst_s)
        self.rests.append(max(0.0, worst_s - link_s))

    @property
    def base_s(self) -> float:
        """Latency outside the link (linger, compute, propagation): the recent minimum."""
        return min(self.rests) if self.rests else 0.0

    @property
    def rate_bps(self) -> float | None:
        """Estimated link rate in bytes/s: harmonic mean of the recent samples (None: no sample).
        One slow sample pulls it down at once; it takes several fast ones to raise it."""
        if not self.rates:
            return None
        return len(self.rates) / sum(1.0 / r for _, r in self.rates)

    def _expire(self, now: float | None) -> None:
        """Forget rate samples older than ``stale_s``: a link that has not been saturated since
        may well be faster now (the probe in :meth:`choose` finds out)."""
        while now is not None and self.rates and self.rates[0][0] < now - self.stale_s:
            self.rates.popleft()

    # -------------------------------------------------------------- decision
    def _allowance(self, backlog_bytes: float, cap_bps: float | None) -> float | None:
        """Bytes/s the next batches may add (None: nothing measured yet): the link's rate, scaled
        by how far the queue is from its target delay. An empty queue allows up to ``1 + gain``
        times the rate (the latency budget absorbs a short excess); a queue at the target allows
        ``utilization`` of it; a longer one allows less, so the queue drains. ``cap_bps`` bounds
        the link's rate from a batch still on it (see :meth:`choose`)."""
        rate = self.rate_bps
        if cap_bps is not None:
            rate = cap_bps if rate is None else min(rate, cap_bps)
        if rate is None or self.input_sps is None:
            return None
        target = self.target_delay_s
        queue_s = backlog_bytes / rate
        scale = self.utilization + self.gain * (target - queue_s) / target
        return rate * max(0.05, min(1.0 + self.gain, scale))

    @property
    def target_delay_s(self) -> float:
        """The queueing delay the controller steers toward: ``target`` of the SLO less the latency
        outside the link, at least 5 % of the SLO."""
        return max(0.05 * self.slo_s, self.target * self.slo_s - self.base_s)

    def _cost(self, e: ProfileEntry, samples: int) -> float:
        """Bytes/s a setting adds at the current input rate, per-batch overhead included."""
        assert self.input_sps is not None
        return self.input_sps * (e.bytes_per_sample + self.overhead_bytes / max(1, samples))

    def choose(
        self,
        samples: int,
        backlog_bytes: float = 0.0,
        now: float | None = None,
        cap_bps: float | None = None,
    ) -> CodecSettings:
        """The setting for the next batch of ``samples`` samples made at ``now`` (seconds, any
        clock; successive calls measure the input rate), with ``backlog_bytes`` on the link.

        ``cap_bps``, when given, is an upper bound on the link's rate known before any delivery: the
        oldest batch on the link has waited so long that the link cannot be faster than its bytes
        over its age. It lets a sudden drop show at once, where delivery-based samples lag."""
        self.decisions += 1
        if now is not None:
            if self._last_t is not None and now > self._last_t:
                sps = samples / (now - self._last_t)
                self.input_sps = sps if self.input_sps is None else 0.7 * self.input_sps + 0.3 * sps
            self._last_t = now
        self._expire(now)
        allow = self._allowance(backlog_bytes, cap_bps)
        if allow is None:
            fit = self.current  # no fresh measurement: the link is not saturated; see the probe
        else:
            costs = [self._cost(e, samples) for e in self.ladder]
            fit = next((i for i, c in enumerate(costs) if c <= allow), len(self.ladder) - 1)
        if self.latencies and max(self.latencies) > 0.9 * self.slo_s:
            # queueing shows in the latencies: one step down, then wait for fresh measurements
            fit = max(fit, min(self.current + 1, len(self.ladder) - 1))
            self.latencies.clear()
        if fit > self.current:  # down at once
            self.current, self.fits = fit, 0
            self.changes += 1
        elif fit < self.current or (allow is None and self.current > 0):
            # up one step, after the next better setting fitted with margin (or, with no fresh rate
            # sample, while latency stays low: a probe) for ``hysteresis`` decisions in a row
            if allow is not None:
                roomy = self._cost(self.ladder[self.current - 1], samples) <= self.margin * allow
            else:
                roomy = not self.latencies or max(self.latencies) <= 0.5 * self.slo_s
            self.fits = self.fits + 1 if roomy else 0
            if self.fits >= self.hysteresis:
                self.current, self.fits = self.current - 1, 0
                self.changes += 1
        else:
            self.fits = 0
        return self.ladder[self.current].setting

    @property
    def setting(self) -> CodecSettings:
        """The setting chosen last (the best one before any decision)."""
        return self.ladder[self.current].setting

    def summary(self) -> dict[str, Any]:
        """The controller's state for the report."""
        rate = self.rate_bps
        return {
            "decisions": self.decisions,
            "changes": self.changes,
            "ladder": [e.setting.label() for e in self.ladder],
            "rate_estimate_mbps": None if rate is None else rate * 8 / 1e6,
            "input_sps": self.input_sps,
            "overhead_bytes": self.overhead_bytes,
            "base_latency_ms": self.base_s * 1000.0,
        }
