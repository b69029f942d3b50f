"""Sample sources: deterministic, indexable by sample id, so any stage can rebuild a sample.

``digits``: the held-out split of scikit-learn's digits (labels known, accuracy is real).
``synthetic``: seeded Gaussian tensors of a fixed shape (no labels; fidelity = agreement).
Sample id ``i`` maps to item ``i % len(dataset)``, so streams can be longer than the set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SourceSpec:
    """What a source produces; small and picklable so actors can rebuild the source."""

    kind: str  # "digits" | "synthetic"
    shape: tuple[int, ...] = (3, 32, 32)
    seed: int = 0


class SampleSource:
    """Indexable samples: ``get(ids) -> (x float32 [n, *shape], labels int64 [n] or None)``."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None
        if spec.kind == "digits":
            from pipeline.train import digits_data

            _, _, x_te, y_te = digits_data()
            self._x = x_te.numpy().astype(np.float32)
            self._y = y_te.numpy().astype(np.int64)
        elif spec.kind != "synthetic":
            raise ValueError(f"data.source: unknown source {spec.kind!r}")

    @property
    def has_labels(self) -> bool:
        """True when the source knows the ground-truth label of each sample."""
        return self._y is not None

    @property
    def size(self) -> int | None:
        """Number of distinct samples (None for an unbounded synthetic source)."""
        return None if self._x is None else len(self._x)

    def get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Inputs and labels (or None) for sample ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._x is not None and self._y is not None:
            idx = ids % len(self._x)
            return self._x[idx], self._y[idx]
        out = np.empty((len(ids), *self.spec.shape), dtype=np.float32)
        for j, i in enumerate(ids):
            rng = np.random.default_rng([self.spec.seed, int(i)])
            out[j] = rng.standard_normal(self.spec.shape, dtype=np.float32)
        return out, None


def resolve_source(
    source: str, model_name: str, shape: list[int] | None, input_size: int | None, seed: int
) -> SourceSpec:
    """Pick the source for a config: ``auto`` = digits for digits models, synthetic otherwise."""
    kind = source
    if kind == "auto":
        kind = "digits" if model_name.startswith("digits") else "synthetic"
    if shape is None:
        side = input_size or 32
        shape = [1, side, side] if kind == "digits" else [3, side, side]
    if any(int(s) <= 0 for s in shape):
        raise ValueError(f"data.shape: dimensions must be positive, got {shape}")
    return SourceSpec(kind=kind, shape=tuple(int(s) for s in shape), seed=seed)


def arrival_offsets(
    n: int,
    rate_sps: float,
    pattern: str = "steady",
    period_s: float = 2.0,
    duty: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """When each of ``n`` samples arrives, in seconds after the first, at a mean of ``rate_sps``.

    ``steady``: evenly spaced. ``poisson``: exponential gaps (seeded). ``bursty``: a camera that
    fires in bursts, one per ``period_s``, each ``duty`` of the period long, at ``rate_sps / duty``
    within the burst and silent in between (the same mean rate)."""
    k = np.arange(n, dtype=np.float64)
    if pattern == "steady":
        return k / rate_sps
    if pattern == "poisson":
        gaps = np.random.default_rng([seed, 7]).exponential(1.0 / rate_sps, size=n)
        gaps[0] = 0.0
        return np.cumsum(gaps)
    if pattern == "bursty":
        per_period = rate_sps * period_s  # samples in one burst
        burst, within = np.divmod(k, per_period)
        return burst * period_s + within / per_period * duty * period_s
    raise ValueError(f"data.arrival: unknown pattern {pattern!r}")
