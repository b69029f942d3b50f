"""Sink actor: collects predictions by sample id, detects loss / duplicates, measures fidelity."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from actors.base import StageBase
from pipeline.stream.data import SampleSource, SourceSpec


class Sink(StageBase):
    """Receives ``{"ids","preds","labels","t_src"}`` batches; ``summary()`` gives the results."""

    stage = "sink"

    def __init__(self, expected: int, source_spec: SourceSpec | None = None, factory=None) -> None:
        super().__init__(0)
        self.expected = expected
        self.source_spec = source_spec
        self.factory = factory
        self.counts: Counter[int] = Counter()
        self.preds: dict[int, int] = {}
        self.labels: dict[int, int] = {}
        self.latency_s: list[float] = []
        self.first: float | None = None
        self.last: float | None = None

    def receive(self, batch: dict[str, Any]) -> int:
        """Record one batch; returns how many samples it carried (for the driver's progress)."""
        now = time.time()
        ids, preds, labels = batch["ids"], batch["preds"], batch["labels"]
        for j, i in enumerate(ids.tolist()):
            self.counts[i] += 1
            self.preds[i] = int(preds[j])
            if labels is not None:
                self.labels[i] = int(labels[j])
        self.latency_s.extend((now - np.asarray(batch["t_src"], dtype=np.float64)).tolist())
        self.first = now if self.first is None else self.first
        self.last = now
        self.rec.record(now, time.time(), len(ids))
        return len(ids)

    def summary(self, reference_samples: int = 0) -> dict[str, Any]:
        """Delivery accounting, end-to-end latencies and fidelity (accuracy and/or agreement)."""
        lost = sum(1 for i in range(self.expected) if self.counts[i] == 0)
        duplicated = sum(c - 1 for c in self.counts.values() if c > 1)
        unexpected = sum(1 for i in self.counts if not 0 <= i < self.expected)
        out: dict[str, Any] = {
            "delivered": len(self.counts),
            "lost": lost,
            "duplicated": duplicated,
            "unexpected": unexpected,
            "latency_s": self.latency_s,
            "first_arrival": self.first,
            "last_arrival": self.last,
            "fidelity": self._fidelity(reference_samples),
        }
        return out

    def _fidelity(self, reference_samples: int) -> dict[str, Any]:
        fid: dict[str, Any] = {"accuracy": None, "agreement": None, "reference_samples": 0}
        if self.labels:
            ids = sorted(self.labels)
            fid["accuracy"] = float(np.mean([self.preds[i] == self.labels[i] for i in ids]))
            fid["labelled_samples"] = len(ids)
        if reference_samples > 0 and self.factory is not None and self.source_spec is not None:
            ids = np.asarray(sorted(self.preds)[:reference_samples], dtype=np.int64)
            ref = self._reference_predictions(ids)
            got = np.asarray([self.preds[int(i)] for i in ids])
            fid["agreement"] = float(np.mean(ref == got)) if len(ids) else None
            fid["reference_samples"] = len(ids)
            if self.labels:
                fid["reference_accuracy"] = float(
                    np.mean([ref[k] == self.labels[int(i)] for k, i in enumerate(ids)])
                )
        return fid

    def _reference_predictions(self, ids: np.ndarray) -> np.ndarray:
        """Top-1 of the uncompressed model (head then tail, no codec) on samples ``ids``."""
        import torch

        torch.set_num_threads(1)
        head, tail = self.factory()
        head.eval()
        tail.eval()
        x, _ = SampleSource(self.source_spec).get(ids)
        preds = []
        with torch.inference_mode():
            for k in range(0, len(ids), 64):
                logits = tail(head(torch.from_numpy(x[k : k + 64])))
                p = logits.argmax(-1)
                preds.append((p[..., -1] if p.ndim > 1 else p).numpy())
        return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
