"""Tests for pipeline.stream.link: token bucket goodput, traces, loss, jitter FIFO, profiles."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipeline.stream.link import (
    PROFILES,
    TRACE_PACKET_BYTES,
    EmulatedLink,
    LinkSpec,
    load_trace,
    resolve_link,
    trace_mean_mbps,
)


class FakeClock:
    """A manually advanced clock."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def saturate(link: EmulatedLink, clock: FakeClock, chunk: int, count: int) -> float:
    """Send ``count`` chunks back to back (sender waits for tx_done); return goodput in Mbit/s."""
    t0 = clock.t
    for _ in range(count):
        d = link.reserve(chunk)
        clock.t = d.tx_done
    return chunk * count * 8 / (clock.t - t0) / 1e6


@pytest.mark.parametrize("mbps", [1.0, 10.0])
@pytest.mark.parametrize("chunk", [700, 1500, 60_000])
def test_goodput_matches_bandwidth_fake_clock(mbps, chunk):
    clock = FakeClock()
    link = EmulatedLink(LinkSpec(bandwidth_mbps=mbps), clock=clock)
    count = max(20, int(mbps * 1e6 / 8 * 2 / chunk))  # ~2 s of traffic
    goodput = saturate(link, clock, chunk, count)
    assert 0.95 * mbps <= goodput <= 1.02 * mbps
    stats = link.stats()
    assert 0.95 <= stats["utilization"] <= 1.02
    assert stats["payload_bytes"] == chunk * count


def test_serialization_time_and_fifo_queueing():
    clock = FakeClock(0.0)
    link = EmulatedLink(LinkSpec(bandwidth_mbps=8.0, delay_ms=10.0, mtu=1000), clock=clock)
    # 8 Mbit/s = 1e6 bytes/s; the first MTU of tokens is already in the bucket
    a = link.reserve(11_000)
    assert a.tx_start == 0.0
    assert a.tx_done == pytest.approx(0.010)
    assert a.arrival == pytest.approx(0.020)
    b = link.reserve(5_000)  # queued behind a, no idle time so no new tokens
    assert b.tx_start == pytest.approx(0.010)
    assert b.tx_done == pytest.approx(0.015)
    # after a long idle period the bucket holds one MTU again, not more
    c = link.reserve(3_000, now=5.0)
    assert c.tx_start == 5.0
    assert c.tx_done == pytest.approx(5.002)


def test_unconstrained_link_only_adds_delay():
    clock = FakeClock(1.0)
    link = EmulatedLink(resolve_link("unlimited", delay_ms=5.0), clock=clock)
    d = link.reserve(10_000_000)
    assert d.tx_done == 1.0
    assert d.arrival == pytest.approx(1.005)
    assert link.stats()["utilization"] is None


def test_realtime_transmit_goodput_asyncio():
    """Real clock: a sender keeping two transmissions outstanding (as the Transport actor does)."""
    mbps = 10.0
    link = EmulatedLink(LinkSpec(bandwidth_mbps=mbps))
    chunk, count = 25_000, 16  # 400 kB = 0.32 s at 10 Mbit/s

    async def send() -> float:
        slots = asyncio.Semaphore(2)

        async def one() -> None:
            async with slots:
                await link.transmit(chunk)

        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        return time.monotonic() - t0

    elapsed = asyncio.run(send())
    goodput = chunk * count * 8 / elapsed / 1e6
    assert 0.95 * mbps <= goodput <= 1.02 * mbps


def test_transmit_waits_only_for_serialization_not_delay():
    link = EmulatedLink(LinkSpec(bandwidth_mbps=100.0, delay_ms=300.0))

    async def one():
        t0 = time.monotonic()
        d = await link.transmit(12_500)  # 1 ms at 100 Mbit/s
        return time.monotonic() - t0, d

    waited, d = asyncio.run(one())
    assert waited < 0.2
    assert d.arrival - d.tx_done == pytest.approx(0.3)


def test_jitter_keeps_fifo_and_never_negative():
    clock = FakeClock(0.0)
    spec = LinkSpec(bandwidth_mbps=100.0, delay_ms=1.0, jitter_ms=20.0, seed=3)
    link = EmulatedLink(spec, clock=clock)
    arrivals, extra = [], []
    for i in range(300):
        d = link.reserve(1500, now=i * 0.001)
        assert d.arrival >= d.tx_done
        arrivals.append(d.arrival)
        extra.append(d.arrival - d.tx_done)
    assert arrivals == sorted(arrivals)
    # the jitter really varies the delay (it is not a constant shift)
    assert max(extra) - min(extra) > 0.02


def test_jitter_is_seeded():
    def run(seed):
        link = EmulatedLink(LinkSpec(delay_ms=5, jitter_ms=3, seed=seed), clock=FakeClock(0.0))
        return [link.reserve(100, now=i).arrival for i in range(20)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_loss_accounting():
    clock = FakeClock(0.0)
    spec = LinkSpec(bandwidth_mbps=10.0, loss=0.2, mtu=1000, seed=11)
    link = EmulatedLink(spec, clock=clock)
    total_retx = 0
    for _ in range(200):
        d = link.reserve(10_000)
        assert d.wire_bytes == 10_000 + d.retransmitted_bytes
        assert d.retransmitted_bytes % 1000 == 0  # whole packets are resent
        total_retx += d.retransmitted_bytes
        clock.t = d.tx_done
    stats = link.stats()
    assert stats["packets"] == 2000
    assert stats["retransmitted_bytes"] == total_retx == stats["retransmissions"] * 1000
    # expected retransmissions per packet: p / (1 - p) = 0.25
    assert 0.2 <= stats["retransmissions"] / stats["packets"] <= 0.3
    # retransmissions cost bandwidth: goodput falls to about (1 - p) of the rate
    assert 0.75 <= stats["utilization"] <= 0.85
    assert stats["wire_bytes"] == stats["payload_bytes"] + total_retx


def test_loss_adds_one_delay_per_retransmission_round():
    spec = LinkSpec(delay_ms=50.0, loss=0.5, mtu=100, seed=5)
    link = EmulatedLink(spec, clock=FakeClock(0.0))
    seen_extra = False
    for i in range(50):
        d = link.reserve(100, now=float(i))  # one packet, unconstrained rate
        rounds = d.retransmitted_bytes // 100
        assert d.arrival - i == pytest.approx(0.05 * (1 + rounds))
        seen_extra |= rounds > 0
    assert seen_extra


def test_partial_last_packet_retransmission_size():
    spec = LinkSpec(loss=0.6, mtu=1000, seed=1)
    link = EmulatedLink(spec, clock=FakeClock(0.0))
    sizes = {link.reserve(250, now=float(i)).retransmitted_bytes for i in range(40)}
    assert all(s % 250 == 0 for s in sizes)
    assert max(sizes) > 0


# ------------------------------------------------------------------------ traces
def write_trace(tmp_path, lines, name="t.trace"):
    path = tmp_path / name
    path.write_text("\n".join(str(x) for x in lines) + "\n")
    return str(path)


def test_trace_parsing(tmp_path):
    path = write_trace(tmp_path, [1, 1, 2, "", 5, 10])
    times = load_trace(path)
    assert times.tolist() == [1, 1, 2, 5, 10]
    assert trace_mean_mbps(times) == pytest.approx(5 * 1500 * 8 / 0.010 / 1e6)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty trace"),
        ("1\n2\nabc\n", "line 3"),
        ("1\n-4\n", "line 2"),
        ("5\n3\n", "earlier than"),
        ("0\n0\n", "loop period"),
        ("1.5\n", "line 1"),
    ],
)
def test_bad_traces_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.trace"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_trace(path)
    with pytest.raises(ValueError, match="link.trace"):
        EmulatedLink(LinkSpec(trace=str(path)))


def test_missing_trace_file():
    with pytest.raises(ValueError, match="cannot read"):
        load_trace("/nonexistent/x.trace")


def test_trace_schedule_and_looping(tmp_path):
    # 2 opportunities at 1 ms, one at 4 ms; period 4 ms
    path = write_trace(tmp_path, [1, 1, 4])
    clock = FakeClock(50.0)
    link = EmulatedLink(LinkSpec(trace=path), clock=clock)
    d = link.reserve(3 * TRACE_PACKET_BYTES)  # uses opportunities at 1, 1, 4 ms
    assert d.tx_done == pytest.approx(50.004)
    d = link.reserve(TRACE_PACKET_BYTES)  # wraps: next at 4 + 1 = 5 ms
    assert d.tx_done == pytest.approx(50.005)
    d = link.reserve(4 * TRACE_PACKET_BYTES)  # 5(2nd), 8, 9, 9
    assert d.tx_done == pytest.approx(50.009)
    # a small payload shares the opportunity with the previous one when back to back
    d2 = link.reserve(100)
    assert d2.tx_done == pytest.approx(50.012)  # previous used full packets -> next at 12 ms


def test_trace_partial_opportunity_is_shared_back_to_back(tmp_path):
    path = write_trace(tmp_path, [10, 20, 30, 40])
    link = EmulatedLink(LinkSpec(trace=path), clock=FakeClock(0.0))
    a = link.reserve(1000)
    b = link.reserve(500)  # fits into the rest of the same 1500-byte opportunity
    c = link.reserve(1)
    assert a.tx_done == b.tx_done == pytest.approx(0.010)
    assert c.tx_done == pytest.approx(0.020)


def test_trace_goodput_matches_trace_rate():
    clock = FakeClock(0.0)
    link = EmulatedLink(LinkSpec(trace="constant_12mbps.trace"), clock=clock)
    goodput = saturate(link, clock, 30_000, 200)  # 6 MB = 4 s, loops the 1 s trace
    assert 0.95 * 12.0 <= goodput <= 1.02 * 12.0
    lte = EmulatedLink(resolve_link("lte-trace"), clock=FakeClock(0.0))
    assert 5.0 < lte.configured_mbps < 9.0


# ------------------------------------------------------------------------ profiles/spec
def test_profiles_exist_and_are_sane():
    for name in ("3g", "lte", "wifi", "1mbit", "10mbit", "100mbit", "unlimited"):
        assert name in PROFILES
    assert PROFILES["1mbit"].bandwidth_mbps == 1.0
    assert PROFILES["100mbit"].bandwidth_mbps == 100.0
    assert PROFILES["unlimited"].bandwidth_mbps is None
    assert (
        PROFILES["3g"].bandwidth_mbps
        < PROFILES["lte"].bandwidth_mbps
        < PROFILES["wifi"].bandwidth_mbps
    )


def test_resolve_link_overrides():
    spec = resolve_link("lte", delay_ms=7, loss=0.01, bandwidth_mbps=None)
    assert spec.bandwidth_mbps == 10.0  # None keeps the profile value
    assert spec.delay_ms == 7 and spec.loss == 0.01
    assert resolve_link(bandwidth_mbps=3).bandwidth_mbps == 3
    assert resolve_link() == LinkSpec()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"profile": "5g-ultra"}, "unknown link.profile '5g-ultra'"),
        ({"bandwith_mbps": 3}, "bandwith_mbps"),
        ({"bandwidth_mbps": -1}, "link.bandwidth_mbps"),
        ({"bandwidth_mbps": 0}, "link.bandwidth_mbps"),
        ({"delay_ms": -5}, "link.delay_ms"),
        ({"jitter_ms": float("nan")}, "link.jitter_ms"),
        ({"loss": 1.0}, "link.loss"),
        ({"loss": -0.1}, "link.loss"),
        ({"mtu": 10}, "link.mtu"),
        ({"delay_ms": "fast"}, "link.delay_ms"),
    ],
)
def test_bad_link_values_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve_link(**kwargs)


def test_reserve_rejects_bad_sizes():
    link = EmulatedLink(LinkSpec())
    with pytest.raises(ValueError, match="nbytes"):
        link.reserve(-1)
    with pytest.raises(ValueError, match="nbytes"):
        link.reserve(1.5)
