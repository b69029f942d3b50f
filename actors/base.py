"""What every stage actor shares: readiness and placement info, thread limits, and the per-call
``meta`` record the driver aggregates (the actors themselves keep nothing per batch)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

from pipeline.stream.metrics import StageExporter, process_rss_bytes, where_am_i

_POOL_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Size every thread pool of this process to ``threads`` (an actor's CPU request): the BLAS and
    OpenMP pools (``threadpoolctl``, and the environment for pools made later), Arrow's CPU pool, and
    torch's intra-op and inter-op pools once torch is loaded."""
    n = max(1, int(threads))
    for var in _POOL_VARS:
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    import pyarrow as pa

    pa.set_cpu_count(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        with contextlib.suppress(RuntimeError):  # already set, or parallel work already ran
            torch.set_num_interop_threads(1)


MMAP_THRESHOLD = 256 << 20
"""Allocations below this come from the heap, not from fresh ``mmap`` pages."""
TRIM_THRESHOLD = 512 << 20
"""Free heap up to this size is kept for the next batch instead of being given back to the kernel."""


def tune_allocator() -> bool:
    """Fix glibc malloc's thresholds so a stage's per-batch buffers are reused, not returned to the
    kernel after every call and faulted in again on the next (measured in a Ray worker: about 1,000
    page faults and 2-4 ms of system time per tail call on the demo model, none after this). Returns
    False where there is no glibc ``mallopt``."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
        return bool(
            libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)
            and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False


class StageBase:
    """Base of the stage actors. Each call returns ``(meta, data)``; ``meta`` is small (timings,
    counts, bytes, RSS) so the driver can fetch it without touching the data. ``threads`` is the
    actor's CPU request: its pools are sized to it (see :func:`limit_threads`)."""

    stage = "stage"

    def __init__(self, replica: int = 0, threads: int = 1) -> None:
        self.replica = replica
        self.threads = max(1, int(threads))
        limit_threads(self.threads)
        tune_allocator()
        self._exporter = StageExporter(self.stage, replica)

    def ready(self) -> dict[str, Any]:
        """Placement info once the actor is constructed (node id, ip, pid, RSS); also the driver's
        probe that a restarted actor is back."""
        return {
            **where_am_i(),
            "rss": process_rss_bytes(),
            "threads": self.threads,
            **self.placement_notes(),
        }

    def placement_notes(self) -> dict[str, Any]:
        """Extra placement facts for the report (a codec stage's device: see ``actors.codec_stages``)."""
        return {}

    def _begin(self) -> float:
        """Start timing a call: its wall-clock start (returned) and this thread's CPU clock."""
        self._cpu0 = time.thread_time()
        return time.time()

    def _meta(self, start: float, n: int, bytes_in: int = 0, bytes_out: int = 0, **extra: Any):
        """The call's record: start and end (``time.time()``), the thread's CPU seconds since
        :meth:`_begin`, samples, bytes, this process's RSS."""
        end = time.time()
        self._exporter.observe(n, end - start)
        cpu = time.thread_time() - getattr(self, "_cpu0", time.thread_time())
        return {
            "t_start": start,
            "t_end": end,
            "cpu_s": cpu,
            "n": n,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "rss": process_rss_bytes(),
            **extra,
        }
