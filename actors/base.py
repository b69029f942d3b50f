"""What every stage actor shares: readiness and placement info, thread limits, and the per-call
``meta`` record the driver aggregates (the actors themselves keep nothing per batch)."""

from __future__ import annotations

import time
from typing import Any

from pipeline.stream.metrics import StageExporter, process_rss_bytes, where_am_i


class StageBase:
    """Base of the stage actors. Each call returns ``(meta, data)``; ``meta`` is small (timings,
    counts, bytes, RSS) so the driver can fetch it without touching the data."""

    stage = "stage"

    def __init__(self, replica: int = 0, threads: int = 1) -> None:
        self.replica = replica
        self._threads = threads
        self._exporter = StageExporter(self.stage, replica)

    def _limit_threads(self) -> None:
        """Keep torch to ``threads`` intra-op threads (many actors share few cores)."""
        import torch

        torch.set_num_threads(max(1, self._threads))

    def ready(self) -> dict[str, Any]:
        """Placement info once the actor is constructed (node id, ip, pid, RSS); also the driver's
        probe that a restarted actor is back."""
        return {**where_am_i(), "rss": process_rss_bytes()}

    def _meta(self, start: float, n: int, bytes_in: int = 0, bytes_out: int = 0, **extra: Any):
        """The call's record: start and end (``time.time()``), samples, bytes, this process's RSS."""
        end = time.time()
        self._exporter.observe(n, end - start)
        return {
            "t_start": start,
            "t_end": end,
            "n": n,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "rss": process_rss_bytes(),
            **extra,
        }
