"""Common behaviour of all stage actors: a metrics recorder, placement info, readiness."""

from __future__ import annotations

import os
from typing import Any

from pipeline.stream.metrics import StageRecorder, where_am_i


class StageBase:
    """Owns a :class:`StageRecorder`; subclasses call ``self.rec.record(...)`` per batch."""

    stage = "stage"

    def __init__(self, replica: int = 0, threads: int = 1) -> None:
        self.replica = replica
        self.rec = StageRecorder(self.stage, replica)
        self._threads = threads

    def _limit_threads(self) -> None:
        """Keep torch to ``threads`` intra-op threads (many actors share few cores)."""
        import torch

        torch.set_num_threads(max(1, self._threads))

    def ready(self) -> dict[str, Any]:
        """Placement info once the actor is constructed (node id, ip, pid)."""
        return where_am_i()

    def pid(self) -> int:
        """Process id, for the driver's memory sampler."""
        return os.getpid()

    def stats(self) -> dict[str, Any]:
        """All call records plus placement info."""
        return self.rec.snapshot()
