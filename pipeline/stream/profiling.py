"""Measure a rate-fidelity profile: for each codec setting, the bytes one sample costs, the top-1
agreement with the uncompressed model and the mean KL divergence from its outputs, on inputs the
caller chooses.

Batches are coded the way the stream codes them (one frame per batch, the per-sample channel axis
shifted by the batch axis), so the bytes are the stream's. Used offline by
``python -m pipeline.evaluation.evaluate --profile`` and by the stream itself at start-up when no
profile file is given (``rate.profile``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from codec import CodecSettings
from pipeline.stream.rate import ProfileEntry, RateProfile


def profile_settings(
    bits: Sequence[int], level: int, channel_axis: int | None, clip: bool = True
) -> list[CodecSettings]:
    """Every bit width, per tensor and (when the features have a channel axis) per channel, each
    with the full range and, below 8 bits (where it changes anything), ``clip="mse"``."""
    axes = [None] if channel_axis is None else [None, channel_axis]
    out = []
    for b in bits:
        for axis in axes:
            out.append(CodecSettings(int(b), int(level), axis))
            if clip and b < 8:
                out.append(CodecSettings(int(b), int(level), axis, "mse"))
    return out


def _last(logits: Any) -> Any:
    """One row of logits per sample (a sequence model's last position)."""
    return logits[:, -1] if logits.ndim > 2 else logits


def _kl(ref: Any, test: Any) -> float:
    """Summed KL(softmax(ref) || softmax(test)) over the rows."""
    import torch.nn.functional as F

    lr, lt = F.log_softmax(ref.double(), -1), F.log_softmax(test.double(), -1)
    return float((lr.exp() * (lr - lt)).sum(-1).clamp_min(0.0).sum())


def build_profile(
    head: Callable[[Any], Any],
    tail: Callable[[Any], Any],
    inputs: np.ndarray,
    settings: Sequence[CodecSettings],
    *,
    model: str,
    split: str,
    source: str,
    batch: int = 32,
) -> RateProfile:
    """Run ``inputs`` through ``head``, every setting's codec round trip and ``tail``; fidelity is
    top-1 agreement with ``tail(head(x))`` (no codec), bytes are frame payload per sample."""
    import torch

    from pipeline.stream.wire import batch_settings, decode_tensor, encode_tensor

    feats, refs = [], []
    with torch.inference_mode():
        for k in range(0, len(inputs), batch):
            f = head(torch.from_numpy(np.ascontiguousarray(inputs[k : k + batch]))).float()
            feats.append(f.numpy())
            refs.append(_last(tail(f)))
    n = max(1, len(inputs))
    entries = []
    for s in settings:
        coded = batch_settings(s)
        nbytes, same, kl = 0, 0, 0.0
        with torch.inference_mode():
            for f, ref in zip(feats, refs, strict=True):
                frame = encode_tensor(f, "ours", coded)
                nbytes += len(frame)
                out = _last(tail(torch.from_numpy(decode_tensor(frame))))
                same += int((out.argmax(-1) == ref.argmax(-1)).sum())
                kl += _kl(ref, out)
        entries.append(ProfileEntry(s, nbytes / n, same / n, kl / n))
    return RateProfile(model, split, "agreement", int(len(inputs)), source, entries)
