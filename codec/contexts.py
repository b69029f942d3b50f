"""Context models for the entropy coder: per-channel table groups and a neighbor (row-above) context.

Symbol i of a stream is coded with table ``group[channel(i)] * nbuckets + bucket(sym[i - nb_dist])``.
``channel(i) = ((i * mult) // inner) % channels``; the neighbor term is used when ``nb_dist >= 32`` and
looks only inside the current block (earlier steps of the interleaved lanes), so blocks stay independent.
The bucket of a neighbor symbol s is its distance from the reference symbol ``nb_ref`` (the most common
one), d = |s - nb_ref|: with 2 buckets, d > 0; with 4, 0 for d = 0, 1 for d <= 2, 2 for d <= 8, else 3.
The kernels build that map (``ctx_check`` in ``csrc/contexts.c``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _kernels
from .errors import CodecError

MIN_NEIGHBOR_DISTANCE = 32
MAX_GROUPS = 64
MAX_BUCKETS = 4


@dataclass(frozen=True)
class ContextSpec:
    """How a stream picks its frequency table per symbol."""

    channels: int = 1
    inner: int = 1
    mult: int = 1
    group: np.ndarray | None = field(default=None, compare=False)  # uint8 per channel, or None
    nb_dist: int = 0
    nbuckets: int = 1
    nb_ref: int = 0

    @property
    def ngroups(self) -> int:
        return 1 if self.group is None else int(self.group.max()) + 1

    @property
    def ntables(self) -> int:
        return self.ngroups * (self.nbuckets if self.nb_dist else 1)

    @property
    def name(self) -> str:
        parts = []
        if self.group is not None:
            parts.append(f"groups{self.ngroups}")
        if self.nb_dist:
            parts.append(f"nb{self.nbuckets}@{self.nb_dist}")
        return "+".join(parts) or "order0"

    def kernel_spec(self) -> tuple:
        """The tuple the C kernels take (they build the neighbor map from ``nb_ref`` and ``nbuckets``)."""
        group = None if self.group is None else np.ascontiguousarray(self.group, np.uint8).tobytes()
        return (
            self.channels,
            self.inner,
            self.mult,
            group,
            self.nb_dist,
            int(self.nb_ref) if self.nb_dist else 0,
            self.nbuckets if self.nb_dist else 1,
        )

    def validate(self, n_symbols: int) -> None:
        """Reject specs a decoder must not run with (values come from the wire)."""
        if self.channels < 1 or self.inner < 1 or not 1 <= self.mult <= 8:
            raise CodecError("bad context layout")
        if self.group is not None:
            if self.group.size != self.channels or self.ngroups > MAX_GROUPS:
                raise CodecError("bad channel group map")
        if self.nb_dist:
            if self.nb_dist < MIN_NEIGHBOR_DISTANCE or self.nbuckets not in (2, 4):
                raise CodecError("bad neighbor context")
        if self.channels > max(n_symbols, 1) * self.mult:
            raise CodecError("more context channels than symbols")


ORDER0 = ContextSpec()


def channel_order(channel_counts: np.ndarray) -> np.ndarray:
    """Channels sorted by (zero-point share, mean symbol): neighbours in this order share tables well."""
    counts = channel_counts.astype(np.float64)
    totals = np.maximum(counts.sum(axis=1), 1.0)
    mode_share = counts.max(axis=1) / totals
    mean = counts @ np.arange(256, dtype=np.float64) / totals
    return np.lexsort((mean, mode_share))


def group_channels(order: np.ndarray, ngroups: int) -> np.ndarray:
    """Cut the channel order into ``ngroups`` equal runs: the group map (uint8 per channel)."""
    group = np.empty(order.size, np.uint8)
    group[order] = (np.arange(order.size) * ngroups // order.size).astype(np.uint8)
    return group


def group_counts(channel_counts: np.ndarray, group: np.ndarray, ngroups: int) -> np.ndarray:
    """Per-group symbol counts summed from per-channel counts (no pass over the data)."""
    out = np.empty((ngroups, 256), np.uint32)
    _kernels.group_sum(
        np.ascontiguousarray(channel_counts, np.uint32), np.ascontiguousarray(group, np.uint8), out
    )
    return out
