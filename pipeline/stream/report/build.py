"""The report dict: the executor's aggregates assembled into one JSON-able dict whose size does not
depend on the run's length, with one entry per edge of the fleet."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pipeline.stream.config import PipelineConfig, config_to_dict, edge_link
from pipeline.stream.ledger import (
    REJECT_ERRORS_KEPT,
    REJECTED_IDS_KEPT,
    UNSETTLED_RANGES_KEPT,
    DeliveryLedger,
    TextFidelity,
)
from pipeline.stream.metrics import LatencySketch, LinkStats, ReceiverStats


def _ledgers(ledgers: list[DeliveryLedger]) -> dict[str, Any]:
    """The edges' ledgers as one: counts add up, id lists and error texts keep their bounds."""
    parts = [led.summary() for led in ledgers]
    out: dict[str, Any] = {
        k: sum(p[k] for p in parts)
        for k in ("delivered", "rejected", "lost", "duplicated", "duplicates_dropped", "unexpected")
    }
    ids = [i for p in parts for i in p["rejected_ids"]]
    out["rejected_ids"] = ids[:REJECTED_IDS_KEPT]
    out["rejected_ids_truncated"] = out["rejected"] > len(out["rejected_ids"])
    gaps = [g for led in ledgers for g in led.unsettled_ranges()]
    out["unsettled_ids"] = gaps[:UNSETTLED_RANGES_KEPT]
    errors: list[str] = []
    for p in parts:
        errors += [e for e in p["reject_errors"] if e not in errors]
    out["reject_errors"] = errors[:REJECT_ERRORS_KEPT]
    labelled = sum(led.labelled for led in ledgers)
    checked = sum(led.agree_checked for led in ledgers)
    out["fidelity"] = {
        "accuracy": sum(led.correct for led in ledgers) / labelled if labelled else None,
        "labelled_samples": labelled,
        "agreement": sum(led.agree for led in ledgers) / checked if checked else None,
        "reference_samples": sum(led.reference for led in ledgers),
        **TextFidelity.merged(led.text for led in ledgers).summary(),
    }
    return out


def edge_summary(
    index: int,
    ledger: DeliveryLedger,
    receiver: ReceiverStats,
    link: LinkStats,
    where: Mapping[str, Any],
    restarts: int = 0,
) -> dict[str, Any]:
    """One edge of the fleet: its samples' fate, its goodput at the receiver, its link, its node
    and how often its own actors restarted."""
    led = ledger.summary()
    lat = ledger.latency.summary_ms()
    lk = link.summary()
    good = receiver.summary()["goodput_mbps"]
    return {
        "edge": index,
        "samples": ledger.samples,
        "first_id": ledger.first_id,
        "delivered": led["delivered"],
        "rejected": led["rejected"],
        "lost": led["lost"],
        "unsettled_ids": ledger.unsettled_ranges(),  # [first, last] id ranges of the lost
        "duplicated": led["duplicated"],
        "goodput_mbps": good,
        "link_utilization": good / lk["configured_mbps"]
        if lk["configured_mbps"] and good == good
        else None,
        "latency_p50_ms": lat["p50_ms"],
        "latency_p99_ms": lat["p99_ms"],
        "configured_mbps": lk["configured_mbps"],
        "scheduled_mbps": lk["scheduled_mbps"],
        "node": {k: where.get(k) for k in ("node_id", "ip", "pid")},
        "restarts": restarts,
    }


def link_outages(
    cfg: PipelineConfig,
    t0_wall: float | None = None,
    outages_wall: Mapping[int, Any] | None = None,
) -> list[dict[str, Any]] | None:
    """Each edge's configured outages (``link.outages``, or its ``fleet.links`` entry's):
    ``configured`` as ``[start_s, duration_s]`` after the link's first transmission, and ``t`` as
    ``[from_s, to_s]`` on the timeline's clock where the transport reported its windows
    (``outages_wall``: edge -> ``[start, end]`` on the wall clock) and the timeline's start on that
    clock is known (``t0_wall``). None when no link has any."""
    if cfg.link.mode != "emulated":
        return None
    out = []
    for e in range(cfg.fleet.edges):
        configured = [list(map(float, w)) for w in edge_link(cfg, e)[1].get("outages") or []]
        walls = (outages_wall or {}).get(e)
        t = None
        if configured and walls and t0_wall is not None:
            t = [[float(a) - t0_wall, float(b) - t0_wall] for a, b in walls]
        out.append({"edge": e, "configured": configured, "t": t})
    return out if any(o["configured"] for o in out) else None


def build_report(
    cfg: PipelineConfig,
    *,
    wall: float,
    ledgers: list[DeliveryLedger],
    latency: LatencySketch,
    restarts: int,
    replayed: int,
    receiver: ReceiverStats,
    links: list[LinkStats],
    stages: dict[str, dict[str, Any]],
    edges: list[dict[str, Any]],
    hops: dict[str, dict[str, int]],
    peak_total: int,
    batch_sizes: Mapping[int, int],
    memory: dict[str, float],
    timeline: dict[str, list[float | None]],
    error: dict[str, Any] | None,
    settings: Mapping[str, int] | None = None,
    rate: dict[str, Any] | None = None,
    tokens: tuple[int, int] = (0, 0),
    t0_wall: float | None = None,
    outages_wall: Mapping[int, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report from the executor's aggregates (its size does not depend on the run's
    length; the ``edges`` list has one entry per edge of the fleet). ``tokens``: a text stream's
    valid tokens coded and padded positions its heads produced (adds the ``text`` block).
    ``t0_wall`` (the timeline's start on the wall clock) and ``outages_wall`` (the transports'
    outage windows per edge) place configured link outages on the timeline (see
    :func:`link_outages`)."""
    led = _ledgers(ledgers)
    lat = latency.summary_ms()
    good = receiver.summary()
    enc, dec = stages["encoder"], stages["decoder"]
    arrived = dec["samples"]
    per_sample = good["arrived_bytes"] / arrived if arrived else math.nan
    delivered = led["delivered"]
    throughput = delivered / wall if wall > 0 else 0.0
    real = cfg.link.mode == "real"
    lk = LinkStats.combined(links).summary()
    outages = link_outages(cfg, t0_wall, outages_wall)
    if outages:  # the emulator's configured down time, per edge (not a measurement)
        lk["outages"] = outages
        edges = [
            {**ed, "outages": o["configured"], "outages_t": o["t"]}
            for ed, o in zip(edges, outages, strict=False)
        ]
    configured = None if real else lk["configured_mbps"]
    goodput = good["goodput_mbps"]
    sizes = sorted(batch_sizes.items())
    count = sum(c for _, c in sizes)
    within = sum(x.within_slo for x in ledgers)
    slo = cfg.rate.latency_slo_ms
    text = {}
    if tokens[1]:
        text = {"text": {"tokens": tokens[0], "positions": tokens[1],
                         "padding_skipped": 1.0 - tokens[0] / tokens[1]}}  # fmt: skip
    return {
        "status": "failed" if error else "completed",
        "error": error,
        "samples": sum(x.samples for x in ledgers),
        "delivered": delivered,
        "rejected": led["rejected"],
        "lost": led["lost"],
        "duplicated": led["duplicated"],
        "duplicates_dropped": led["duplicates_dropped"],
        "unexpected": led["unexpected"],
        "rejected_ids": led["rejected_ids"],
        "rejected_ids_truncated": led["rejected_ids_truncated"],
        "reject_errors": led["reject_errors"],
        # the ids a run that ended early never settled, as [first, last] ranges (bounded)
        "unsettled_ids": led["unsettled_ids"],
        "restarts": restarts,
        "replayed_batches": replayed,
        "elapsed_s": wall,
        "throughput_sps": throughput,
        "latency_p50_ms": lat["p50_ms"],
        "latency_p99_ms": lat["p99_ms"],
        "latency_max_ms": lat["max_ms"],
        # delivered samples whose end-to-end latency met rate.latency_slo_ms (None without one)
        "slo_met_ratio": within / delivered if slo is not None and delivered else None,
        "raw_bytes": enc["bytes_in"],
        "payload_bytes": enc["bytes_out"],
        "wire_bytes": stages["transport"]["bytes_in"],
        "compression_ratio": enc["bytes_in"] / enc["wire_bytes"] if enc["wire_bytes"] else math.nan,
        "wire_bytes_per_sample": per_sample,
        "goodput_mbps": goodput,
        "goodput_scope": "receiver",
        "goodput_window_s": good["goodput_window_s"],
        "goodput_window_batches": good["goodput_window_batches"],
        "goodput_bytes": good["goodput_bytes"],
        "payload_rate_mbps": throughput * per_sample * 8 / 1e6 if arrived else math.nan,
        "link_utilization": goodput / configured if configured and goodput == goodput else None,
        "link": {"mode": cfg.link.mode, **({} if real else lk)},
        "edges": edges,
        "peak_inflight_batches": max((h["peak"] for h in hops.values()), default=0),
        "peak_inflight_total": peak_total,
        "window": cfg.flow.window,
        "hops": hops,
        "batch_sizes": {
            "batches": count,
            "mean": sum(k * c for k, c in sizes) / count if count else 0.0,
            "min": sizes[0][0] if sizes else 0,
            "max": sizes[-1][0] if sizes else 0,
            "histogram": {str(k): c for k, c in sizes},
        },
        "stages": stages,
        "settings_histogram": dict(sorted((settings or {}).items())),
        "rate": rate or {"mode": cfg.rate.mode},
        "fidelity": led["fidelity"],
        "memory": memory,
        "timeline": timeline,
        "config": config_to_dict(cfg),
        **text,
    }
