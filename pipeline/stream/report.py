"""The run report: one JSON-able dict of constant size, its plain-text table and its PNG summary.

Every figure says where it was measured: ``goodput_mbps`` at the receiver (the decoder's arrival stamps
and the batches' wire bytes), latencies at the sink, per-stage figures in the stage's own calls; the
emulated link's own schedule is reported apart, under ``link`` (``scheduled_mbps``,
``utilization_scheduled``, and the configured ``outages`` per edge).
"""

from __future__ import annotations

import math
from collections import Counter
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


def _fmt(v: Any, nd: int = 1) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def node_label(where: Mapping[str, Any]) -> str:
    """A process's node as ``IP/abcdef`` (the first 6 hex digits of the Ray node id), so nodes that
    share one host stay apart; either part alone when the other is missing, ``?`` when both are."""
    ip, node_id = where.get("ip"), where.get("node_id")
    short = str(node_id)[:6] if node_id else None
    return "/".join(str(x) for x in (ip, short) if x) or "?"


STOP_REASONS = {
    "end": "the source ended",
    "signal": "a signal",
    "duration": "the --duration limit",
    "samples": "the samples limit",
}


def _outage_rows(link: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The configured link outages, one row per edge that has any."""
    rows = []
    for o in link.get("outages") or []:
        if o["configured"]:
            windows = ", ".join(f"{a:g} s for {d:g} s" for a, d in o["configured"])
            rows.append((f"edge {o['edge']} link outages (emulator)", windows))
    return rows


def outage_spans(report: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The configured link outages on the timeline's clock, every edge's (empty when none, or when
    the report does not place them)."""
    spans = []
    for o in (report.get("link") or {}).get("outages") or []:
        spans += [(float(a), float(b)) for a, b in o.get("t") or []]
    return spans


def _mark_outages(axes: Any, report: Mapping[str, Any]) -> list[Any]:
    """Shade the configured link outages on time axes; returns the one labelled shade (on the
    first axes), for a legend."""
    labelled = []
    for i, a in enumerate(axes):
        for j, (t0, t1) in enumerate(outage_spans(report)):
            label = "link outage (configured)" if i == 0 and j == 0 else None
            span = a.axvspan(t0, t1, color="grey", alpha=0.2, lw=0, label=label)
            if label:
                labelled.append(span)
    return labelled


def _output_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """Table rows for the results output and why the stream stopped, where the report has them."""
    rows: list[tuple[str, Any]] = []
    out = report.get("output")
    if isinstance(out, Mapping):
        counts = ", ".join(
            f"{out[k]} {k}" for k in ("delivered", "rejected", "dropped", "resumed") if k in out
        )
        where = f"{out['path']} ({out.get('format')})" if out.get("path") else "no file"
        rows.append(("output rows", f"{out.get('rows')} ({counts}) -> {where}"))
    stop = report.get("stop")
    if isinstance(stop, Mapping):
        reason = STOP_REASONS.get(str(stop.get("reason")), str(stop.get("reason")))
        if stop.get("signal"):
            reason += f" ({stop['signal']})"
        rows.append(("stopped by", reason))
    return rows


def format_report(report: dict[str, Any]) -> str:
    """A readable plain-text table of the end-to-end numbers and the per-stage metrics."""
    lines = ["splitstream run report", "=" * 86]
    if report.get("status") == "failed":
        err = report.get("error") or {}
        lines += [
            f"FAILED ({err.get('kind')}, stage {err.get('stage')}): {err.get('message')}",
            "-" * 86,
        ]
    model = report.get("model") or {}
    label = f"{model.get('name')} @ {model.get('split')}"
    if model.get("trained") is False:
        label += " (UNTRAINED weights)"
    elif model.get("weights_source"):
        label += f" ({model['weights_source']})"
    label += simulated_device_label(model)
    codec = (report.get("config") or {}).get("codec") or {}
    link = report.get("link") or {}
    sched = link.get("scheduled_mbps")
    rows = [
        ("model", label),
        ("codec", f"{codec.get('kind')} {codec.get('bits')}-bit" if codec else None),
        (
            "delivered / rejected / lost",
            f"{report.get('delivered')} / {report.get('rejected')} / {report.get('lost')}"
            f" of {report.get('samples')}",
        ),
        (
            "duplicated (dropped repeats)",
            f"{report.get('duplicated')} ({report.get('duplicates_dropped')})",
        ),
        (
            "restarts / replayed batches",
            f"{report.get('restarts')} / {report.get('replayed_batches')}",
        ),
        ("throughput (samples/s)", report.get("throughput_sps")),
        (
            "latency p50 / p99 (ms)",
            f"{_fmt(report.get('latency_p50_ms'))} / {_fmt(report.get('latency_p99_ms'))}",
        ),
        ("raw -> wire bytes", f"{report.get('raw_bytes')} -> {report.get('wire_bytes')}"),
        ("compression ratio", _fmt(report.get("compression_ratio"), 2)),
        ("goodput at receiver (Mbit/s)", _fmt(report.get("goodput_mbps"), 3)),
        ("link utilization (measured)", _fmt(report.get("link_utilization"), 3)),
        ("link schedule (Mbit/s, emulator)", _fmt(sched, 3) if sched else "n/a"),
        *_outage_rows(link),
        ("peak in-flight batches", report.get("peak_inflight_batches")),
        *_pool_rows(report),
    ]
    if report.get("slo_met_ratio") is not None:
        slo = ((report.get("rate") or {}).get("latency_slo_ms")) or 0
        rows.append((f"within the {slo:g} ms SLO", _fmt(100 * report["slo_met_ratio"], 2) + " %"))
    if report.get("settings_histogram"):
        hist = report["settings_histogram"]
        rows.append(("settings (samples)", ", ".join(f"{k}: {v}" for k, v in hist.items())))
    fid = report.get("fidelity") or {}
    if fid.get("accuracy") is not None:
        rows.append(("accuracy (vs labels)", _fmt(100 * fid["accuracy"], 2) + " %"))
    n = fid.get("reference_samples")
    if fid.get("agreement") is not None:
        rows.append((f"top-1 agreement (n={n})", _fmt(100 * fid["agreement"], 2) + " %"))
    if fid.get("cosine") is not None:
        cos = f"{fid['cosine']:.6f} / {fid['cosine_min']:.6f}"
        rows.append((f"embedding cosine mean / min (n={n})", cos))
    if fid.get("next_token_agreement") is not None:
        agree = _fmt(100 * fid["next_token_agreement"], 2) + " %"
        rows.append((f"next-token agreement ({fid['next_tokens']} tokens)", agree))
    if fid.get("loglik_delta") is not None:
        delta = f"{fid['loglik_delta']:+.5f} / {fid['loglik_delta_min']:+.5f}"
        rows.append(("log-lik. delta mean / worst (nats/token)", delta))
    if report.get("text"):
        t = report["text"]
        share = _fmt(100 * t["padding_skipped"], 1)
        rows.append(
            (
                "tokens coded / positions",
                f"{t['tokens']} / {t['positions']} ({share} % padding skipped)",
            )
        )
    mem = report.get("memory") or {}
    if mem:
        rows.append(
            (
                "RSS driver / sink, last (MiB)",
                f"{_fmt(mem.get('driver_rss_mb_last'))} / {_fmt(mem.get('sink_rss_mb_last'))}",
            )
        )
    rows += _output_rows(report)
    if report.get("reject_errors"):
        rows.append(("first reject error", report["reject_errors"][0][:60]))
    width = max(len(k) for k, _ in rows)
    lines += [f"{k.ljust(width)}  {_fmt(v)}" for k, v in rows]
    lines.append("-" * 86)
    head = (
        f"{'stage':<10}{'sps':>9}{'p50ms':>9}{'p99ms':>9}{'busy_s':>8}{'bp_s':>7}{'q_mean':>8}"
        f"{'q_max':>6}{'batch':>7}{'rst':>4}{'rply':>5}  node"
    )
    lines.append(head)
    for name, st in (report.get("stages") or {}).items():
        nodes = ",".join(sorted({node_label(p) for p in st.get("placement", [])}))
        lines.append(
            f"{name:<10}{_fmt(st.get('throughput_sps')):>9}{_fmt(st.get('latency_p50_ms'), 2):>9}"
            f"{_fmt(st.get('latency_p99_ms'), 2):>9}{_fmt(st.get('busy_s'), 2):>8}"
            f"{_fmt(st.get('backpressured_s', 0.0), 2):>7}{_fmt(st.get('queue_depth_mean', 0.0), 2):>8}"
            f"{_fmt(st.get('queue_depth_max', 0)):>6}{_fmt(st.get('mean_batch_size'), 1):>7}"
            f"{st.get('restarts', 0):>4}{st.get('replayed_batches', 0):>5}  {nodes}"
        )
    return "\n".join(lines)


def simulated_device_label(model: dict[str, Any]) -> str:
    """`` [SIMULATED accelerator: tail 3 ms/sample]`` when the report's figures were measured with
    ``model.head_device_ms`` / ``tail_device_ms`` (else empty)."""
    sim = model.get("simulated_device_ms") or {}
    parts = [f"{side} {ms:g} ms/sample" for side, ms in sim.items() if ms is not None]
    return f" [SIMULATED accelerator: {', '.join(parts)}]" if parts else ""


def run_title(report: dict[str, Any]) -> str:
    """One line naming what ran: model @ split (trained or not), codec, link, edges and replicas,
    samples (from the report's ``model`` and ``config``; missing parts are left out)."""
    cfg = report.get("config") or {}
    model = report.get("model") or {}
    parts = []
    if model:
        trained = {True: "trained", False: "UNTRAINED"}.get(model.get("trained"))
        parts.append(
            f"{model.get('name')} @ {model.get('split')}"
            + (f" ({trained} weights)" if trained else "")
            + simulated_device_label(model)
        )
    codec = cfg.get("codec") or {}
    rate = cfg.get("rate") or {}
    if rate.get("mode") == "adaptive":
        slo = rate.get("latency_slo_ms")
        parts.append(
            f"codec {codec.get('kind')} adaptive, bits {rate.get('bits')}"
            + (f", SLO {slo:g} ms" if slo else "")
        )
    elif codec.get("kind") in ("fp32", "fp16"):
        parts.append(f"codec {codec['kind']} (no quantization)")
    elif codec.get("kind") == "zstd":
        parts.append(f"codec zstd level {codec.get('level')}")
    elif codec:
        extra = "".join(f", {k} {codec[k]}" for k in ("axis", "clip") if codec.get(k) is not None)
        parts.append(
            f"codec {codec.get('kind')} {codec.get('bits')}-bit level {codec.get('level')}{extra}"
        )
    parts.append(_link_title(report))
    fleet = cfg.get("fleet") or {}
    reps = cfg.get("replicas") or {}
    if fleet or reps:
        edges = fleet.get("edges", 1)
        cloud = "/".join(_pool(reps.get(k, 1)) for k in ("decoder", "tail"))
        parts.append(f"{edges} edge{'s' if edges != 1 else ''}, decoder/tail replicas {cloud}")
    if report.get("samples") is not None:
        parts.append(f"{report['samples']} samples")
    return " | ".join(p for p in parts if p)


def _pool(size: Any) -> str:
    """A pool's size as configured: ``2``, or ``1-4`` for an autoscaling one."""
    return f"{size['min']}-{size['max']}" if isinstance(size, dict) else str(size)


def _link_title(report: dict[str, Any]) -> str:
    """The link part of :func:`run_title`: real, or the emulated rate (profile, trace) per edge."""
    link_cfg = (report.get("config") or {}).get("link") or {}
    if (report.get("link") or {}).get("mode", link_cfg.get("mode")) == "real":
        return "link: real network"
    rates = [e.get("configured_mbps") for e in report.get("edges") or []]
    if not rates:
        rates = [(report.get("link") or {}).get("configured_mbps")]
    name = link_cfg.get("trace") or link_cfg.get("profile")
    if all(r is None for r in rates):
        speed = "unconstrained"
    else:
        speed = "/".join("unconstrained" if r is None else f"{r:g}" for r in rates) + " Mbit/s"
        if link_cfg.get("trace"):
            speed = "trace mean " + speed
    return f"link {name} ({speed})" if name else f"link {speed}"


FIDELITY_BARS = (
    ("accuracy", "accuracy vs labels", "labelled_samples"),
    ("agreement", "top-1 agreement w/ uncompressed", "reference_samples"),
    ("next_token_agreement", "next-token agreement", "next_tokens"),
    ("cosine", "embedding cosine (mean)", "reference_samples"),
    ("cosine_min", "embedding cosine (min)", "reference_samples"),
)
"""The report's fidelity figures shown as bars: key, label and the key of the count behind it."""


FIDELITY_SERIES = (
    ("accuracy", "accuracy vs labels", "tab:green"),
    ("agreement", "top-1 agreement w/ uncompressed", "tab:cyan"),
)
"""Fidelity series of the timeline (cumulative over the samples settled so far)."""


def _plot_fidelity(ax: Any, report: dict[str, Any]) -> None:
    """Accuracy and top-1 agreement over time, as the timeline has them (cumulative so far); other
    fidelity figures (a text model's) as labelled bars of their final values."""
    timeline = report.get("timeline") or {}
    t = timeline.get("t") or []
    series = [
        (key, label, color, [v if isinstance(v, int | float) else math.nan for v in timeline[key]])
        for key, label, color in FIDELITY_SERIES
        if any(isinstance(v, int | float) for v in timeline.get(key) or [])
    ]
    if series:
        fid = report.get("fidelity") or {}
        for key, label, color, ys in series:
            final = fid.get(key)
            tail = f" (final {final:.4f})" if isinstance(final, int | float) else ""
            ax.plot(t, ys, color=color, marker=".", label=f"{label}{tail}")
        ax.set_title("fidelity over time (cumulative)")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("fraction")
        lows = [v for *_, ys in series for v in ys if math.isfinite(v)]
        ax.set_ylim(min(0.9, *lows) - 0.01, 1.005)
        ax.legend(fontsize=7, loc="lower left")
        return
    _plot_fidelity_bars(ax, report)


def _plot_fidelity_bars(ax: Any, report: dict[str, Any]) -> None:
    """The final fidelity figures as labelled horizontal bars."""
    fid = report.get("fidelity") or {}
    bars = [
        (f"{label} (n={fid.get(count)})", fid[key])
        for key, label, count in FIDELITY_BARS
        if fid.get(key) is not None
    ]
    ax.set_title("fidelity: the run's final figures")
    if not bars:
        ax.text(0.5, 0.5, "no fidelity measured\n(no labels, fidelity.reference_samples = 0)",
                ha="center", va="center", transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return
    values = [b[1] for b in bars]
    ys = range(len(bars))
    ax.barh(list(ys), values, color="tab:cyan", height=0.6)
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlim(min(0.0, *values), 1.0)
    for y, (label, v) in zip(ys, bars, strict=True):  # labels on the bars keep the panel wide
        ax.text(0.02, y, f"{label}: {v:.4f}", va="center", fontsize=9)
    xlabel = "fraction (1 = same as uncompressed / all correct)"
    if fid.get("loglik_delta") is not None:
        xlabel += (f"\nlog-lik. delta {fid['loglik_delta']:+.5f} nats/token "
                   f"(worst sample {fid['loglik_delta_min']:+.5f})")  # fmt: skip
    ax.set_xlabel(xlabel)


def _pool_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """One row per autoscaling cloud pool: its bounds, peak and final size, and its moves."""
    rows = []
    for name, p in (report.get("pools") or {}).items():
        moves = Counter(e["event"] for e in p.get("events", []))
        what = ", ".join(f"{v} {k}" for k, v in moves.items()) or "no moves"
        rows.append((f"pool '{name}' replicas", f"{p['min']}-{p['max']}: peak {p['peak']}, "
                     f"final {p['final']} ({what})"))  # fmt: skip
    return rows


def _plot_replicas(ax: Any, t: list[float], tl: dict[str, Any]) -> list[Any]:
    """The autoscaling pools' serving replicas over time, as steps on a right-hand axis."""
    keys = [k for k in tl if k == "replicas" or k.startswith("replicas_")]
    if not keys:
        return []
    right, lines = ax.twinx(), []
    for k in keys:
        label = "cloud replicas serving" + ("" if k == "replicas" else f" ({k[9:]})")
        lines += right.step(
            t, [v or 0 for v in tl[k]], where="post", color="tab:green", label=label
        )
    right.set_ylabel("replicas")
    right.set_ylim(bottom=0)
    right.legend(fontsize=7, loc="upper right")
    return lines


def _plot_latency(ax: Any, report: dict[str, Any], t: list[float], lat: list[Any]) -> None:
    """End-to-end latency over time (the worst delivered since the previous point) against the run's
    p50 / p99 and the SLO, if one was set."""
    worst = [v if isinstance(v, int | float) and v > 0 else math.nan for v in lat]  # 0: none came
    ax.plot(t, worst, color="tab:red", marker=".", label="worst delivered since the last point")
    for key, label, style in (
        ("latency_p50_ms", "p50 (run)", ":"),
        ("latency_p99_ms", "p99 (run)", "--"),
    ):
        v = report.get(key)
        if isinstance(v, int | float) and math.isfinite(v):
            ax.axhline(v, color="grey", ls=style, lw=1, label=f"{label} {v:.0f} ms")
    slo = (report.get("rate") or {}).get("latency_slo_ms")
    if slo:
        ax.axhline(slo, color="black", ls="-.", lw=1, label=f"SLO {slo:g} ms")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    ax.legend(fontsize=7, loc="upper left")


def plot_report(report: dict[str, Any], path: str) -> str:
    """Write a 3x2 PNG under a title naming the model, codec, link, fleet and samples: stage
    throughput, stage latency p50/p99, delivery and memory over time, batch sizes, end-to-end latency
    over time, and the run's fidelity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = report.get("stages") or {}
    names = list(stages)
    fig, ax = plt.subplots(3, 2, figsize=(12, 10.5))
    ax[0, 0].bar(names, [stages[n].get("throughput_sps", 0.0) for n in names], color="tab:blue")
    ax[0, 0].set_title("stage throughput over its active span (samples/s)")
    xs = range(len(names))
    p50 = [stages[n].get("latency_p50_ms", math.nan) for n in names]
    p99 = [stages[n].get("latency_p99_ms", math.nan) for n in names]
    ax[0, 1].bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
    ax[0, 1].bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
    ax[0, 1].set_xticks(list(xs), names)
    ax[0, 1].set_yscale("log")
    ax[0, 1].set_title("per-batch service latency of each stage (ms)")
    ax[0, 1].legend()
    for a in (ax[0, 0], ax[0, 1]):
        a.tick_params(axis="x", rotation=30)
    tl = report.get("timeline") or {}
    t = [v or 0.0 for v in tl.get("t") or []]
    if t:
        lines = ax[1, 0].plot(
            t, tl.get("settled", []), color="black", lw=2, label="samples settled"
        )
        ax[1, 0].set_ylabel("samples settled")
        ax[1, 0].set_xlabel("time (s)")
        ax2 = ax[1, 0].twinx()
        for key, label, style in (
            ("driver_rss_mb", "driver RSS", "--"),
            ("edge_rss_mb", "edge RSS", "--"),
            ("cloud_rss_mb", "cloud RSS", "--"),
            ("sink_rss_mb", "sink RSS", ":"),
        ):
            if tl.get(key):
                lines += ax2.plot(t, [v or 0.0 for v in tl[key]], label=label, linestyle=style)
        ax2.set_ylabel("RSS (MiB)")
        lines += _mark_outages([ax[1, 0]], report)
        ax[1, 0].legend(lines, [ln.get_label() for ln in lines], loc="lower right", fontsize=7)
    ax[1, 0].set_title("delivery and memory during the run")
    hist = (report.get("batch_sizes") or {}).get("histogram") or {}
    ax[1, 1].bar([str(k) for k in hist], list(hist.values()), color="tab:purple")
    ax[1, 1].set_xlabel("batch size (samples)")
    ax[1, 1].set_ylabel("batches")
    ax[1, 1].set_title("batch sizes (adaptive batcher)")
    ax[2, 0].set_title("end-to-end latency, source to sink, over time (and the cloud pool)")
    if t and tl.get("latency_ms"):
        _mark_outages([ax[2, 0]], report)
        _plot_latency(ax[2, 0], report, t, tl["latency_ms"])
        _plot_replicas(ax[2, 0], t, tl)
    else:
        ax[2, 0].text(0.5, 0.5, "no latency timeline in this report", ha="center", va="center",
                      transform=ax[2, 0].transAxes)  # fmt: skip
    _plot_fidelity(ax[2, 1], report)
    status = "" if report.get("status") != "failed" else "FAILED: "
    fig.suptitle(
        f"{run_title(report)}\n{status}{report.get('delivered')} delivered, "
        f"{report.get('rejected')} rejected, {_fmt(report.get('throughput_sps'))} samples/s, "
        f"ratio {_fmt(report.get('compression_ratio'), 2)}, goodput "
        f"{_fmt(report.get('goodput_mbps'), 2)} Mbit/s at the receiver",
        fontsize=10,
    )
    return _save(fig, path)


def _save(fig: Any, path: str) -> str:
    """Lay out, write and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_rate_timeline(report: dict[str, Any], path: str, link: Any = None) -> str:
    """Write the rate controller's timeline as a PNG: the link's rate (measured at the receiver, and
    the controller's estimate; ``link`` optionally overlays the emulator's configured schedule as
    ``(t_s, mbps)``), the chosen bits, the backlog on the link, and latency against the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = report.get("timeline") or {}
    t = [v or 0.0 for v in tl.get("t", [])]
    slo = (report.get("rate") or {}).get("latency_slo_ms")
    fig, ax = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    arrived = tl.get("arrived_mb", [])
    measured = [  # Mbit/s between consecutive points, from the MiB arrived by each
        (arrived[i + 1] - arrived[i]) * 8 * 2**20 / 1e6 / (t[i + 1] - t[i])
        if t[i + 1] > t[i] and arrived[i + 1] is not None and arrived[i] is not None
        else 0.0
        for i in range(min(len(t), len(arrived)) - 1)
    ]
    ax[0].step(t[1:], measured, where="post", label="goodput at the receiver")
    ax[0].plot(t, [v or 0.0 for v in tl.get("rate_estimate_mbps", [])], label="controller estimate")
    if link is not None:
        ax[0].step(
            link[0],
            link[1],
            where="post",
            color="grey",
            alpha=0.5,
            label="link (emulator schedule)",
        )
    ax[0].set_ylabel("Mbit/s")
    ax[0].legend(fontsize=7, loc="upper right")
    ax[1].step(t, [v or 0.0 for v in tl.get("bits", [])], where="post", color="tab:purple")
    ax[1].set_ylabel("bits chosen")
    ax[2].plot(t, [v or 0.0 for v in tl.get("backlog_kb", [])], color="tab:orange")
    ax[2].set_ylabel("backlog on the link (kB)")
    ax[3].plot(
        t, [v or 0.0 for v in tl.get("latency_ms", [])], color="tab:red", label="worst latency"
    )
    if slo:
        ax[3].axhline(slo, color="black", ls="--", lw=1, label=f"SLO {slo:g} ms")
    ax[3].set_ylabel("latency (ms)")
    ax[3].set_xlabel("time (s)")
    _mark_outages(ax[::-1], report)  # labelled in the latency panel's legend
    ax[3].legend(fontsize=7, loc="upper right")
    for a in ax:
        a.grid(alpha=0.3)
    ratio = report.get("slo_met_ratio")
    agree = (report.get("fidelity") or {}).get("agreement")
    fig.suptitle(
        f"rate control: {_fmt(100 * ratio, 1) if ratio is not None else 'n/a'} % within the SLO, "
        f"agreement {_fmt(agree, 4) if agree is not None else 'n/a'}"
    )
    return _save(fig, path)
