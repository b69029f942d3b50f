"""Encoder and Decoder actors: features <-> Arrow batches of codec frames."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from actors.base import StageBase
from pipeline.stream.wire import decode_tensor, encode_tensor, pack_batch, unpack_batch


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
        # warm-up (loads kernels, first allocations) so the first real batch is not an outlier
        warm = np.linspace(-1.0, 1.0, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
        decode_tensor(encode_tensor(warm, kind, bits, level, None))

    def process(self, batch: dict[str, Any]):
        """``{"ids","feat","labels","t_src"}`` -> ``pyarrow.RecordBatch`` of frames."""
        start = time.time()
        feat = batch["feat"]
        frames = [encode_tensor(f, self.kind, self.bits, self.level, self.axis) for f in feat]
        shapes = [tuple(f.shape) for f in feat]
        rb = pack_batch(batch["ids"], frames, batch["labels"], batch["t_src"], shapes)
        self.rec.record(
            start, time.time(), len(frames), int(feat.nbytes), sum(len(f) for f in frames)
        )
        return rb


class Decoder(StageBase):
    """Unpacks an Arrow batch and decodes its frames back into a float32 feature tensor."""

    stage = "decoder"

    def __init__(self, replica: int = 0) -> None:
        super().__init__(replica)
        warm = np.linspace(-1.0, 1.0, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
        decode_tensor(encode_tensor(warm, "ours"))  # warm-up, as in the Encoder

    def process(self, rb) -> dict[str, Any]:
        """``pyarrow.RecordBatch`` -> ``{"ids","feat","labels","t_src"}``."""
        start = time.time()
        ids, frames, labels, t_src = unpack_batch(rb)
        feats = [decode_tensor(f) for f in frames]
        feat = np.stack(feats).astype(np.float32, copy=False)
        self.rec.record(start, time.time(), len(ids), sum(len(f) for f in frames), int(feat.nbytes))
        return {"ids": ids, "feat": feat, "labels": labels, "t_src": t_src}
