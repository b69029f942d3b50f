"""The idempotent end of the stream: each sample id settles once, in memory bounded by what is in
flight."""

from __future__ import annotations

import numpy as np

from pipeline.stream.ledger import REJECTED_IDS_KEPT, DeliveryLedger, IdSet


def test_id_set_keeps_a_watermark_and_only_the_ids_above_it():
    s = IdSet()
    assert s.add(2) and s.add(0) and not s.add(2)
    assert s.watermark == 1 and s.pending_above == 1 and len(s) == 2
    assert s.add(1)  # fills the gap: the watermark jumps over 2
    assert s.watermark == 3 and s.pending_above == 0
    assert 0 in s and 2 in s and 3 not in s


def test_id_set_state_is_bounded_by_the_reordering_not_the_length():
    s = IdSet()
    rng = np.random.default_rng(0)
    peak = 0
    for start in range(0, 64 * 1600, 64):  # 1600 batches of 64, each settling in random order
        order = rng.permutation(64)
        for j in order:
            s.add(start + int(j))
            peak = max(peak, s.pending_above)
    assert len(s) == 64 * 1600 and s.pending_above == 0 and peak < 64


def test_duplicates_are_dropped_and_counted_not_recorded_twice():
    led = DeliveryLedger(6)
    assert led.deliver([0, 1, 2], [0.1, 0.2, 0.3], [True, False, True], [1, 1, -1]) == 3
    # the same batch again (a replay whose first result did arrive): nothing changes but the count
    assert led.deliver([0, 1, 2], [9.0, 9.0, 9.0], [False, False, False], [0, 0, 0]) == 0
    s = led.summary()
    assert s["delivered"] == 3 and s["duplicated"] == 0 and s["duplicates_dropped"] == 3
    assert s["accuracy"] == 2 / 3 and s["agreement"] == 1.0 and s["reference_samples"] == 2
    assert led.latency.quantile_ms(1.0) < 1000  # the repeat's 9 s latencies were not recorded


def test_rejected_and_lost_samples_are_accounted_separately():
    led = DeliveryLedger(10)
    led.deliver([0, 1, 2, 3], [0.0] * 4)
    led.reject([4, 5], ["sample 4: CodecError: checksum", "sample 5: CodecError: checksum"])
    led.reject([4], ["sample 4: CodecError: checksum"])  # replayed rejection: counted once
    led.deliver([5], [0.0])  # a sample settles on its first outcome
    led.deliver([11], [0.0])  # not a sample of this stream
    s = led.summary()
    assert (s["delivered"], s["rejected"], s["lost"]) == (4, 2, 4)
    assert s["rejected_ids"] == [4, 5] and s["unexpected"] == 1 and s["duplicates_dropped"] == 2
    assert s["reject_errors"] == [
        "sample 4: CodecError: checksum",
        "sample 5: CodecError: checksum",
    ]


def test_rejected_id_list_is_bounded_but_the_count_is_exact():
    led = DeliveryLedger(10_000)
    led.reject(list(range(5000)), ["e"] * 5000)
    s = led.summary()
    assert s["rejected"] == 5000 and len(s["rejected_ids"]) == REJECTED_IDS_KEPT
    assert s["rejected_ids_truncated"] and len(s["reject_errors"]) == 1


def test_unsettled_ids_are_the_gaps_as_ranges():
    led = DeliveryLedger(10, first_id=100)
    led.drop([100, 101, 104, 107])
    assert led.lost == 6
    assert led.unsettled_ranges() == [[102, 103], [105, 106], [108, 109]]
    assert led.unsettled_ranges(limit=2) == [[102, 103], [105, 106]]
    led.drop([102, 103, 105, 106, 108, 109])
    assert led.lost == 0 and led.unsettled_ranges() == []
    s = IdSet()
    assert s.gaps(3, 5) == [[0, 2]] and s.gaps(0, 5) == []
