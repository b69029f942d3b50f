"""Transport actor (async): puts each Arrow batch on the link in ticket order, and returns it on arrival.

In ``emulated`` mode the batch's Arrow IPC size is serialized on a
:class:`pipeline.stream.link.EmulatedLink` (token bucket or trace, delay, jitter, loss); the call
returns once the batch has *arrived*, while the next batch may already be transmitting, so propagation
delay overlaps with serialization. With ``link.corrupt`` each frame may get one bit flipped in transit.
With ``link.outages`` the link is down in the configured windows: a batch waits or pauses there, and
every record names the windows on this process's wall clock (``outages_wall``, fixed by the link's
first transmission) and the down time the batch lived through (``outage_s``), so the driver can tell
a configured outage from a stage that hangs.
In ``real`` mode the batch passes through and Ray moves it between nodes over the real network.

Ordering survives failures: the driver gives every send a ticket (increasing, a replayed batch gets a
new one) and the smallest ticket it still has outstanding here (``floor``). A fresh actor (after a
restart) therefore starts at the right ticket, and a ticket that never comes (its call died with the
previous incarnation) is skipped after ``reorder_timeout_s`` instead of blocking the link forever.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from actors.base import StageBase
from pipeline.stream.wire import batch_wire_bytes, corrupt_frames


class Transport(StageBase):
    """``send(batch, ticket, floor)``: batches enter the link in ticket order. Returns ``(meta,
    None)`` with ``meta["passthrough"]`` when the batch arrived unchanged (the receiver reads the
    sender's object), or ``(meta, changed batch)``."""

    stage = "transport"

    def __init__(
        self, link_spec: Any | None = None, replica: int = 0, reorder_timeout_s: float = 10.0
    ) -> None:
        super().__init__(replica)
        self.link = None
        self.spec = link_spec
        if link_spec is not None:
            from pipeline.stream.link import EmulatedLink

            self.link = EmulatedLink(link_spec, clock=time.time)
        self.reorder_timeout_s = reorder_timeout_s
        self._next = 0
        self._turn: asyncio.Condition | None = None

    async def _wait_turn(self, ticket: int, floor: int) -> int:
        """Wait until every ticket before ``ticket`` went on the link; returns 1 if one was skipped."""
        assert self._turn is not None
        self._next = max(self._next, floor)
        self._turn.notify_all()
        try:
            await asyncio.wait_for(
                self._turn.wait_for(lambda: ticket <= self._next), self.reorder_timeout_s
            )
            return 0
        except TimeoutError:
            self._next = max(self._next, ticket)  # the missing ticket is not coming: go on
            return 1

    async def send(self, rb, ticket: int, floor: int = 0):
        """Transmit batch ``ticket`` after all earlier ones; returns ``(meta, batch)`` at arrival."""
        if self._turn is None:
            self._turn = asyncio.Condition()
        start = time.time()
        nbytes = batch_wire_bytes(rb)
        async with self._turn:
            gaps = await self._wait_turn(ticket, floor)
            # booked while holding the turn, so the link books reservations in ticket order
            booked = time.time()
            task = asyncio.ensure_future(self.link.transmit(nbytes)) if self.link else None
            self._next = max(self._next, ticket + 1)
            self._turn.notify_all()
        extra: dict[str, Any] = {"ticket": ticket, "reorder_gaps": gaps, "wire_bytes": nbytes}
        if task is not None:
            delivery = await task
            # the link was still busy with an earlier batch when this one was handed to it (what a
            # sender sees as a non-empty send queue)
            # (an outage in its way is not a busy link: the batch starts a new busy run, so no rate
            # sample spans the outage)
            extra["queued"] = delivery.tx_start > booked + 1e-3 and delivery.outage_s == 0
            extra["tx_start_planned"] = delivery.tx_start
            extra["tx_done_planned"] = delivery.tx_done
            extra["busy_s"] = delivery.tx_done - delivery.tx_start  # an outage's pause left out:
            extra["busy_s"] -= self.link.outages.down_between(delivery.tx_start, delivery.tx_done)
            extra["wire_bytes"] = delivery.wire_bytes
            extra["retransmitted_bytes"] = delivery.retransmitted_bytes
            if self.spec.outages:
                extra["outage_s"] = delivery.outage_s
                extra["outages_wall"] = [list(w) for w in self.link.outage_windows()]
            wait = delivery.arrival - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.spec.corrupt > 0:
                rng = np.random.default_rng([self.spec.seed, ticket])
                rb, hit = corrupt_frames(rb, self.spec.corrupt, rng)
                extra["corrupted_frames"] = hit
        meta = self._meta(start, rb.num_rows, nbytes, nbytes, **extra)
        if not extra.get("corrupted_frames"):
            # unchanged in transit: the receiver reads the batch the sender handed over, so it is
            # not serialized and stored a second time
            meta["passthrough"] = True
            return meta, None
        return meta, rb

    def configured_mbps(self) -> float | None:
        """The emulated link's configured rate (a trace's mean), None for a real or unlimited link."""
        return None if self.link is None else self.link.configured_mbps
