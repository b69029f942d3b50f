"""Secure mode's cost on the real shaped link: goodput with and without TLS, in one run.

    python -m benchmarks.security [--quick] [--rounds N] [--out DIR] [--json PATH]      # root

The demo stream crosses a veth between two network namespaces whose uplink ``tc tbf`` shapes to
``RATE_MBPS`` (``scripts/netns_link.py``), with Ray's nodes in each secure mode: ``off``, ``token``
(token authentication alone) and ``tls`` (token authentication and TLS on Ray's gRPC, a certificate
per side from a throwaway CA; README, "Security"). Every mode starts its own two-node cluster, and
on it runs two codecs: ``fp32`` (64 KiB per sample, so the link is the bottleneck throughout) and
``ours`` (the demo's 8-bit codec, enough samples to fill the link for about 8 s). The modes take
turns within each of ``--rounds`` rounds, so a slow spell of the shared machine falls on all of them.

Figures per run: the shaper's steady rate over the middle 80 % of the bytes (``link Mbit/s``, all
bytes: payload, Ray, TLS, TCP/IP), the payload's share of those bytes and the feature bytes through
the link per second that follow (``payload Mbit/s``), the goodput measured by the stream at the
receiver, samples/s and p99 latency. The table gives each figure's median over the rounds and the
payload rate against mode ``off``. Writes ``security.json`` (stamped with the commit and settings)
and ``security.md`` into ``--out`` (``security_quick*`` with ``--quick``: one round, fewer samples).
"""

from __future__ import annotations

import os
import statistics
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
    table,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent
BASE_CONFIG = REPO / "configs" / "demo.yaml"
RATE_MBPS = 4.0
MODES = ("off", "token", "tls")
RUNS = {  # codec -> (samples, max batch): about 8 s of link time each at 4 Mbit/s
    "fp32": (64, 8),
    "ours": (480, 64),
}
ROUNDS = 3
COLUMNS = [
    ("codec", "codec"),
    ("secure", "secure mode"),
    ("runs", "runs"),
    ("throughput_sps", "samples/s"),
    ("latency_p99_ms", "p99 ms"),
    ("tc_wire_mbps", "link Mbit/s (tc)"),
    ("payload_share", "payload share"),
    ("payload_goodput_mbps", "payload Mbit/s (tc)"),
    ("goodput_mbps", "goodput Mbit/s (receiver)"),
    ("payload_vs_off", "payload vs off"),
    ("lost", "lost"),
]


def run_mode(secure: str, runs: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """One cluster across a fresh shaped link in secure mode ``secure``; one stream per codec."""
    sys.path.insert(0, str(REPO / "scripts"))
    import netns_link

    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="ss_sec_") as tmp,
        netns_link.NetnsLink(RATE_MBPS) as link,
    ):
        address, driver_env = netns_link.start_ray_secure(link, tmp, secure)
        for codec, (samples, batch) in runs.items():
            args = ["--config", str(BASE_CONFIG), "--set", f"samples={samples}",
                    "--set", f"codec.kind={codec}", "--set", f"batching.max_batch_size={batch}",
                    "--set", "fidelity.reference_samples=0"]  # fmt: skip
            workdir = Path(tmp) / codec
            workdir.mkdir()
            res = netns_link.stream_goodput(link, address, args, str(workdir), driver_env)
            rep = res["report"]
            rows.append(
                {
                    "codec": codec,
                    "secure": secure,
                    "samples": rep["delivered"],
                    "throughput_sps": rep["throughput_sps"],
                    "latency_p50_ms": rep["latency_p50_ms"],
                    "latency_p99_ms": rep["latency_p99_ms"],
                    "goodput_mbps": rep["goodput_mbps"],
                    "tc_wire_mbps": res["wire_mbps"],
                    "payload_share": res["payload_share"],
                    "payload_goodput_mbps": res["goodput_mbps"],
                    "tc_sent_bytes": res["tc_sent_bytes"],
                    "payload_bytes": res["payload_bytes"],
                    "window_s": res["window_s"],
                    "lost": rep["lost"],
                    "duplicated": rep["duplicated"],
                }
            )
    return rows


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (codec, mode): the median of each figure over the rounds, and the payload rate against
    mode ``off`` (the median of the per-round ratios, so a slow round cancels out)."""
    keys = ("throughput_sps", "latency_p50_ms", "latency_p99_ms", "tc_wire_mbps", "payload_share",
            "payload_goodput_mbps", "goodput_mbps")  # fmt: skip
    rows = []
    for codec in dict.fromkeys(r["codec"] for r in runs):
        base = {r["round"]: r for r in runs if r["codec"] == codec and r["secure"] == "off"}
        for secure in dict.fromkeys(r["secure"] for r in runs):
            mine = [r for r in runs if r["codec"] == codec and r["secure"] == secure]
            row: dict[str, Any] = {"codec": codec, "secure": secure, "runs": len(mine)}
            row.update({k: statistics.median(r[k] for r in mine) for k in keys})
            ratios = [
                r["payload_goodput_mbps"] / base[r["round"]]["payload_goodput_mbps"]
                for r in mine
                if r["round"] in base
            ]
            row["payload_vs_off"] = statistics.median(ratios) if ratios else None
            row["lost"] = sum(r["lost"] + r["duplicated"] for r in mine)
            rows.append(row)
    return rows


def render_tables(payload: dict[str, Any]) -> dict[str, str]:
    """The README's Markdown block of a results document."""
    return {"security": table(payload["rows"], COLUMNS)}


def render_markdown(payload: dict[str, Any]) -> str:
    setup = (
        f"; demo stream across a veth shaped to {payload['rate_mbps']:g} Mbit/s by tc tbf, "
        f"{payload['rounds']} round(s) of modes {', '.join(payload['modes'])}."
    )
    return results_markdown(
        "Secure mode on the real shaped link",
        payload,
        "python -m benchmarks.security",
        setup,
        render_tables(payload)["security"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = results_parser("python -m benchmarks.security", __doc__, "one round, fewer samples")
    ap.add_argument("--rounds", type=int, default=None, help=f"rounds (default {ROUNDS})")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.path.insert(0, str(REPO / "scripts"))
    import netns_link

    reason = netns_link.netns_supported()
    if reason:
        print(f"the shaped link cannot be built here: {reason}", file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    runs = {k: (max(16, n // 4), b) for k, (n, b) in RUNS.items()} if args.quick else dict(RUNS)
    config = {
        "quick": args.quick,
        "base_config": str(BASE_CONFIG.relative_to(REPO)),
        "rate_mbps": RATE_MBPS,
        "modes": list(MODES),
        "rounds": rounds,
        "runs": {k: {"samples": n, "max_batch_size": b} for k, (n, b) in runs.items()},
    }
    prov = provenance(["python", "-m", "benchmarks.security", *argv], config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "security_quick" if args.quick else "security"
    t0 = time.time()
    results: list[dict[str, Any]] = []
    plan = [(i, secure) for i in range(rounds) for secure in MODES]
    for i, secure in tqdm(plan, desc="secure modes", unit="cluster"):
        for row in run_mode(secure, runs):
            results.append({"round": i, **row})
    payload = {
        "benchmark": "security",
        "machine": machine(),
        "provenance": prov,
        "rate_mbps": RATE_MBPS,
        "modes": list(MODES),
        "rounds": rounds,
        "rows": summarize(results),
        "runs": results,
        "seconds": round(time.time() - t0, 1),
    }
    write_results(out, stem, payload, render_markdown(payload), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
