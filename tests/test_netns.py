"""The real shaped link: two network namespaces + veth + tc tbf (root only).

First the shaping itself is proven with plain TCP, then a Ray head (edge) and worker (cloud)
run in the two namespaces and the pipeline streams across the shaped veth with
``link.mode=real``. Namespaces and Ray processes are always torn down.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import netns_link  # noqa: E402

pytestmark = pytest.mark.root

_REASON = netns_link.netns_supported()
needs_netns = pytest.mark.skipif(_REASON is not None, reason=f"shaped link: {_REASON}")


def _prefix() -> str:
    return f"t{os.getpid() % 10000}"


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@needs_netns
@pytest.mark.parametrize("rate", [2.0, 10.0])
def test_tcp_goodput_matches_tbf_rate(rate):
    link = netns_link.NetnsLink(rate, prefix=_prefix())
    with link:
        # 4 s: one TCP retransmission timeout (>= 200 ms, after a tail drop at the shaper's queue) must
        # not decide the result, as it could over 2 s on a busy machine
        result = netns_link.tcp_goodput(link, seconds=4.0)
    # TCP payload goodput: tbf counts Ethernet/IP/TCP headers (~4.5 % of a full frame)
    assert 0.90 * rate <= result["goodput_mbps"] <= 1.02 * rate, result
    assert 0.90 * rate <= result["wire_mbps"] <= 1.10 * rate, result
    assert result["bytes"] == int(rate * 1e6 / 8 * 4.0)
    assert link.edge not in _namespaces()


@needs_netns
def test_teardown_after_failure_leaves_nothing():
    link = netns_link.NetnsLink(5.0, prefix=_prefix())
    procs = []
    with pytest.raises(RuntimeError, match="boom"), link:
        assert link.edge in _namespaces()
        procs.append(link.spawn(link.edge, ["sleep", "60"], pid_namespace=True))
        raise RuntimeError("boom")
    assert link.edge not in _namespaces() and link.cloud not in _namespaces()
    assert procs[0].poll() is not None  # the background process was stopped


def test_saturated_rate_ignores_startup_and_drain():
    # 1 s idle start, 2 s at 8 Mbit/s (1 MB/s), 1 s idle drain
    samples = [(t / 10, 0) for t in range(10)]
    samples += [(1 + t / 10, 100_000 * t) for t in range(1, 21)]
    samples += [(3 + t / 10, 2_000_000) for t in range(1, 11)]
    rate = netns_link.saturated_rate(samples)
    assert rate["mbps"] == pytest.approx(8.0, rel=0.02)
    with pytest.raises(ValueError, match="no bytes"):
        netns_link.saturated_rate([(0, 5), (1, 5), (2, 5)])


@needs_netns
@pytest.mark.slow
@pytest.mark.skipif(
    not (REPO / "splitstream" / "runner.py").exists(), reason="pipeline runner missing"
)
def test_ray_pipeline_across_shaped_link(tmp_path):
    rate = 4.0
    link = netns_link.NetnsLink(rate, prefix=_prefix())
    # batches of 32 fp32 features (2 MiB objects) keep Ray's per-batch control traffic small
    args = ["--config", str(REPO / "configs" / "demo.yaml"), "--set", "samples=96",
            "--set", "codec.kind=fp32", "--set", "fidelity.reference_samples=0",
            "--set", "batching.max_batch_size=32"]  # fmt: skip
    with link:
        result = netns_link.pipeline_goodput(link, args, str(tmp_path))
    assert link.edge not in _namespaces()
    report = result["report"]
    assert report["delivered"] == 96 and report["lost"] == 0 and report["duplicated"] == 0
    # the stream's own figure, measured at the receiver (cloud-side arrivals), is under the shaper's rate
    # and close to the payload goodput that tc's counters give
    assert 0.80 * rate <= report["goodput_mbps"] <= 1.02 * rate, report["goodput_mbps"]
    # edge stages ran in the edge namespace, cloud stages across the veth
    stages = report["stages"]
    for name, ip in (("head", "10.77.0.1"), ("encoder", "10.77.0.1"), ("decoder", "10.77.0.2"),
                     ("tail", "10.77.0.2")):  # fmt: skip
        assert {p["ip"] for p in stages[name]["placement"]} == {ip}, name
    # the features really crossed the shaped link ...
    assert result["tc_sent_bytes"] >= report["wire_bytes"]
    # ... at the shaping rate: steady throughput through tbf within 10 %
    assert 0.90 * rate <= result["wire_mbps"] <= 1.10 * rate, result
    # feature-payload goodput after TCP/IP headers and Ray's own traffic: within 10 % too (measured ~91.5 %)
    assert 0.90 * rate <= result["goodput_mbps"] <= 1.02 * rate, result
