"""Encoder and Decoder actors: features <-> Arrow batches of codec frames.

The decoder is the receiving end of the link: it stamps each batch's arrival (its own clock, before any
work) with the batch's size on the wire, which is what the stream's goodput is measured from. A frame
that fails to decode rejects its sample, by id; the rest of the batch goes on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from actors.base import StageBase
from pipeline.stream.wire import (
    WireError,
    batch_wire_bytes,
    decode_tensor,
    encode_tensor,
    pack_batch,
    unpack_batch,
)

ERRORS_PER_BATCH = 3
"""Error texts a decoder reports per batch (the count of rejected samples is always exact)."""


def _warm_up() -> None:
    """Run one tiny batch through the codec and the Arrow packing, so the first real batch is not an
    outlier: the kernels load, and pyarrow's lazy import of pandas (about 0.3 s, on its first array
    built from NumPy) happens here, before the stream starts."""
    warm = np.linspace(-1.0, 1.0, 4 * 8 * 8, dtype=np.float32).reshape(1, 4, 8, 8)
    rb = pack_batch(np.zeros(1), [encode_tensor(warm, "ours")], np.zeros(1), np.zeros(1))
    batch_wire_bytes(rb)
    _, groups, _, _ = unpack_batch(rb)
    decode_tensor(groups[0].frame)


class Encoder(StageBase):
    """Encodes a batch's features, as one frame (``frame="batch"``) or one frame per sample, and packs
    them with the per-sample ids, labels and timestamps as one Arrow batch.

    A batch frame pays the codec's fixed costs (cost model, tables, header) once per batch and is
    smaller; its quantization range spans the batch, and a frame that fails to decode rejects all its
    samples. ``axis`` is the per-sample channel axis (it becomes ``axis + 1`` in a batch frame)."""

    stage = "encoder"

    def __init__(
        self,
        kind: str = "ours",
        bits: int = 8,
        level: int = 3,
        axis: int | None = None,
        replica: int = 0,
        frame: str = "batch",
        threads: int = 1,
    ) -> None:
        super().__init__(replica, threads)
        if frame not in ("batch", "sample"):
            raise ValueError(f"codec.frame must be batch or sample, got {frame!r}")
        self.kind, self.bits, self.level, self.frame = kind, bits, level, frame
        self.axis = axis if axis is None or axis < 0 else axis + 1  # of the (n, ...) tensors coded
        _warm_up()

    def process(self, batch: dict[str, Any], setting: dict[str, Any] | None = None):
        """``{"ids","feat","labels","t_src"}`` -> ``(meta, pyarrow.RecordBatch of frames)``.

        ``setting`` (``{"bits", "level", "axis"}``, from a rate controller) overrides the codec
        settings for this batch; each frame names its own, so decoders need nothing."""
        start = self._begin()
        feat = batch["feat"]
        n = len(feat)
        bits, level, axis = self.bits, self.level, self.axis
        if setting is not None:
            bits, level, axis = setting["bits"], setting["level"], setting.get("axis")
            axis = axis if axis is None or axis < 0 else axis + 1
        groups = [feat] if self.frame == "batch" else [feat[i : i + 1] for i in range(n)]
        frames = [encode_tensor(g, self.kind, bits, level, axis, self.threads) for g in groups]
        sizes = [len(g) for g in groups]
        rb = pack_batch(batch["ids"], frames, batch["labels"], batch["t_src"], sizes)
        payload = sum(len(f) for f in frames)
        meta = self._meta(start, n, int(feat.nbytes), payload, wire_bytes=batch_wire_bytes(rb))
        meta["setting"] = setting
        return meta, rb


class Decoder(StageBase):
    """Unpacks an Arrow batch and decodes its frames into a float32 feature tensor.

    ``feature_shape`` is one sample's feature shape: a frame holding ``k`` samples must decode to
    ``(k, *feature_shape)`` and may not declare more values than that, so a forged header cannot make
    the decoder allocate more than its samples need. A frame that fails rejects its samples by id."""

    stage = "decoder"

    def __init__(
        self, feature_shape: tuple[int, ...] | None = None, replica: int = 0, threads: int = 1
    ) -> None:
        super().__init__(replica, threads)
        self.feature_shape = None if feature_shape is None else tuple(feature_shape)
        self.elements = None if feature_shape is None else math.prod(feature_shape)
        _warm_up()

    def _decode(self, frame, samples: int) -> np.ndarray:
        bound = (1 << 31) if self.elements is None else samples * self.elements
        x = decode_tensor(frame, max_elements=bound, threads=self.threads)
        want = None if self.feature_shape is None else (samples, *self.feature_shape)
        if (want is not None and tuple(x.shape) != want) or x.ndim == 0 or len(x) != samples:
            raise WireError(
                f"frame holds shape {tuple(x.shape)}, expected {want or (samples, ...)}"
            )
        return x.astype(np.float32, copy=False)

    def process(self, rb) -> tuple[dict[str, Any], dict[str, Any]]:
        """``pyarrow.RecordBatch`` -> ``(meta, {"ids","feat","labels","t_src"})``; ``meta`` lists the
        rejected sample ids and the first few error texts."""
        start = self._begin()
        nbytes = batch_wire_bytes(rb)
        try:
            ids, groups, labels, t_src = unpack_batch(rb)
        except ValueError as exc:  # the batch's layout itself is broken: none of it can be trusted
            ids = np.asarray(rb.column("id").to_numpy(zero_copy_only=False), dtype=np.int64)
            meta = self._meta(
                start, len(ids), nbytes, 0, arrival=start, wire_bytes=nbytes,
                rejected_ids=ids.tolist(), errors=[f"batch: {type(exc).__name__}: {exc}"],
            )  # fmt: skip
            return meta, self._empty()
        keep, feats, rejected, errors = [], [], [], []
        for g in groups:
            rows = range(g.row, g.row + g.samples)
            try:
                feats.append(self._decode(g.frame, g.samples))
                keep.extend(rows)
            except ValueError as exc:  # CodecError and WireError are ValueErrors
                rejected.extend(int(ids[i]) for i in rows)
                if len(errors) < ERRORS_PER_BATCH:
                    first, last = int(ids[g.row]), int(ids[g.row + g.samples - 1])
                    where = f"sample {first}" if first == last else f"samples {first}..{last}"
                    errors.append(f"{where}: {type(exc).__name__}: {exc}")
        idx = np.asarray(keep, dtype=np.int64)
        out = {
            "ids": ids[idx],
            "feat": np.concatenate(feats) if feats else self._empty()["feat"],
            "labels": None if labels is None else labels[idx],
            "t_src": t_src[idx],
        }
        payload = sum(len(g.frame) for g in groups)
        meta = self._meta(
            start,
            len(ids),
            payload,
            int(out["feat"].nbytes),
            arrival=start,
            wire_bytes=nbytes,
            rejected_ids=rejected,
            errors=errors,
        )
        return meta, out

    def _empty(self) -> dict[str, Any]:
        """A batch of no samples (every frame was rejected)."""
        shape = self.feature_shape or (0,)
        return {
            "ids": np.zeros(0, np.int64),
            "feat": np.zeros((0, *shape), np.float32),
            "labels": None,
            "t_src": np.zeros(0),
        }
