"""Stream metrics whose memory does not grow with the run: sketches, per-stage and per-link aggregates,
the receiver's goodput, a decimating timeline, and the exports to ``ray.util.metrics``.

Every stage call returns a small ``meta`` dict (timings, sample and byte counts, RSS); the driver folds
each one into these aggregates as it arrives and keeps nothing per batch or per sample. Latency
quantiles come from a DDSketch (relative-error quantiles in a bounded number of bins), so p50/p99 of a
100k-sample run cost the same memory as those of a 100-sample run.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]

SKETCH_RELATIVE_ACCURACY = 0.01
"""Quantiles are within 1 % of the true value (DDSketch's guarantee)."""

SKETCH_BINS = 1024
"""At most this many bins per sketch: values spanning 1 us .. 10^4 s at 1 % need about 800."""


def where_am_i() -> dict[str, Any]:
    """Node id (when inside Ray), IP address, hostname and pid of the calling process."""
    info: dict[str, Any] = {"pid": os.getpid(), "hostname": socket.gethostname()}
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            info["node_id"] = ctx.get_node_id()
            info["ip"] = ray.util.get_node_ip_address()
    except Exception:  # pragma: no cover - best effort outside Ray
        pass
    return info


_PROCESS: Any = None


def process_rss_bytes() -> int:
    """Resident set size of the calling process (0 if it cannot be read)."""
    global _PROCESS
    try:
        if _PROCESS is None or _PROCESS.pid != os.getpid():
            import psutil

            _PROCESS = psutil.Process()
        return int(_PROCESS.memory_info().rss)
    except Exception:  # pragma: no cover - psutil missing or /proc unreadable
        return 0


class LatencySketch:
    """Quantiles of non-negative durations (seconds) in bounded memory, via ``ddsketch``."""

    def __init__(self) -> None:
        from ddsketch import LogCollapsingLowestDenseDDSketch

        self._sketch = LogCollapsingLowestDenseDDSketch(
            relative_accuracy=SKETCH_RELATIVE_ACCURACY, bin_limit=SKETCH_BINS
        )

    def add(self, seconds: float) -> None:
        """Record one duration (negative values, e.g. from clock skew between nodes, count as 0)."""
        self._sketch.add(max(0.0, float(seconds)))

    @classmethod
    def merged(cls, sketches: list[LatencySketch]) -> LatencySketch:
        """One sketch holding the values of all of ``sketches`` (which stay unchanged)."""
        out = cls()
        for sk in sketches:
            if sk.count:
                out._sketch.merge(sk._sketch)
        return out

    @property
    def count(self) -> int:
        """Number of recorded values."""
        return int(self._sketch.count)

    def quantile_ms(self, q: float) -> float:
        """The ``q`` quantile (0..1) in milliseconds; NaN when empty."""
        if self._sketch.count == 0:
            return math.nan
        return float(self._sketch.get_quantile_value(q)) * 1000.0

    def summary_ms(self) -> dict[str, float]:
        """p50, p99 and max in milliseconds."""
        empty = self._sketch.count == 0
        return {
            "p50_ms": self.quantile_ms(0.5),
            "p99_ms": self.quantile_ms(0.99),
            "max_ms": math.nan if empty else float(self._sketch._max) * 1000.0,
        }


class StageStats:
    """Aggregates of one logical stage over all its replicas, fed one call ``meta`` at a time."""

    def __init__(self, name: str, replicas: int) -> None:
        self.name = name
        self.replicas = replicas
        self.batches = 0
        self.samples = 0
        self.busy_s = 0.0
        self.cpu_s = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.wire_bytes = 0  # Arrow IPC bytes of the batches it emitted or received, when it says
        self.first_start = math.inf
        self.last_end = -math.inf
        self.service = LatencySketch()
        self.restarts = 0
        self.replayed_batches = 0
        self.retries = 0
        self.lost_inputs = 0
        self.rss = [0] * replicas  # latest reported RSS per replica
        self.placement: list[dict[str, Any]] = [{} for _ in range(replicas)]

    def add(self, replica: int, meta: Mapping[str, Any]) -> None:
        """Fold in one successful call."""
        start, end = float(meta["t_start"]), float(meta["t_end"])
        self.batches += 1
        self.samples += int(meta["n"])
        self.busy_s += float(meta.get("busy_s", end - start))
        self.cpu_s += float(meta.get("cpu_s", 0.0))
        self.bytes_in += int(meta.get("bytes_in", 0))
        self.bytes_out += int(meta.get("bytes_out", 0))
        self.wire_bytes += int(meta.get("wire_bytes", 0))
        self.first_start = min(self.first_start, start)
        self.last_end = max(self.last_end, end)
        self.service.add(end - start)
        if meta.get("rss"):
            self.rss[replica] = int(meta["rss"])

    def ensure(self, replicas: int) -> None:
        """Make room for ``replicas`` replicas (an autoscaling pool grew)."""
        while self.replicas < replicas:
            self.rss.append(0)
            self.placement.append({})
            self.replicas += 1

    def place(self, replica: int, where: Mapping[str, Any]) -> None:
        """Record where a replica runs (again after a restart) and its RSS at that point."""
        self.placement[replica] = {k: where.get(k) for k in ("node_id", "ip", "pid")}
        if where.get("codec_device"):  # a codec stage's device, and why, where it fell back
            self.placement[replica]["codec_device"] = where["codec_device"]
        if where.get("rss"):
            self.rss[replica] = int(where["rss"])

    def summary(self) -> dict[str, Any]:
        """The per-stage block of the report (driver-side flow figures are added by the executor)."""
        span = self.last_end - self.first_start if self.batches else 0.0
        lat = self.service.summary_ms()
        return {
            "replicas": self.replicas,
            "batches": self.batches,
            "samples": self.samples,
            "throughput_sps": self.samples / span if span > 0 else 0.0,
            "latency_p50_ms": lat["p50_ms"],
            "latency_p99_ms": lat["p99_ms"],
            "busy_s": self.busy_s,
            "cpu_s": self.cpu_s,
            "mean_batch_size": self.samples / self.batches if self.batches else 0.0,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "wire_bytes": self.wire_bytes,
            "restarts": self.restarts,
            "replayed_batches": self.replayed_batches,
            "retries": self.retries,
            "lost_inputs": self.lost_inputs,
            "rss_mb": sum(self.rss) / 2**20,
            "placement": [{"replica": r, **p} for r, p in enumerate(self.placement)],
        }


class ReceiverStats:
    """Goodput measured where the batches arrive (the cloud side, after the link).

    Each batch contributes its arrival time (taken by the receiving stage on its own clock) and its size
    on the wire. Goodput is the bytes of every batch after the first divided by the time from the first
    arrival to the last: ``n`` arrivals bound ``n - 1`` intervals, which carry the last ``n - 1`` batches.
    """

    def __init__(self) -> None:
        self.batches = 0
        self.bytes = 0
        self.first_t = math.inf
        self.first_bytes = 0
        self.last_t = -math.inf

    def add(self, arrival_t: float, nbytes: int) -> None:
        """One batch arrived at ``arrival_t`` (seconds) carrying ``nbytes``."""
        self.batches += 1
        self.bytes += int(nbytes)
        if arrival_t < self.first_t:
            self.first_t, self.first_bytes = arrival_t, int(nbytes)
        self.last_t = max(self.last_t, arrival_t)

    def summary(self) -> dict[str, Any]:
        """``goodput_mbps`` and the window it was measured over (NaN with fewer than two arrivals)."""
        window = self.last_t - self.first_t if self.batches >= 2 else 0.0
        counted = self.bytes - self.first_bytes
        return {
            "goodput_mbps": counted * 8 / window / 1e6 if window > 0 else math.nan,
            "goodput_window_s": window,
            "goodput_window_batches": max(0, self.batches - 1),
            "goodput_bytes": counted if window > 0 else 0,
            "arrived_batches": self.batches,
            "arrived_bytes": self.bytes,
        }


class LinkStats:
    """The emulated link's own schedule, from the transport's per-batch records: what it booked, not
    what arrived (that is :class:`ReceiverStats`)."""

    def __init__(self, configured_mbps: float | None) -> None:
        self.configured_mbps = configured_mbps
        self.deliveries = 0
        self.payload_bytes = 0
        self.wire_bytes = 0
        self.retransmitted_bytes = 0
        self.busy_s = 0.0
        self.first_start = math.inf
        self.last_done = -math.inf
        self.corrupted_frames = 0
        self.reorder_gaps = 0

    def add(self, meta: Mapping[str, Any]) -> None:
        """Fold in one transport call's record."""
        self.deliveries += 1
        self.payload_bytes += int(meta.get("bytes_in", 0))
        self.wire_bytes += int(meta.get("wire_bytes", meta.get("bytes_in", 0)))
        self.retransmitted_bytes += int(meta.get("retransmitted_bytes", 0))
        self.corrupted_frames += int(meta.get("corrupted_frames", 0))
        self.reorder_gaps += int(meta.get("reorder_gaps", 0))
        if "tx_start_planned" in meta:
            start, done = float(meta["tx_start_planned"]), float(meta["tx_done_planned"])
            self.busy_s += done - start
            self.first_start = min(self.first_start, start)
            self.last_done = max(self.last_done, done)

    @classmethod
    def combined(cls, links: list[LinkStats]) -> LinkStats:
        """The fleet's links as one: rates and bytes add up, the span covers them all."""
        rates = [lk.configured_mbps for lk in links]
        out = cls(None if not rates or None in rates else float(sum(rates)))  # type: ignore[arg-type]
        for lk in links:
            for key in (
                "deliveries",
                "payload_bytes",
                "wire_bytes",
                "retransmitted_bytes",
                "busy_s",
                "corrupted_frames",
                "reorder_gaps",
            ):
                setattr(out, key, getattr(out, key) + getattr(lk, key))
            out.first_start = min(out.first_start, lk.first_start)
            out.last_done = max(out.last_done, lk.last_done)
        return out

    def summary(self) -> dict[str, Any]:
        """``scheduled_mbps`` (payload over the schedule's span) and ``utilization_scheduled``."""
        span = self.last_done - self.first_start if self.deliveries else 0.0
        scheduled = self.payload_bytes * 8 / span / 1e6 if span > 0 else None
        util = scheduled / self.configured_mbps if scheduled and self.configured_mbps else None
        return {
            "configured_mbps": self.configured_mbps,
            "scheduled_mbps": scheduled,
            "utilization_scheduled": util,
            "span_s": span,
            "busy_s": self.busy_s,
            "deliveries": self.deliveries,
            "payload_bytes": self.payload_bytes,
            "wire_bytes": self.wire_bytes,
            "retransmitted_bytes": self.retransmitted_bytes,
            "corrupted_frames": self.corrupted_frames,
            "reorder_gaps": self.reorder_gaps,
        }


class Timeline:
    """Samples of a few series over the run, in bounded memory: once ``capacity`` points are held,
    every other one is dropped and the sampling period doubles. :meth:`resample` gives a fixed number of
    points, so the report has the same size for a short and a long run. Series named in ``steps``
    (a chosen setting, say) hold their last value between points instead of being interpolated."""

    def __init__(
        self, period_s: float = 0.25, capacity: int = 256, steps: Sequence[str] = ()
    ) -> None:
        self.period_s = period_s
        self.capacity = capacity
        self.steps = frozenset(steps)
        self.points: list[dict[str, float]] = []
        self._next_t = 0.0

    def due(self, t: float) -> bool:
        """True when a new point should be recorded at time ``t`` (seconds since the start)."""
        return t >= self._next_t

    def record(self, t: float, values: Mapping[str, float]) -> None:
        """Add a point at ``t``; decimates when full."""
        self.points.append({"t": t, **values})
        if len(self.points) >= self.capacity:
            self.points = self.points[::2]
            self.period_s *= 2
        self._next_t = t + self.period_s

    def resample(self, n: int = 40) -> dict[str, list[float | None]]:
        """``n`` points evenly spaced over the recorded span, each series linearly interpolated
        (or held, for ``steps``)."""
        if not self.points:
            return {}
        keys = [k for k in self.points[0] if k != "t"]
        t0, t1 = self.points[0]["t"], self.points[-1]["t"]
        grid = [t0 + (t1 - t0) * i / (n - 1) for i in range(n)] if n > 1 else [t1]
        out: dict[str, list[float | None]] = {"t": [_sig(t) for t in grid]}
        for k in keys:
            out[k] = [_sig(_interp(self.points, k, t, k in self.steps)) for t in grid]
        return out


def _interp(
    points: list[dict[str, float]], key: str, t: float, hold: bool = False
) -> float | None:
    lo = 0
    while lo + 1 < len(points) and points[lo + 1]["t"] <= t:
        lo += 1
    a = points[lo]
    b = points[min(lo + 1, len(points) - 1)]
    va, vb = a.get(key), b.get(key)
    if hold:
        return va
    if va is None or vb is None:
        return va if vb is None else vb
    if b["t"] <= a["t"]:
        return va
    w = (t - a["t"]) / (b["t"] - a["t"])
    return va + (vb - va) * min(1.0, max(0.0, w))


def _sig(v: float | None, digits: int = 4) -> float | None:
    """Round to ``digits`` significant digits (keeps the JSON short and of stable size)."""
    if v is None or not math.isfinite(v) or v == 0:
        return v
    return round(v, digits - 1 - int(math.floor(math.log10(abs(v)))))


def object_store_mb() -> float | None:
    """Used object-store memory in MiB, from the cluster's resource view (best effort)."""
    try:
        import ray

        total = ray.cluster_resources().get("object_store_memory")
        free = ray.available_resources().get("object_store_memory")
        if total is None or free is None:
            return None
        return (total - free) / 2**20
    except Exception:  # pragma: no cover - best effort
        return None


class StageExporter:
    """One stage replica's counters in ``ray.util.metrics``: samples, per-batch latency, batch size."""

    FLUSH_S = 1.0

    def __init__(self, stage: str, replica: int = 0) -> None:
        self._metrics: tuple[Any, Any, Any] | None = None
        self._samples, self._latencies, self._last = 0, [], 0
        self._flushed = -math.inf
        try:
            import ray

            if not ray.is_initialized():
                return
            from ray.util.metrics import Counter, Gauge, Histogram

            keys = ("stage", "replica")
            counter = Counter("splitstream_samples", "samples processed by a stage", tag_keys=keys)
            hist = Histogram(
                "splitstream_batch_latency_ms",
                "per-batch service time of a stage",
                boundaries=LATENCY_BOUNDARIES_MS,
                tag_keys=keys,
            )
            gauge = Gauge(
                "splitstream_batch_size", "size of the last batch of a stage", tag_keys=keys
            )
            for m in (counter, hist, gauge):
                m.set_default_tags({"stage": stage, "replica": str(replica)})
            self._metrics = (counter, hist, gauge)
        except Exception:  # pragma: no cover - metrics unavailable
            self._metrics = None

    def observe(self, samples: int, seconds: float) -> None:
        """Count one batch; the counts reach Ray at most every ``FLUSH_S`` (each export costs a call
        into Ray's metrics agent). Never raises: metrics must not break the stream."""
        if self._metrics is None:
            return
        self._samples += samples
        self._latencies.append(seconds * 1000.0)
        self._last = samples
        now = time.monotonic()
        if now - self._flushed < self.FLUSH_S:
            return
        self._flushed = now
        counter, hist, gauge = self._metrics
        try:
            counter.inc(self._samples)
            for ms in self._latencies:
                hist.observe(ms)
            gauge.set(self._last)
        except Exception:  # pragma: no cover
            self._metrics = None
        self._samples, self._latencies = 0, []


class DriverExporter:
    """The driver's gauges and counters in ``ray.util.metrics``: queue depth and in-flight batches per
    stage; restarts, replayed batches and rejected samples."""

    def __init__(self) -> None:
        self._m: dict[str, Any] | None = None
        try:
            import ray

            if not ray.is_initialized():
                return
            from ray.util.metrics import Counter, Gauge

            k = ("stage",)
            self._m = {
                "queue": Gauge(
                    "splitstream_queue_depth", "batches queued before a stage", tag_keys=k
                ),
                "inflight": Gauge(
                    "splitstream_inflight_batches", "batches in flight into a stage", tag_keys=k
                ),
                "restarts": Counter("splitstream_restarts", "stage actor restarts", tag_keys=k),
                "replays": Counter("splitstream_replayed_batches", "batches replayed", tag_keys=k),
                "rejected": Counter("splitstream_rejected_samples", "samples rejected"),
            }
        except Exception:  # pragma: no cover - metrics unavailable
            self._m = None

    def flow(self, depths: Mapping[str, int], inflight: Mapping[str, int]) -> None:
        """Set the queue-depth and in-flight gauges of every stage."""
        if self._m is None:
            return
        try:
            for name, d in depths.items():
                self._m["queue"].set(d, tags={"stage": name})
                self._m["inflight"].set(inflight.get(name, 0), tags={"stage": name})
        except Exception:  # pragma: no cover
            self._m = None

    def count(self, what: str, stage: str | None = None, n: int = 1) -> None:
        """Increment ``restarts``, ``replays`` (per stage) or ``rejected``."""
        if self._m is None or n <= 0:
            return
        try:
            tags = {"stage": stage} if stage is not None else None
            self._m[what].inc(n, tags=tags)
        except Exception:  # pragma: no cover
            self._m = None
