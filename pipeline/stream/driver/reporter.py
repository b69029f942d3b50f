"""The report's assembly from the driver's state: per logical stage, per hop, per edge, memory, rate
control, in-flight windows, I/O, autoscaling pools and the driver's own cost
(:func:`pipeline.stream.report.build_report` lays it out)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from pipeline.stream.driver.meter import rss_mb
from pipeline.stream.driver.state import STAGES, DriverState, EdgeState
from pipeline.stream.metrics import LatencySketch


@dataclass(eq=False)
class Reporter:
    """Builds the run's report (complete after the run; partial if it failed)."""

    state: DriverState

    def report(self) -> dict[str, Any]:
        from pipeline.stream.report import build_report, edge_summary

        st = self.state
        stages = {name: self._stage_summary(name) for name in STAGES}
        hops: dict[str, dict[str, int]] = {}
        for ed in st.edges:
            for s, h in zip(ed.chain[1:], ed.hops[1:], strict=True):
                d = hops.setdefault(s.name, {"peak": 0, "refused": 0})
                d["peak"] = max(d["peak"], h.peak)
                d["refused"] += h.refused
        err = None
        if st.error is not None:
            err = {"kind": st.error.kind, "stage": st.error.stage, "message": str(st.error)}
        edges = [
            edge_summary(
                e.index,
                e.ledger,
                e.receiver,
                e.link,
                e.chain[0].replicas[0].where,
                restarts=self._edge_restarts(e),
            )  # fmt: skip
            for e in st.edges
        ]
        return (
            build_report(
                st.cfg,
                wall=st.wall,
                ledgers=[e.ledger for e in st.edges],
                latency=LatencySketch.merged([e.ledger.latency for e in st.edges]),
                restarts=sum(r.restarts for r in st.replicas),
                replayed=sum(s.replayed for s in st.steps),
                receiver=st.receiver,
                links=[e.link for e in st.edges],
                stages=stages,
                edges=edges,
                hops=hops,
                peak_total=st.peak_total,
                batch_sizes=st.batch_sizes,
                memory=self._memory(),
                timeline=st.timeline.resample(40 if st.cfg.rate.latency_slo_ms is None else 120),
                error=err,
                settings=dict(st.settings),
                rate=self._rate_summary(),
                tokens=(st.tokens[0], st.tokens[1]),
                t0_wall=st.t_start_wall,
                outages_wall=st.link_outages,
            )
            | self._io_summary()
            | {"inflight": self._inflight_summary(), "t0_wall": st.t_start_wall}
            | {"stall_restarts": st.stall_restarts}
            | self._pools_summary()
            | {"driver": self._driver_summary()}
        )

    def _memory(self) -> dict[str, Any]:
        """RSS per node side (the peak of each side's processes summed, each process counted once)
        and the driver's and sink's growth after warm-up."""
        memory: dict[str, Any] = dict(self.state.memory)
        memory["edge_rss_mb"] = memory.get("edge_rss_mb_max")
        memory["cloud_rss_mb"] = memory.get("cloud_rss_mb_max")
        for side in ("driver", "sink"):
            warm, last = memory.get(f"{side}_warm_mb"), memory.get(f"{side}_rss_mb_last")
            growth = (last / warm - 1.0) if warm and last else math.nan
            memory[f"{side}_growth_after_warmup"] = growth
        return memory

    def _stage_summary(self, name: str) -> dict[str, Any]:
        st = self.state
        d = st.stats[name].summary()
        hosts = [s for s in st.steps if name in s.stages]
        wall = st.wall
        d["fused_with"] = [x for x in hosts[0].stages if x != name]
        d["queue_depth_mean"] = sum(s.q_area for s in hosts) / wall if wall > 0 else 0.0
        d["queue_depth_max"] = max(s.q_max for s in hosts)
        d["backpressured_s"] = sum(s.timer.totals.get("backpressured", 0.0) for s in hosts)
        d["idle_s"] = sum(s.timer.totals.get("idle", 0.0) for s in hosts)
        d["backpressure_ratio"] = d["backpressured_s"] / wall / len(hosts) if wall > 0 else 0.0
        d["rss_mb"] = rss_mb(st, (name,))
        return d

    def _driver_summary(self) -> dict[str, Any]:
        """What the driver process spent: CPU seconds (all its threads, Ray's included), its share
        of one core, remote calls handled per second, and its RSS, also per edge."""
        st = self.state
        cpu = time.process_time() - st.cpu_start
        wall = st.wall or (st.clock() - st.t_start)
        n = len(st.edges)
        return {
            "cpu_s": cpu,
            "cpu_share": cpu / wall if wall > 0 else None,
            "calls": st.calls,
            "calls_per_s": st.calls / wall if wall > 0 else None,
            "rss_mb": st.memory.get("driver_rss_mb_max"),
            "cpu_share_per_edge": cpu / wall / n if wall > 0 else None,
            "calls_per_s_per_edge": st.calls / wall / n if wall > 0 else None,
        }

    def _pools_summary(self) -> dict[str, Any]:
        """The report's ``pools``: each autoscaling cloud pool's bounds, sizes and moves."""
        cloud = self.state.cloud
        pools = {s.name: s.pool.summary(s.replicas) for s in cloud if s.pool is not None}
        return {"pools": pools} if pools else {}

    def _edge_restarts(self, ed: EdgeState) -> int:
        """Restarts of an edge's own actors (each counted once, however many steps it serves)."""
        own = {id(r): r for s in self.state.own(ed) for r in s.replicas}
        return sum(r.restarts for r in own.values())

    def _inflight_summary(self) -> dict[str, Any]:
        """``flow.inflight`` as set, and per edge the window it came to (auto: with the estimates)."""
        edges = [
            ed.window.summary() if ed.window is not None else {"size": ed.inflight}
            for ed in self.state.edges
        ]
        return {"setting": self.state.cfg.flow.inflight, "edges": edges}

    def _io_summary(self) -> dict[str, Any]:
        """The report's ``output`` (the rows written), ``stop`` (why reading ended) and ``resumed``
        (samples settled by earlier runs of a resumed stream)."""
        st = self.state
        out: dict[str, Any] = {"resumed": sum(e.ledger.resumed for e in st.edges)}
        out["dropped"] = sum(e.ledger.dropped for e in st.edges)
        out["dropped_ids"] = [i for e in st.edges for i in e.ledger.dropped_ids][:100]
        if st.results is not None:
            out["output"] = st.results.summary()
        finished = st.error is None and all(e.finished for e in st.edges)
        if st.stop is not None:
            out["stop"] = st.stop.summary(finished)
        else:
            out["stop"] = {"reason": "end" if finished else None, "signal": None}
        return out

    def _rate_summary(self) -> dict[str, Any]:
        st = self.state
        r = st.cfg.rate
        out: dict[str, Any] = {"mode": r.mode, "latency_slo_ms": r.latency_slo_ms}
        if r.mode == "fixed":
            return out
        if st.profile is not None:
            out["profile_source"] = st.profile.source
            out["profile"] = st.profile.to_dict()
        out["edges"] = [ed.rate.summary() for ed in st.edges if ed.rate is not None]
        return out
