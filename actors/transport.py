"""Transport actor (async): puts each Arrow batch on the link, FIFO, and releases it on arrival.

In ``emulated`` mode the batch's Arrow IPC size is serialized on a
:class:`pipeline.stream.link.EmulatedLink` (token bucket / trace, delay, jitter, loss); the call
returns once the batch has *arrived*, while the next batch may already be transmitting, so
propagation delay overlaps with serialization. In ``real`` mode the batch passes through and
Ray moves it between nodes over the real network; only bytes and times are recorded.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from actors.base import StageBase
from pipeline.stream.wire import batch_wire_bytes


class Transport(StageBase):
    """``send(batch, seq)`` must be called with seq = 0, 1, 2, ...; reservations follow seq order."""

    stage = "transport"

    def __init__(self, link_spec: Any | None = None, replica: int = 0) -> None:
        super().__init__(replica)
        self.link = None
        if link_spec is not None:
            from pipeline.stream.link import EmulatedLink

            self.link = EmulatedLink(link_spec)
        self._next_seq = 0
        self._turn: asyncio.Condition | None = None
        self.tx: list[dict[str, float]] = []

    async def send(self, rb, seq: int):
        """Transmit batch number ``seq`` after all earlier ones; return it at its arrival time."""
        if self._turn is None:
            self._turn = asyncio.Condition()
        start = time.time()
        async with self._turn:
            await self._turn.wait_for(lambda: self._next_seq == seq)
            nbytes = batch_wire_bytes(rb)
            # Created in seq order, so the link books reservations in seq order.
            reserve_t = time.monotonic()
            task = asyncio.ensure_future(self.link.transmit(nbytes)) if self.link else None
            self._next_seq += 1
            self._turn.notify_all()
        rec: dict[str, float] = {"seq": seq, "bytes": nbytes, "samples": rb.num_rows}
        if task is not None:
            delivery = await task
            rec["tx_done"] = time.monotonic()  # observed end of serialization
            rec["tx_done_planned"] = delivery.tx_done
            rec["tx_start_planned"] = delivery.tx_start
            # queued: the link was still busy with an earlier batch when this one was booked
            rec["queued"] = float(delivery.tx_start > reserve_t + 1e-3)
            rec["wire_bytes"] = delivery.wire_bytes
            rec["retransmitted_bytes"] = delivery.retransmitted_bytes
            wait = delivery.arrival - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        else:
            rec["tx_done"] = time.monotonic()
            rec["wire_bytes"] = nbytes
        rec["arrival"] = time.monotonic()
        self.tx.append(rec)
        self.rec.record(start, time.time(), rb.num_rows, nbytes, nbytes)
        return rb

    def link_stats(self) -> dict[str, Any]:
        """Per-batch transmissions plus the link's own counters (None in real mode)."""
        return {"tx": list(self.tx), "link": self.link.stats() if self.link else None}
