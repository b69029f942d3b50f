"""Tests for pipeline.stream.link: token bucket goodput, traces, loss, jitter FIFO, profiles."""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Iterator

import pytest

from pipeline.stream.link import (
    PROFILES,
    TRACE_PACKET_BYTES,
    EmulatedLink,
    LinkSpec,
    OutageSchedule,
    check_outages,
    load_trace,
    outage_overlap,
    resolve_link,
    trace_mean_mbps,
)


class FakeClock:
    """A manually advanced clock."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a fake clock: when nothing is ready it jumps to its next timer instead of
    waiting, so ``asyncio.sleep`` takes no real time and ``time()`` moves only by what was slept."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self.loop = loop

    def select(self, timeout: float | None = None) -> list:
        events = super().select(0)
        if not events and timeout:
            self.loop.now += timeout
        return events


@pytest.fixture
def vloop() -> Iterator[VirtualTimeLoop]:
    loop = VirtualTimeLoop()
    yield loop
    loop.close()


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


def test_transmit_goodput_asyncio(vloop):
    """A sender keeping two transmissions outstanding (as the Transport actor does), on the loop's
    fake clock: transmit sleeps until each chunk is serialized."""
    mbps = 10.0
    link = EmulatedLink(LinkSpec(bandwidth_mbps=mbps), clock=vloop.time)
    chunk, count = 25_000, 16  # 400 kB = 0.32 s at 10 Mbit/s

    async def send() -> float:
        slots = asyncio.Semaphore(2)

        async def one() -> None:
            async with slots:
                await link.transmit(chunk)

        t0 = vloop.time()
        await asyncio.gather(*(one() for _ in range(count)))
        return vloop.time() - t0

    elapsed = vloop.run_until_complete(send())
    # all but the first MTU (the bucket starts full) at the link's rate
    assert elapsed == pytest.approx((chunk * count - link.spec.mtu) / (mbps * 1e6 / 8))
    assert 0.95 * mbps <= chunk * count * 8 / elapsed / 1e6 <= 1.02 * mbps


def test_transmit_waits_only_for_serialization_not_delay(vloop):
    link = EmulatedLink(LinkSpec(bandwidth_mbps=100.0, delay_ms=300.0), clock=vloop.time)

    async def one():
        t0 = vloop.time()
        d = await link.transmit(12_500)  # 1 ms at 100 Mbit/s
        return t0, vloop.time(), d

    t0, back, d = vloop.run_until_complete(one())
    assert back == pytest.approx(d.tx_done) and d.tx_done - t0 < 0.002  # not the 300 ms delay
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


# ------------------------------------------------------------------------ outages
def test_an_outage_pauses_a_transmission_and_it_resumes_with_its_bytes_kept():
    clock = FakeClock(0.0)
    spec = LinkSpec(bandwidth_mbps=8.0, delay_ms=10.0, mtu=1000, outages=((1.0, 2.0),))
    link = EmulatedLink(spec, clock=clock)
    first = link.reserve(11_000)  # the origin: down over [1, 3) on the link's clock
    assert first.tx_done == pytest.approx(0.010) and first.outage_s == 0.0
    # 1 MB/s: 5 ms of the 10 ms needed go before the outage, the other 5 ms after it
    d = link.reserve(11_000, now=0.995)
    assert d.tx_start == pytest.approx(0.995)
    assert d.tx_done == pytest.approx(3.005)
    assert d.arrival == pytest.approx(3.015)
    assert d.outage_s == pytest.approx(2.0)
    assert d.wire_bytes == 11_000 and d.retransmitted_bytes == 0  # nothing sent twice, nothing lost
    st = link.stats()
    assert st["busy_s"] == pytest.approx(0.020)  # serializing, not the pause
    assert st["outages"] == [[1.0, 2.0]] and st["outage_down_s"] == pytest.approx(2.0)
    assert st["payload_bytes"] == 22_000


def test_a_batch_handed_over_during_an_outage_waits_for_its_end():
    clock = FakeClock(0.0)
    link = EmulatedLink(LinkSpec(bandwidth_mbps=8.0, mtu=1000, outages=((1.0, 2.0),)), clock)
    link.reserve(1000)
    d = link.reserve(11_000, now=2.0)
    assert d.tx_start == pytest.approx(3.0)  # no tokens accrue while the link is down either
    assert d.tx_done == pytest.approx(3.010)
    assert d.outage_s == pytest.approx(1.0)
    after = link.reserve(1000, now=3.5)
    assert after.tx_start == pytest.approx(3.5) and after.outage_s == 0.0


def test_outages_count_from_the_first_transmission_not_from_the_links_creation():
    clock = FakeClock(100.0)
    link = EmulatedLink(LinkSpec(outages=((1.0, 2.0),)), clock=clock)  # unconstrained
    clock.t = 105.0
    assert link.reserve(10).tx_start == 105.0
    assert link.outage_windows() == [(106.0, 108.0)]
    d = link.reserve(10, now=106.5)
    assert (d.tx_start, d.arrival, d.outage_s) == (108.0, 108.0, pytest.approx(1.5))
    assert link.reserve(10, now=108.0).outage_s == 0.0  # the window is [start, end)


def test_a_payload_propagating_when_the_link_goes_down_arrives_after_it():
    link = EmulatedLink(LinkSpec(delay_ms=50.0, outages=((1.0, 2.0),)), clock=FakeClock(0.0))
    link.reserve(10)
    d = link.reserve(10, now=0.98)  # its last byte left at 0.98, due at 1.03: in flight at 1.0
    assert d.tx_done == pytest.approx(0.98)
    assert d.arrival == pytest.approx(3.05)  # sent again when the link is back
    assert d.outage_s == pytest.approx(2.0)
    assert link.reserve(10, now=0.99).arrival >= d.arrival  # still FIFO


def test_a_trace_link_skips_the_opportunities_inside_an_outage(tmp_path):
    path = write_trace(tmp_path, range(1, 1001))  # one opportunity per ms, 1 s period
    link = EmulatedLink(LinkSpec(trace=path, outages=((0.1, 0.2),)), clock=FakeClock(0.0))
    d = link.reserve(300 * TRACE_PACKET_BYTES)  # 99 opportunities (1..99 ms), then 300..500 ms
    assert d.tx_done == pytest.approx(0.500)
    assert d.outage_s == pytest.approx(0.2)
    plain = EmulatedLink(LinkSpec(trace=path), clock=FakeClock(0.0))
    assert plain.reserve(300 * TRACE_PACKET_BYTES).tx_done == pytest.approx(0.300)


def test_the_outage_schedule_is_a_pure_function_of_time():
    s = OutageSchedule.relative(((1.0, 1.0), (3.0, 0.5)), origin=10.0)
    assert s.windows == [(11.0, 12.0), (13.0, 13.5)]
    assert (s.up_at(10.0), s.up_at(11.0), s.up_at(11.9), s.up_at(12.0)) == (10.0, 12.0, 12.0, 12.0)
    assert s.advance(10.5, 0.5) == 11.0  # finishes just as the link goes down
    assert s.advance(10.5, 1.5) == pytest.approx(13.0)  # 0.5 up, 1 s down, 1.0 up
    assert s.advance(10.5, 2.0) == pytest.approx(14.0)  # ... 0.5 s down, the last 0.5 up
    assert s.down_between(10.0, 20.0) == pytest.approx(1.5)
    assert s.down_between(11.5, 13.2) == pytest.approx(0.7)
    assert OutageSchedule().advance(1.0, 2.0) == 3.0


def test_outage_overlap_merges_the_edges_windows():
    windows = [[10.0, 20.0], [15.0, 25.0], [40.0, 41.0]]  # two edges' outages overlap
    assert outage_overlap(windows, 0.0, 100.0) == pytest.approx(16.0)
    assert outage_overlap(windows, 18.0, 22.0) == pytest.approx(4.0)
    assert outage_overlap([], 0.0, 1.0) == 0.0


def test_outages_from_a_profile_and_overrides():
    spec = resolve_link("lte", outages=[[15, 20]])
    assert spec.outages == ((15.0, 20.0),) and spec.bandwidth_mbps == 10.0
    assert resolve_link("lte").outages == ()
    assert check_outages([[0, 1], [1, 2]]) == ((0.0, 1.0), (1.0, 2.0))  # back to back is fine


@pytest.mark.parametrize(
    "outages, message",
    [
        ([[-1, 2]], r"link.outages\[0\]: start_s must be >= 0"),
        ([[1, 0]], r"link.outages\[0\]: duration_s must be > 0"),
        ([[5, 1], [1, 1]], r"link.outages\[1\] starts at 1 s, before link.outages\[0\]"),
        ([[0, 10], [5, 1]], "must be sorted and must not overlap"),
        ([[1, 2, 3]], r"link.outages\[0\] must be a \[start_s, duration_s\] pair"),
        ([[1, float("inf")]], r"link.outages\[0\] must hold finite numbers"),
        ("15,20", "link.outages must be a list"),
    ],
)
def test_bad_outages_name_the_key(outages, message):
    with pytest.raises(ValueError, match=message):
        resolve_link(outages=outages)


def test_the_transport_reports_outages_in_its_records():
    """The transport's records name the windows on the wall clock and the down time a batch lived
    through; a batch held up by an outage is not 'queued' behind a busy link (a short real-time
    run: the Transport reads time.time(); the second batch is sent 0.1 s into a 0.3 s window, and
    the checks hold wherever in it that lands)."""
    import pyarrow as pa

    from actors.transport import Transport

    spec = LinkSpec(bandwidth_mbps=100.0, outages=((0.05, 0.3),))
    tr = Transport(spec)
    rb = pa.record_batch({"x": pa.array(range(100), pa.int64())})

    async def run():
        first, _ = await tr.send(rb, 0)
        await asyncio.sleep(0.1)  # inside the window
        second, _ = await tr.send(rb, 1)
        return first, second

    t0 = time.time()
    first, second = asyncio.run(run())
    (a, b), *_ = first["outages_wall"]
    assert b - a == pytest.approx(0.3) and a >= t0 + 0.05  # 50 ms after the first booking
    assert first["outage_s"] == 0.0 and first["tx_start_planned"] < a
    assert second["tx_start_planned"] == pytest.approx(b, abs=1e-6)  # held until the link is up
    assert 0 < second["outage_s"] <= b - a and second["queued"] is False
    assert second["t_end"] >= b and second["busy_s"] < 0.01  # the pause is not busy time
