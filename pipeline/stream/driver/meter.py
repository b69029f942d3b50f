"""Metering while the stream runs: the progress bar, each step's queue depth and busy, backpressured
or idle time, the timeline's points (flow, memory, fidelity, pool sizes), the exporter's gauges, and
the RSS after warm-up that memory growth is measured from."""

from __future__ import annotations

from typing import Any

from pipeline.stream.driver.state import CLOUD_STAGES, EDGE_STAGES, DriverState, RemoteCalls
from pipeline.stream.metrics import process_rss_bytes

WARM_FRACTION = 0.1
"""RSS growth is measured from the moment this fraction of the samples has settled ..."""

WARM_SAMPLES_ENDLESS = 2000
"""... or, for an endless source, this many samples."""


def rss_mb(state: DriverState, stages: tuple[str, ...]) -> float:
    """RSS of the processes hosting any of ``stages``, each process counted once (edges that share
    a process, ``fleet.edges_per_process``, have a replica record each)."""
    hosts = {
        (r.where.get("node_id"), r.pid) if r.pid else id(r): r
        for s in state.steps
        if set(s.stages) & set(stages)
        for r in s.replicas
    }
    return sum(r.rss for r in hosts.values()) / 2**20


class Meter:
    """Measures the run as it goes; ``total`` is the samples it will settle (None: unknown)."""

    def __init__(self, state: DriverState, calls: RemoteCalls) -> None:
        self.state = state
        self.calls = calls
        self.total: int | None = None
        self.bar: Any = None
        self._bar_n = 0

    def open_bar(self, total: int | None, show: bool) -> None:
        from tqdm import tqdm

        self.total = total
        self.bar = tqdm(total=total, desc="stream", unit="sample", disable=not show)
        self.bar.update(sum(e.ledger.resumed for e in self.state.edges))

    def progress(self) -> None:
        """Samples may have settled: move the bar; note the RSS once the run is warm."""
        st = self.state
        settled = st.settled()
        if settled > self._bar_n:
            self.bar.update(settled - self._bar_n)
            self._bar_n = settled
        warm = WARM_SAMPLES_ENDLESS if self.total is None else WARM_FRACTION * self.total
        if "driver_warm_mb" not in st.memory and settled >= warm:
            st.memory["driver_warm_mb"] = process_rss_bytes() / 2**20
            st.memory["sink_warm_mb"] = rss_mb(st, ("sink",))

    def account(self, now: float) -> None:
        """Each step's queue depth and state since the last call."""
        st = self.state
        for s in st.steps:
            queued = len(s.queue) + len(s.replay)
            s.q_area += queued * (now - s.t_last)
            s.t_last = now
            s.q_max = max(s.q_max, queued)
            if s.running:
                s.timer.set("busy")
            elif s.blocked:
                s.timer.set("backpressured")
            else:
                s.timer.set("idle")
        st.peak_total = max(st.peak_total, sum(h.in_flight for ed in st.edges for h in ed.hops))

    def sample(self, now: float, force: bool = False) -> None:
        """A timeline point when one is due (or ``force``), and the exporter's gauges."""
        st = self.state
        t = now - st.t_start
        if not force and not st.timeline.due(t):
            return
        values = self._flow_values() | {
            "settled": float(st.settled()),
            "arrived_mb": st.receiver.bytes / 2**20,
            "driver_rss_mb": process_rss_bytes() / 2**20,
            "sink_rss_mb": rss_mb(st, ("sink",)),
            "edge_rss_mb": rss_mb(st, EDGE_STAGES),
            "cloud_rss_mb": rss_mb(st, CLOUD_STAGES),
            "object_store_mb": self.calls.object_store_mb() or 0.0,
        }
        pools = {
            key: float(sum(r.state == "up" for r in s.replicas))  # serving, not starting
            for s in st.cloud
            if (key := st.pool_keys.get(s.name))
        }
        st.timeline.record(t, values | pools | self._fidelity_so_far())
        for k, v in values.items():
            st.memory[f"{k}_max"] = max(st.memory.get(f"{k}_max", 0.0), v)
            st.memory[f"{k}_last"] = v
        st.exporter.flow(
            {s.label.replace("'", ""): len(s.queue) for s in st.steps},
            {s.label.replace("'", ""): s.running for s in st.steps},
        )

    def _flow_values(self) -> dict[str, float]:
        """The link's side of the timeline: bits in use (the rate controllers' choice, mean over
        edges, or ``codec.bits``), the backlog on the links, the worst latency delivered since the
        last point, and (adaptive) the controllers' link-rate estimates (measured at the receiver)."""
        edges = self.state.edges
        ctls = [ed.rate for ed in edges if ed.rate is not None]
        latency = max(ed.recent_latency_s for ed in edges)
        for ed in edges:
            ed.recent_latency_s = 0.0
        bits = sum(c.setting.bits for c in ctls) / len(ctls) if ctls else self.state.cfg.codec.bits
        out = {
            "bits": float(bits),
            "backlog_kb": sum(ed.backlog_bytes for ed in edges) / 1e3,
            "latency_ms": latency * 1000.0,
            "inflight": sum(ed.inflight_limit for ed in edges) / len(edges),
            "aloft": float(sum(len(ed.aloft) for ed in edges)),
        }
        if ctls:
            rates = [c.rate_bps for c in ctls if c.rate_bps is not None]
            out["rate_estimate_mbps"] = sum(rates) * 8 / 1e6 if rates else 0.0
        return out

    def _fidelity_so_far(self) -> dict[str, float | None]:
        """Accuracy and top-1 agreement over the samples settled so far (None before any)."""
        led = [e.ledger for e in self.state.edges]
        labelled, checked = sum(x.labelled for x in led), sum(x.agree_checked for x in led)
        return {
            "accuracy": sum(x.correct for x in led) / labelled if labelled else None,
            "agreement": sum(x.agree for x in led) / checked if checked else None,
        }
