"""Encoder and Decoder actors: features <-> Arrow batches of codec frames.

The decoder is the receiving end of the link: it stamps each batch's arrival (its own clock, before any
work) with the batch's size on the wire, which is what the stream's goodput is measured from. A frame
that fails to decode rejects its sample, by id; the rest of the batch goes on.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from actors.base import StageBase
from pipeline.stream.wire import (
    batch_wire_bytes,
    decode_tensor,
    encode_tensor,
    pack_batch,
    unpack_batch,
)

ERRORS_PER_BATCH = 3
"""Error texts a decoder reports per batch (the count of rejected samples is always exact)."""


def _warm_up() -> None:
    """Load the kernels and make the first allocations, so the first real batch is not an outlier."""
    warm = np.linspace(-1.0, 1.0, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    decode_tensor(encode_tensor(warm, "ours"))


class Encoder(StageBase):
    """Encodes each sample's feature tensor into a frame and packs the batch as Arrow."""

    stage = "encoder"

    def __init__(
        self,
        kind: str = "ours",
        bits: int = 8,
        level: int = 3,
        axis: int | None = None,
        replica: int = 0,
    ) -> None:
        super().__init__(replica)
        self.kind, self.bits, self.level, self.axis = kind, bits, level, axis
        _warm_up()

    def process(self, batch: dict[str, Any]):
        """``{"ids","feat","labels","t_src"}`` -> ``(meta, pyarrow.RecordBatch of frames)``."""
        start = time.time()
        feat = batch["feat"]
        frames = [encode_tensor(f, self.kind, self.bits, self.level, self.axis) for f in feat]
        shapes = [tuple(f.shape) for f in feat]
        rb = pack_batch(batch["ids"], frames, batch["labels"], batch["t_src"], shapes)
        payload = sum(len(f) for f in frames)
        meta = self._meta(
            start, len(frames), int(feat.nbytes), payload, wire_bytes=batch_wire_bytes(rb)
        )
        return meta, rb


class Decoder(StageBase):
    """Unpacks an Arrow batch and decodes its frames into a float32 feature tensor.

    ``feature_shape`` is one sample's feature shape: a frame must decode to exactly that, and may not
    declare more values (so a forged header cannot make the decoder allocate more than a sample needs).
    """

    stage = "decoder"

    def __init__(self, feature_shape: tuple[int, ...] | None = None, replica: int = 0) -> None:
        super().__init__(replica)
        self.feature_shape = None if feature_shape is None else tuple(feature_shape)
        self.max_elements = (1 << 31) if feature_shape is None else math.prod(feature_shape)
        _warm_up()

    def _decode(self, frame) -> np.ndarray:
        x = decode_tensor(frame, max_elements=self.max_elements)
        if self.feature_shape is not None and tuple(x.shape) != self.feature_shape:
            raise ValueError(
                f"frame holds shape {tuple(x.shape)}, the stream carries {self.feature_shape}"
            )
        return x

    def process(self, rb) -> tuple[dict[str, Any], dict[str, Any]]:
        """``pyarrow.RecordBatch`` -> ``(meta, {"ids","feat","labels","t_src"})``; ``meta`` lists the
        rejected sample ids and the first few error texts."""
        start = time.time()
        nbytes = batch_wire_bytes(rb)
        ids, frames, labels, t_src = unpack_batch(rb)
        keep, feats, rejected, errors = [], [], [], []
        for j, frame in enumerate(frames):
            try:
                feats.append(self._decode(frame))
                keep.append(j)
            except ValueError as exc:  # CodecError and WireError are ValueErrors
                rejected.append(int(ids[j]))
                if len(errors) < ERRORS_PER_BATCH:
                    errors.append(f"sample {int(ids[j])}: {type(exc).__name__}: {exc}")
        shape = self.feature_shape or ((feats[0].shape) if feats else (0,))
        feat = np.stack(feats) if feats else np.zeros((0, *shape), np.float32)
        feat = feat.astype(np.float32, copy=False)
        idx = np.asarray(keep, dtype=np.int64)
        out = {
            "ids": ids[idx],
            "feat": feat,
            "labels": None if labels is None else labels[idx],
            "t_src": t_src[idx],
        }
        payload = sum(len(f) for f in frames)
        meta = self._meta(
            start,
            len(ids),
            payload,
            int(feat.nbytes),
            arrival=start,
            wire_bytes=nbytes,
            rejected_ids=rejected,
            errors=errors,
        )
        return meta, out
