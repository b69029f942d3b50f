"""Sink actor: where results land, on the cloud side. For each batch it measures end-to-end latency,
checks predictions against labels, and for the first ``reference_samples`` ids against the uncompressed
model (head then tail on the same inputs, no codec). It keeps no state across batches: deduplication by
sample id and the aggregates live in the driver's ledger, so a restarted sink loses nothing."""

from __future__ import annotations

from typing import Any

import numpy as np

from actors.base import StageBase
from pipeline.stream.data import SampleSource, SourceSpec


class Sink(StageBase):
    """``receive({"ids","preds","labels","t_src"})`` -> the batch's per-sample results."""

    stage = "sink"

    def __init__(
        self, source_spec: SourceSpec | None = None, factory=None, reference_samples: int = 0
    ) -> None:
        super().__init__(0)
        self.reference_samples = reference_samples if factory and source_spec else 0
        self._ref: tuple[Any, Any, SampleSource] | None = None
        if self.reference_samples:
            import torch

            torch.set_num_threads(1)
            head, tail = factory()
            self._ref = (head.eval(), tail.eval(), SampleSource(source_spec))

    def _reference(self, ids: np.ndarray) -> np.ndarray:
        """Top-1 of the uncompressed model on samples ``ids``."""
        import torch

        assert self._ref is not None
        head, tail, src = self._ref
        x, _ = src.get(ids)
        with torch.inference_mode():
            p = tail(head(torch.from_numpy(x))).argmax(-1)
        return (p[..., -1] if p.ndim > 1 else p).numpy()

    def receive(self, batch: dict[str, Any]) -> tuple[dict[str, Any], None]:
        """Results of one batch, as ``(meta, None)``: ids, latency (s), correct (vs labels, or None)
        and agree (1/0 with the uncompressed model for reference ids, -1 for the others)."""
        now = self._begin()
        ids = np.asarray(batch["ids"], dtype=np.int64)
        preds = np.asarray(batch["preds"])
        labels = batch["labels"]
        latency = now - np.asarray(batch["t_src"], dtype=np.float64)
        correct = None if labels is None else (preds == np.asarray(labels)).tolist()
        agree = np.full(len(ids), -1, dtype=np.int64)
        checked = np.flatnonzero(ids < self.reference_samples)
        if checked.size:
            agree[checked] = self._reference(ids[checked]) == preds[checked]
        meta = self._meta(now, len(ids))
        meta.update(ids=ids.tolist(), latency_s=latency.tolist(), correct=correct)
        meta["agree"] = agree.tolist()
        return meta, None
