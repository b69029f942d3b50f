"""The report as text: the plain-text table the command line prints, and the one-line title naming
what ran (model, codec, link, fleet, samples)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any


def fmt(v: Any, nd: int = 1) -> str:
    """A figure as the table prints it: floats to ``nd`` decimals (``nan`` as such)."""
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
            f"{fmt(report.get('latency_p50_ms'))} / {fmt(report.get('latency_p99_ms'))}",
        ),
        ("raw -> wire bytes", f"{report.get('raw_bytes')} -> {report.get('wire_bytes')}"),
        ("compression ratio", fmt(report.get("compression_ratio"), 2)),
        ("goodput at receiver (Mbit/s)", fmt(report.get("goodput_mbps"), 3)),
        ("link utilization (measured)", fmt(report.get("link_utilization"), 3)),
        ("link schedule (Mbit/s, emulator)", fmt(sched, 3) if sched else "n/a"),
        *_outage_rows(link),
        ("peak in-flight batches", report.get("peak_inflight_batches")),
        *_pool_rows(report),
    ]
    if report.get("slo_met_ratio") is not None:
        slo = ((report.get("rate") or {}).get("latency_slo_ms")) or 0
        rows.append((f"within the {slo:g} ms SLO", fmt(100 * report["slo_met_ratio"], 2) + " %"))
    if report.get("settings_histogram"):
        hist = report["settings_histogram"]
        rows.append(("settings (samples)", ", ".join(f"{k}: {v}" for k, v in hist.items())))
    fid = report.get("fidelity") or {}
    if fid.get("accuracy") is not None:
        rows.append(("accuracy (vs labels)", fmt(100 * fid["accuracy"], 2) + " %"))
    n = fid.get("reference_samples")
    if fid.get("agreement") is not None:
        rows.append((f"top-1 agreement (n={n})", fmt(100 * fid["agreement"], 2) + " %"))
    if fid.get("cosine") is not None:
        cos = f"{fid['cosine']:.6f} / {fid['cosine_min']:.6f}"
        rows.append((f"embedding cosine mean / min (n={n})", cos))
    if fid.get("next_token_agreement") is not None:
        agree = fmt(100 * fid["next_token_agreement"], 2) + " %"
        rows.append((f"next-token agreement ({fid['next_tokens']} tokens)", agree))
    if fid.get("loglik_delta") is not None:
        delta = f"{fid['loglik_delta']:+.5f} / {fid['loglik_delta_min']:+.5f}"
        rows.append(("log-lik. delta mean / worst (nats/token)", delta))
    if report.get("text"):
        t = report["text"]
        share = fmt(100 * t["padding_skipped"], 1)
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
                f"{fmt(mem.get('driver_rss_mb_last'))} / {fmt(mem.get('sink_rss_mb_last'))}",
            )
        )
    rows += _output_rows(report)
    if report.get("reject_errors"):
        rows.append(("first reject error", report["reject_errors"][0][:60]))
    width = max(len(k) for k, _ in rows)
    lines += [f"{k.ljust(width)}  {fmt(v)}" for k, v in rows]
    lines.append("-" * 86)
    head = (
        f"{'stage':<10}{'sps':>9}{'p50ms':>9}{'p99ms':>9}{'busy_s':>8}{'bp_s':>7}{'q_mean':>8}"
        f"{'q_max':>6}{'batch':>7}{'rst':>4}{'rply':>5}  node"
    )
    lines.append(head)
    for name, st in (report.get("stages") or {}).items():
        nodes = ",".join(sorted({node_label(p) for p in st.get("placement", [])}))
        lines.append(
            f"{name:<10}{fmt(st.get('throughput_sps')):>9}{fmt(st.get('latency_p50_ms'), 2):>9}"
            f"{fmt(st.get('latency_p99_ms'), 2):>9}{fmt(st.get('busy_s'), 2):>8}"
            f"{fmt(st.get('backpressured_s', 0.0), 2):>7}{fmt(st.get('queue_depth_mean', 0.0), 2):>8}"
            f"{fmt(st.get('queue_depth_max', 0)):>6}{fmt(st.get('mean_batch_size'), 1):>7}"
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
    elif codec.get("kind") == "int8-zstd":
        parts.append(f"codec int8-zstd (uint8 min..max, zstd level {codec.get('level')})")
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


def _pool_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """One row per autoscaling cloud pool: its bounds, peak and final size, and its moves."""
    rows = []
    for name, p in (report.get("pools") or {}).items():
        moves = Counter(e["event"] for e in p.get("events", []))
        what = ", ".join(f"{v} {k}" for k, v in moves.items()) or "no moves"
        rows.append((f"pool '{name}' replicas", f"{p['min']}-{p['max']}: peak {p['peak']}, "
                     f"final {p['final']} ({what})"))  # fmt: skip
    return rows
