"""Unit tests of the flow-control policies (no Ray)."""

from __future__ import annotations

import pytest

from pipeline.stream.flow import AdaptiveBatcher, CreditWindow, LinkWindow, StateTimer


def test_credit_window_bounds_in_flight_and_tracks_peak():
    w = CreditWindow(3)
    assert [w.try_acquire() for _ in range(5)] == [True, True, True, False, False]
    assert w.in_flight == 3 and w.peak == 3 and w.refused == 2 and w.available == 0
    w.release()
    assert w.available == 1 and w.try_acquire() and not w.try_acquire()
    assert w.peak == 3 and w.granted == 4


def test_credit_window_rejects_bad_use():
    with pytest.raises(ValueError, match="window size"):
        CreditWindow(0)
    w = CreditWindow(1)
    with pytest.raises(RuntimeError, match="release"):
        w.release()


def test_slow_consumer_throttles_producer():
    """A producer gated by credits never has more than `size` items between it and the consumer."""
    w = CreditWindow(4)
    queue: list[int] = []
    produced = 0
    for tick in range(200):
        if w.try_acquire():  # producer is fast: tries every tick
            queue.append(produced)
            produced += 1
        if tick % 10 == 0 and queue:  # consumer 10x slower
            queue.pop(0)
            w.release()
        assert len(queue) <= 4
    assert w.peak == 4
    assert produced <= 4 + 20  # producer slowed to the consumer's pace


def test_batcher_grows_under_backlog_up_to_max():
    b = AdaptiveBatcher(max_batch_size=16, max_wait_ms=10)
    sizes = [b.take(1000) for _ in range(8)]
    assert sizes == [1, 2, 4, 8, 16, 16, 16, 16]
    assert b.target == 16


def test_batcher_shrinks_when_idle_down_to_min():
    b = AdaptiveBatcher(max_batch_size=32, max_wait_ms=5, min_batch_size=2)
    for _ in range(6):
        b.take(1000)
    assert b.target == 32
    sizes = [b.take(1) for _ in range(6)]  # only one sample waiting each time
    assert sizes == [1] * 6
    assert b.target == 2


def test_batcher_emit_rule_honours_target_and_max_wait():
    b = AdaptiveBatcher(max_batch_size=8, max_wait_ms=20, adaptive=False)
    assert b.target == 8
    assert not b.should_emit(0, 1.0)  # nothing to send
    assert not b.should_emit(3, 0.005)  # partial batch, not lingered long enough
    assert b.should_emit(3, 0.020)  # linger expired
    assert b.should_emit(8, 0.0)  # full batch
    assert b.time_to_deadline(0.005) == pytest.approx(0.015)
    assert b.take(100) == 8 and b.target == 8  # non-adaptive never changes


def test_batcher_validates_arguments():
    with pytest.raises(ValueError, match="max_batch_size"):
        AdaptiveBatcher(0, 1)
    with pytest.raises(ValueError, match="min_batch_size"):
        AdaptiveBatcher(4, 1, min_batch_size=5)
    with pytest.raises(ValueError, match="max_wait_ms"):
        AdaptiveBatcher(4, -1)


def test_state_timer_accumulates_per_state():
    t = [0.0]
    timer = StateTimer(clock=lambda: t[0])
    timer.set("busy")
    t[0] = 2.0
    timer.set("backpressured")
    t[0] = 2.5
    timer.set("busy")
    t[0] = 3.0
    totals = timer.stop()
    assert totals == {"busy": 2.5, "backpressured": 0.5}


class TestLinkWindow:
    """The in-flight window sized from the measured link (fake times, no Ray)."""

    MBIT10 = 10e6 / 8  # bytes/s

    def _measured(self, rate: float, fixed_s: float, batch: int, cap: int = 8) -> LinkWindow:
        """A window that saw ``rate`` and one clear batch of ``batch`` bytes whose round trip was
        ``fixed_s`` plus its serialization."""
        w = LinkWindow(cap)
        w.observe_rate(rate, now=0.0)
        w.observe_delivery(0.0, fixed_s + batch / rate, batch, clear=True)
        return w

    def test_opens_to_the_cap_until_the_link_is_measured(self):
        w = LinkWindow(8)
        assert w.size == 8
        w.observe_delivery(0.0, 0.5, 500_000, clear=True)  # a round trip, but no rate yet
        assert w.size == 8 and w.summary()["rate_mbps"] is None

    def test_big_batches_on_a_link_without_delay_need_two(self):
        # 500 kB batches take 0.4 s at 10 Mbit/s; making and handing one over takes 50 ms
        w = self._measured(self.MBIT10, 0.05, 500_000)
        assert w.size == 2
        s = w.summary()
        assert s["rate_mbps"] == pytest.approx(10.0) and s["fixed_ms"] == pytest.approx(50.0)

    def test_the_window_covers_the_bandwidth_delay_product(self):
        # 50 kB batches (40 ms each) over a 100 ms round: 1 + 1.25e6 * 0.1 * 1.25 / 5e4 = 4.1 -> 5
        assert self._measured(self.MBIT10, 0.1, 50_000).size == 5
        assert self._measured(self.MBIT10, 0.1, 50_000, cap=3).size == 3  # never past the cap

    def test_it_follows_the_link_down_and_up(self):
        w = self._measured(self.MBIT10, 0.1, 50_000)
        assert w.size == 5
        for t in range(1, 6):  # the link drops to 2 Mbit/s: fresh samples outvote the old
            w.observe_rate(2e6 / 8, now=float(t))
        assert w.size == 2
        for t in range(6, 11):
            w.observe_rate(self.MBIT10, now=float(t))
        assert w.size == 5

    def test_queued_batches_never_inflate_the_round_trip(self):
        w = self._measured(self.MBIT10, 0.05, 500_000)
        # a batch that waited behind others takes much longer, but was not clear: not a sample
        w.observe_delivery(1.0, 4.0, 500_000, clear=False)
        assert w.summary()["fixed_ms"] == pytest.approx(50.0) and w.size == 2

    def test_a_stale_rate_opens_the_window(self):
        w = self._measured(self.MBIT10, 0.05, 500_000)
        w.tick(5.0)
        assert w.size == 2
        w.tick(10.5)  # no busy-run sample for stale_s: the link is not the bottleneck now
        assert w.size == 8

    def test_probe_rtt_closes_to_one_until_a_clear_batch_lands(self):
        w = self._measured(self.MBIT10, 0.05, 500_000)
        w.observe_rate(self.MBIT10, now=10.5)
        w.tick(10.6)  # the last clear batch is more than probe_s old
        assert w.size == 1 and w.probes == 1
        w.observe_delivery(10.7, 11.2, 500_000, clear=False)
        assert w.size == 1  # still waiting for a batch with nothing ahead of it
        w.observe_delivery(11.2, 11.65, 500_000, clear=True)
        assert w.size == 2 and w.summary()["min"] == 2  # the probe is not part of the range

    def test_an_idle_link_behind_a_full_window_probes_up(self):
        w = self._measured(self.MBIT10, 0.1, 50_000)
        w.observe_rate(2e6 / 8, now=0.1)
        w.observe_rate(2e6 / 8, now=0.2)
        assert w.size == 2  # the median says 2 Mbit/s
        w.observe_delivery(1.0, 1.3, 50_000, clear=False, idle_link=True, limited=True)
        w.observe_delivery(1.1, 1.4, 50_000, clear=False, idle_link=True, limited=True)
        assert w.size == 4
        w.observe_delivery(1.2, 1.5, 50_000, clear=False, idle_link=True, limited=False)
        assert w.size == 4  # idle, but the window was not what held the edge back
        w.observe_rate(2e6 / 8, now=1.6)  # the link queues again: a fresh sample sizes it
        assert w.size == 2

    def test_rejects_bad_bounds(self):
        with pytest.raises(ValueError, match="cap"):
            LinkWindow(0)
        with pytest.raises(ValueError, match="floor"):
            LinkWindow(4, floor=0)
