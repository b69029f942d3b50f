"""The stream on a lossy real link: goodput, latency and TCP retransmissions at 0, 0.5 and 2 % loss.

    python -m benchmarks.field [--quick] [--samples N] [--out DIR] [--json PATH]      # root

The demo stream (``configs/demo.yaml``) crosses a veth between two network namespaces whose uplink
``tc tbf`` shapes to ``RATE_MBPS`` (``scripts/netns_link.py``). nftables drops packets at random
(``numgen random mod 10000 < P*100 drop``) where they arrive, in both directions, so a lost feature
frame has used the shaper's time and the edge's TCP must send it again. The veth carries one wire
frame per packet (no GSO) in every run, 0 % included, so the drop rate is per frame. Each secure
mode (``off``; ``tls``: token authentication and TLS on Ray's gRPC) starts one two-node cluster and
streams ``SAMPLES`` samples at each loss rate on it, the rules changed between streams.

Figures per run: samples/s and goodput as the stream measures them at the receiver (the decoder's
arrival stamps), the goodput against the same secure mode at 0 % loss (what retransmission costs),
p50/p99 latency, the frames the rules dropped uplink, and the edge namespace's TCP counters
(``/proc/net/snmp`` before and after: segments sent and retransmitted, the edge being the sender of
the features), the shaper's steady rate (all bytes) and the payload's share of it. Writes
``field.json`` (stamped with the commit and settings), ``field.md`` and ``field.png`` into ``--out``
(``field_quick*`` with ``--quick``: fewer samples).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.common import (
    machine,
    provenance,
    results_markdown,
    results_parser,
    save_figure,
    table,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent
BASE_CONFIG = REPO / "configs" / "demo.yaml"
RATE_MBPS = 4.0
LOSSES = (0.0, 0.5, 2.0)  # percent, both directions
MODES = ("off", "tls")
SAMPLES = 960  # about 16 s of link time each at 4 Mbit/s (60 samples/s at 0 % loss)
QUICK_SAMPLES = 192
COLUMNS = [
    ("loss_pct", "loss %"),
    ("secure", "secure mode"),
    ("throughput_sps", "samples/s"),
    ("goodput_mbps", "goodput Mbit/s (receiver)"),
    ("goodput_vs_lossless", "goodput vs 0 %"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p99_ms", "p99 ms"),
    ("dropped_uplink", "frames dropped (uplink)"),
    ("edge_out_segs", "TCP segments sent (edge)"),
    ("edge_retrans_segs", "retransmitted"),
    ("edge_retrans_pct", "retransmitted %"),
    ("tc_wire_mbps", "link Mbit/s (tc)"),
    ("lost", "lost"),
]


def run_mode(secure: str, samples: int, losses: Sequence[float], bar: Any) -> list[dict[str, Any]]:
    """One cluster across a fresh shaped link in secure mode ``secure``; one stream per loss rate."""
    sys.path.insert(0, str(REPO / "scripts"))
    import netns_link

    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="ss_field_") as tmp,
        netns_link.NetnsLink(RATE_MBPS, per_packet=True) as link,
    ):
        address, driver_env = netns_link.start_ray_secure(link, tmp, secure)
        for loss in losses:
            link.set_loss(loss, "both")
            args = ["--config", str(BASE_CONFIG), "--set", f"samples={samples}",
                    "--set", "fidelity.reference_samples=0"]  # fmt: skip
            workdir = Path(tmp) / f"loss{loss:g}"
            workdir.mkdir()
            res = netns_link.stream_goodput(link, address, args, str(workdir), driver_env)
            rep = res["report"]
            rows.append(
                {
                    "loss_pct": loss,
                    "secure": secure,
                    "samples": rep["delivered"],
                    "throughput_sps": rep["throughput_sps"],
                    "goodput_mbps": rep["goodput_mbps"],
                    "latency_p50_ms": rep["latency_p50_ms"],
                    "latency_p99_ms": rep["latency_p99_ms"],
                    "elapsed_s": rep.get("elapsed_s"),
                    "dropped_uplink": res["dropped_uplink"],
                    "dropped_downlink": res["dropped_downlink"],
                    "shaper_dropped": res["shaper_dropped"],
                    "edge_out_segs": res["edge_out_segs"],
                    "edge_retrans_segs": res["edge_retrans_segs"],
                    "edge_retrans_pct": res["edge_retrans_pct"],
                    "cloud_out_segs": res["cloud_out_segs"],
                    "cloud_retrans_segs": res["cloud_retrans_segs"],
                    "tc_wire_mbps": res["wire_mbps"],
                    "payload_share": res["payload_share"],
                    "tc_sent_bytes": res["tc_sent_bytes"],
                    "payload_bytes": res["payload_bytes"],
                    "lost": rep["lost"] + rep["duplicated"],
                }
            )
            bar.update(1)
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's goodput against the same secure mode's run at 0 % loss."""
    base = {r["secure"]: r["goodput_mbps"] for r in rows if r["loss_pct"] == 0}
    for r in rows:
        b = base.get(r["secure"])
        r["goodput_vs_lossless"] = r["goodput_mbps"] / b if b else None
    return rows


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    """The README's Markdown block of a results document."""
    return {"loss": table(payload["rows"], COLUMNS)}


def render_markdown(payload: dict[str, Any]) -> str:
    setup = (
        f"; the demo stream ({payload['samples']} samples per run) across a veth shaped to "
        f"{payload['rate_mbps']:g} Mbit/s by tc tbf, nftables dropping {', '.join(f'{x:g}' for x in payload['losses'])} % "
        f"of the packets both ways, secure modes {', '.join(payload['modes'])}."
    )
    return results_markdown(
        "The stream on a lossy real link",
        payload,
        "python -m benchmarks.field",
        setup,
        render_tables(payload)["loss"] + "\n\n![goodput and latency against loss](field.png)",
    )


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Goodput, p99 latency and retransmitted segments against the loss rate, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (
        ("goodput_mbps", "goodput at the receiver (Mbit/s)"),
        ("latency_p99_ms", "p99 latency (ms)"),
        ("edge_retrans_segs", "TCP segments retransmitted (edge)"),
    )
    for secure in dict.fromkeys(r["secure"] for r in rows):
        sel = sorted((r for r in rows if r["secure"] == secure), key=lambda r: r["loss_pct"])
        xs = [r["loss_pct"] for r in sel]
        for ax, (key, _) in zip(axes, panels, strict=True):
            label = "TLS on" if secure == "tls" else f"secure mode {secure}"
            ax.plot(xs, [r[key] for r in sel], marker="o", label=label)
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        ax.set_xlabel("packet loss, both directions (%)")
        ax.set_ylabel(ylabel)
        ax.set_xticks(sorted({r["loss_pct"] for r in rows}))
        ax.grid(True, alpha=0.3)
        ax.legend()
        if key == "goodput_mbps":
            ax.axhline(RATE_MBPS, color="grey", linestyle=":", linewidth=1)
            ax.set_ylim(0, RATE_MBPS * 1.1)
        else:
            ax.set_ylim(bottom=0)
    fig.suptitle(
        f"demo stream over a veth shaped to {RATE_MBPS:g} Mbit/s (tc tbf) with nftables packet loss"
    )
    save_figure(fig, path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    ap = results_parser("python -m benchmarks.field", __doc__, f"{QUICK_SAMPLES} samples per run")
    ap.add_argument("--samples", type=int, default=None, help=f"samples per run (default {SAMPLES})")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.path.insert(0, str(REPO / "scripts"))
    import netns_link

    reason = netns_link.netns_supported() or netns_link.loss_supported()
    if reason:
        print(f"the lossy shaped link cannot be built here: {reason}", file=sys.stderr)
        return 2
    samples = args.samples or (QUICK_SAMPLES if args.quick else SAMPLES)
    config = {
        "quick": args.quick,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "rate_mbps": RATE_MBPS,
        "losses": list(LOSSES),
        "loss_direction": "both",
        "modes": list(MODES),
        "samples": samples,
        "per_packet": True,
    }
    prov = provenance(["python", "-m", "benchmarks.field", *argv], config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "field_quick" if args.quick else "field"
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(MODES) * len(LOSSES), desc="lossy link", unit="run") as bar:
        for secure in MODES:
            rows += run_mode(secure, samples, LOSSES, bar)
    payload = {
        "benchmark": "field",
        "machine": machine(),
        "provenance": prov,
        "rate_mbps": RATE_MBPS,
        "losses": list(LOSSES),
        "modes": list(MODES),
        "samples": samples,
        "rows": add_ratios(rows),
        "seconds": round(time.time() - t0, 1),
    }
    write_results(out, stem, payload, render_markdown(payload), args.json)
    plot(payload["rows"], out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
