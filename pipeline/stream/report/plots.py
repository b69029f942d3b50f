"""The report as PNGs: the run's 3x2 summary and the rate controller's timeline (matplotlib is
imported only when one is drawn)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pipeline.stream.report.table import fmt, run_title


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
        f"{report.get('rejected')} rejected, {fmt(report.get('throughput_sps'))} samples/s, "
        f"ratio {fmt(report.get('compression_ratio'), 2)}, goodput "
        f"{fmt(report.get('goodput_mbps'), 2)} Mbit/s at the receiver",
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
        f"rate control: {fmt(100 * ratio, 1) if ratio is not None else 'n/a'} % within the SLO, "
        f"agreement {fmt(agree, 4) if agree is not None else 'n/a'}"
    )
    return _save(fig, path)
