"""Unit tests of the flow-control policies (no Ray)."""

from __future__ import annotations

import pytest

from pipeline.stream.flow import AdaptiveBatcher, CreditWindow, StateTimer


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
