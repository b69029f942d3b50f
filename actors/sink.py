"""Sink actor: where results land, on the cloud side. For each batch it measures end-to-end latency,
checks predictions against labels, and for the first ``reference_samples`` ids against the uncompressed
model (head then tail on the same inputs, no codec). It keeps no state across batches: deduplication by
sample id and the aggregates live in the driver's ledger, so a restarted sink loses nothing.

Text models are checked per sample against the uncompressed model on the same sentence: a sentence
encoder by the cosine of its embedding, a decoder LM by next-token agreement at every valid position and
the difference in the log-likelihood of its own tokens
(``pipeline.evaluation.fidelity.token_fidelity``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from actors.base import StageBase
from pipeline.stream.data import SampleSource, SourceSpec

TEXT_FIELDS = ("cosine", "positions", "agree", "transitions", "loglik_delta")
"""Per-sample fields of a text model's fidelity record (None where a sample was not checked)."""


def _results(batch: dict[str, Any]) -> dict[str, list[Any]]:
    """Each sample's prediction, as lists for the output rows: the top classes and their scores, a
    sentence embedding, or the predicted token (whichever the tail gave)."""
    out: dict[str, list[Any]] = {}
    for key in ("top_k", "scores", "embedding"):
        if batch.get(key) is not None:
            out[key] = np.asarray(batch[key]).tolist()
    if batch.get("preds") is not None and "top_k" not in out:
        out["preds"] = np.asarray(batch["preds"]).tolist()
    if batch.get("labels") is not None:
        out["labels"] = np.asarray(batch["labels"]).tolist()
    return out


class Sink(StageBase):
    """``receive({"ids","preds","labels","t_src"})`` -> the batch's per-sample results."""

    stage = "sink"

    def __init__(
        self,
        source_spec: SourceSpec | None = None,
        factory=None,
        reference_samples: int = 0,
        results: bool = False,
    ) -> None:
        super().__init__(0)
        self.results = results  # pass each sample's prediction on to the driver (the output rows)
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
        got = src.load(ids)
        if len(got.good) < len(ids):  # an input that no longer loads: not checked (-1)
            return np.full(len(ids), -1, dtype=np.int64)
        with torch.inference_mode():
            p = tail(head(torch.from_numpy(np.asarray(got.x)))).argmax(-1)
        return (p[..., -1] if p.ndim > 1 else p).numpy()

    def _reference_text(
        self, batch: dict[str, Any], ids: np.ndarray, checked: np.ndarray, agree: np.ndarray
    ) -> dict[str, list[Any]]:
        """Text fidelity of samples ``checked`` (positions in the batch) against the uncompressed model;
        fills ``agree`` with the next-token agreement after each prompt (decoder LMs)."""
        import torch

        from actors.model_stages import last_valid
        from pipeline.evaluation.fidelity import cosine_per_sample, mean_pool, token_fidelity

        assert self._ref is not None
        head, tail, src = self._ref
        rec: dict[str, list[Any]] = {k: [None] * len(ids) for k in TEXT_FIELDS}
        x, _ = src.get(ids[checked])
        t = {k: torch.from_numpy(v) for k, v in x.items()}
        with torch.inference_mode():
            y = tail(head(**t))
        mask = t["attention_mask"]
        if "embedding" in batch:
            test = torch.from_numpy(np.asarray(batch["embedding"])[checked])
            cos = cosine_per_sample(mean_pool(y, mask), test).tolist()
            for j, c in zip(checked, cos, strict=True):
                rec["cosine"][j] = c
            return rec
        ref_next = y[torch.arange(len(checked)), last_valid(mask)].argmax(-1).numpy()
        agree[checked] = ref_next == np.asarray(batch["preds"])[checked]
        for r, j in enumerate(checked):
            valid = mask[r] != 0
            test = torch.from_numpy(batch["valid_logits"][j])
            one = token_fidelity(y[r][valid], test, t["input_ids"][r][valid])
            for k in TEXT_FIELDS[1:]:
                rec[k][j] = one[k]
        return rec

    def receive(self, batch: dict[str, Any]) -> tuple[dict[str, Any], None]:
        """Results of one batch, as ``(meta, None)``: ids, latency (s), correct (vs labels, or None)
        and agree (1/0 with the uncompressed model for reference ids, -1 for the others); a text model
        adds ``text``, its per-sample fidelity (:data:`TEXT_FIELDS`)."""
        now = self._begin()
        ids = np.asarray(batch["ids"], dtype=np.int64)
        preds = None if batch["preds"] is None else np.asarray(batch["preds"])
        labels = batch["labels"]
        latency = now - np.asarray(batch["t_src"], dtype=np.float64)
        correct = (
            None if labels is None or preds is None else (preds == np.asarray(labels)).tolist()
        )
        agree = np.full(len(ids), -1, dtype=np.int64)
        checked = np.flatnonzero(ids < self.reference_samples)
        text = "embedding" in batch or "valid_logits" in batch
        rec = None
        if checked.size and text:
            rec = self._reference_text(batch, ids, checked, agree)
        elif checked.size:
            ref = self._reference(ids[checked])
            agree[checked] = np.where(ref >= 0, ref == preds[checked], -1)
        meta = self._meta(now, len(ids))
        meta.update(ids=ids.tolist(), latency_s=latency.tolist(), correct=correct)
        meta["agree"] = agree.tolist()
        if text:
            meta["text"] = rec
        if self.results:
            meta["results"] = _results(batch)
        return meta, None
