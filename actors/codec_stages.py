"""Encoder and Decoder actors: features <-> Arrow batches of codec frames.

The decoder is the receiving end of the link: it stamps each batch's arrival (its own clock, before any
work) with the batch's size on the wire, which is what the stream's goodput is measured from. A frame
that fails to decode rejects its sample, by id; the rest of the batch goes on.

A transformer head's feature (a dict of hidden states, attention mask and position ids) is coded as the
hidden rows of its valid tokens only, with the mask and positions in their own columns
(``pipeline.stream.wire``); the decoder rebuilds the padded dict the tail takes.

``use_gpu`` (``placement.gpu_stages`` naming the stage) runs the codec's device path (``codec.gpu``):
the same frames on the wire. The features still arrive from the head, and leave for the tail, as host
arrays. Where no CUDA device (or numba-cuda) is there the stage runs the CPU codec and says so: one
line, ``codec_device``, in its ``ready()`` answer (the report's placement) and each call's meta.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from actors.base import StageBase
from codec import CodecSettings
from pipeline.stream.data import nbytes
from pipeline.stream.wire import (
    WireError,
    add_text_columns,
    batch_settings,
    batch_wire_bytes,
    decode_tensor,
    encode_tensor,
    is_text_batch,
    pack_batch,
    text_columns,
    unpack_batch,
    valid_rows,
)

ERRORS_PER_BATCH = 3
"""Error texts a decoder reports per batch (the count of rejected samples is always exact)."""


def codec_device(stage: str, use_gpu: bool) -> tuple[str, str | None]:
    """The device a codec stage codes on (``"cuda"`` or ``"cpu"``) and its report line (None when the
    GPU was not asked for); a missing device or numba-cuda falls back to the CPU, said on stderr too."""
    if not use_gpu:
        return "cpu", None
    import codec

    try:
        codec.device.gpu_module()
    except codec.CodecError as exc:
        line = f"cpu: the CPU codec runs (placement.gpu_stages names the {stage}, but {exc})"
        print(f"{stage}: {line}", file=sys.stderr)
        return "cpu", line
    return "cuda", "cuda (codec.gpu)"


def _host(x: Any) -> np.ndarray:
    """A decoded array on the host (a device array is copied back)."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        return x.cpu().numpy()
    return x.copy_to_host()


def _warm_up() -> None:
    """Run one tiny batch through the codec and the Arrow packing, so the first real batch is not an
    outlier: the kernels load, and pyarrow's lazy import of pandas (about 0.3 s, on its first array
    built from NumPy) happens here, before the stream starts."""
    warm = np.linspace(-1.0, 1.0, 4 * 8 * 8, dtype=np.float32).reshape(1, 4, 8, 8)
    rb = pack_batch(np.zeros(1), [encode_tensor(warm, "ours")], np.zeros(1), np.zeros(1))
    batch_wire_bytes(rb)
    _, groups, _, _ = unpack_batch(rb)
    decode_tensor(groups[0].frame)


class _CodecStage(StageBase):
    """What the encoder and decoder share: the device they code on and its report line."""

    device_line: str | None = None

    def placement_notes(self) -> dict[str, Any]:
        return {} if self.device_line is None else {"codec_device": self.device_line}


class Encoder(_CodecStage):
    """Encodes a batch's features, as one frame (``frame="batch"``) or one frame per sample, and packs
    them with the per-sample ids, labels and timestamps as one Arrow batch. ``settings`` are the codec's
    (kind ``ours``); the ``zstd`` and ``int8-zstd`` baselines take ``zstd_level`` (1..22) instead.

    A batch frame pays the codec's fixed costs (cost model, tables, header) once per batch and is
    smaller; its quantization range spans the batch, and a frame that fails to decode rejects all its
    samples. ``settings.axis`` is the per-sample channel axis (it becomes ``axis + 1`` in a batch frame). A
    transformer feature (a dict) codes its valid tokens' hidden rows, ``(tokens, H)``, in which a
    sample's ``(T, H)`` axis keeps its index."""

    stage = "encoder"

    def __init__(
        self,
        kind: str = "ours",
        settings: CodecSettings | None = None,
        replica: int = 0,
        frame: str = "batch",
        threads: int = 1,
        use_gpu: bool = False,
        zstd_level: int = 3,
    ) -> None:
        super().__init__(replica, threads)
        if frame not in ("batch", "sample"):
            raise ValueError(f"codec.frame must be batch or sample, got {frame!r}")
        self.kind, self.frame, self.zstd_level = kind, frame, zstd_level
        self.settings = CodecSettings() if settings is None else settings
        self.device, self.device_line = codec_device(self.stage, use_gpu)
        _warm_up()

    def process(self, batch: dict[str, Any], setting: CodecSettings | None = None):
        """``{"ids","feat","labels","t_src"}`` -> ``(meta, pyarrow.RecordBatch of frames)``.

        ``setting`` (from a rate controller) overrides the codec settings for this batch; each frame
        names its own, so decoders need nothing."""
        start = self._begin()
        feat = batch["feat"]
        n = len(batch["ids"])
        s, extra = self.settings if setting is None else setting, {}
        if isinstance(feat, dict):  # valid tokens only: sample i holds counts[i] rows
            rows, counts = valid_rows(feat)
            cuts = np.cumsum(counts)[:-1]
            groups = [rows] if self.frame == "batch" else np.split(rows, cuts)
            raw = int(rows.nbytes)
            extra = {"tokens": int(counts.sum()), "positions": int(feat["attention_mask"].size)}
        else:
            s = batch_settings(s)  # of the (n, ...) tensors coded
            groups = [feat] if self.frame == "batch" else [feat[i : i + 1] for i in range(n)]
            raw = int(feat.nbytes)
        frames = [
            encode_tensor(g, self.kind, s, self.threads, self.device, self.zstd_level)
            for g in groups
        ]
        sizes = [n] if self.frame == "batch" else [1] * n
        rb = pack_batch(batch["ids"], frames, batch["labels"], batch["t_src"], sizes)
        if isinstance(feat, dict):
            rb = add_text_columns(rb, feat)
        payload = sum(len(f) for f in frames)
        meta = self._meta(start, n, raw, payload, wire_bytes=batch_wire_bytes(rb), **extra)
        meta["setting"] = setting
        meta.update(self.placement_notes())
        return meta, rb


class Decoder(_CodecStage):
    """Unpacks an Arrow batch and decodes its frames into a float32 feature tensor.

    ``feature_shape`` is one sample's feature shape: a frame holding ``k`` samples must decode to
    ``(k, *feature_shape)`` and may not declare more values than that, so a forged header cannot make
    the decoder allocate more than its samples need. A frame that fails rejects its samples by id.

    With ``text=True`` the stream carries a transformer's features: ``feature_shape`` is
    ``(max_tokens, H)``, a frame holds exactly the valid rows ``(tokens, H)`` its samples' masks
    declare, and the output ``feat`` is the dict the tail takes, padding rebuilt as zeros."""

    stage = "decoder"

    def __init__(
        self,
        feature_shape: tuple[int, ...] | None = None,
        replica: int = 0,
        threads: int = 1,
        *,
        text: bool = False,
        use_gpu: bool = False,
    ) -> None:
        super().__init__(replica, threads)
        self.device, self.device_line = codec_device(self.stage, use_gpu)
        self.feature_shape = None if feature_shape is None else tuple(feature_shape)
        self.elements = None if feature_shape is None else math.prod(feature_shape)
        self.text = text
        if text and (self.feature_shape is None or len(self.feature_shape) != 2):
            raise ValueError(
                f"a text decoder needs feature_shape (max_tokens, H), got {feature_shape}"
            )
        _warm_up()

    def _decode(self, frame, samples: int, rows: int | None = None) -> np.ndarray:
        """One frame of ``samples`` samples; in a text stream, of ``rows`` valid tokens' rows."""
        if rows is not None:
            assert self.feature_shape is not None
            want: tuple[int, ...] | None = (rows, self.feature_shape[1])
            bound = rows * self.feature_shape[1]
        else:
            want = None if self.feature_shape is None else (samples, *self.feature_shape)
            bound = (1 << 31) if self.elements is None else samples * self.elements
        x = _host(decode_tensor(frame, bound, self.threads, self.device))
        if rows is not None:
            ok = tuple(x.shape) == want
        else:
            ok = x.ndim > 0 and len(x) == samples and (want is None or tuple(x.shape) == want)
        if not ok:
            raise WireError(
                f"frame holds shape {tuple(x.shape)}, expected {want or (samples, ...)}"
            )
        return x.astype(np.float32, copy=False)

    def _layout(self, rb) -> tuple[np.ndarray, list, Any, np.ndarray, Any]:
        """``unpack_batch`` plus, in a text stream, the mask and positions (checked)."""
        ids, groups, labels, t_src = unpack_batch(rb)
        if self.text != is_text_batch(rb):
            raise WireError("a text batch in an image stream, or the other way round")
        cols = text_columns(rb, self.feature_shape[0]) if self.text else None  # type: ignore[index]
        if cols is not None and len(cols[0]) != len(ids):
            raise WireError(f"{len(cols[0])} masks for {len(ids)} samples")
        return ids, groups, labels, t_src, cols

    def process(self, rb) -> tuple[dict[str, Any], dict[str, Any]]:
        """``pyarrow.RecordBatch`` -> ``(meta, {"ids","feat","labels","t_src"})``; ``meta`` lists the
        rejected sample ids and the first few error texts."""
        start = self._begin()
        wire = batch_wire_bytes(rb)
        try:
            ids, groups, labels, t_src, cols = self._layout(rb)
        except ValueError as exc:  # the batch's layout itself is broken: none of it can be trusted
            ids = np.asarray(rb.column("id").to_numpy(zero_copy_only=False), dtype=np.int64)
            meta = self._meta(
                start, len(ids), wire, 0, arrival=start, wire_bytes=wire,
                rejected_ids=ids.tolist(), errors=[f"batch: {type(exc).__name__}: {exc}"],
            )  # fmt: skip
            return meta, self._empty()
        counts = None if cols is None else cols[0].sum(1)
        keep, feats, rejected, errors = [], [], [], []
        for g in groups:
            rows = range(g.row, g.row + g.samples)
            try:
                tokens = None if counts is None else int(counts[g.row : g.row + g.samples].sum())
                feats.append(self._decode(g.frame, g.samples, tokens))
                keep.extend(rows)
            except ValueError as exc:  # CodecError and WireError are ValueErrors
                rejected.extend(int(ids[i]) for i in rows)
                if len(errors) < ERRORS_PER_BATCH:
                    first, last = int(ids[g.row]), int(ids[g.row + g.samples - 1])
                    where = f"sample {first}" if first == last else f"samples {first}..{last}"
                    errors.append(f"{where}: {type(exc).__name__}: {exc}")
        idx = np.asarray(keep, dtype=np.int64)
        if not feats:
            feat = self._empty()["feat"]
        elif cols is None:
            feat = np.concatenate(feats)
        else:
            feat = self._padded(np.concatenate(feats), cols[0][idx], cols[1], idx)
        out = {
            "ids": ids[idx],
            "feat": feat,
            "labels": None if labels is None else labels[idx],
            "t_src": t_src[idx],
        }
        payload = sum(len(g.frame) for g in groups)
        meta = self._meta(
            start,
            len(ids),
            payload,
            nbytes(feat),
            arrival=start,
            wire_bytes=wire,
            rejected_ids=rejected,
            errors=errors,
            **self.placement_notes(),
        )
        return meta, out

    @staticmethod
    def _padded(rows: np.ndarray, mask: np.ndarray, pos: np.ndarray, keep: np.ndarray):
        """The tail's input dict from the kept samples' valid rows: zeros where the mask is 0."""
        hidden = np.zeros((*mask.shape, rows.shape[1]), np.float32)
        hidden[mask != 0] = rows
        return {
            "hidden": hidden,
            "attention_mask": mask,
            "position_ids": pos if len(pos) == 1 else pos[keep],
        }

    def _empty(self) -> dict[str, Any]:
        """A batch of no samples (every frame was rejected)."""
        shape = self.feature_shape or (0,)
        feat: Any = np.zeros((0, *shape), np.float32)
        if self.text:
            t, h = shape
            feat = {
                "hidden": np.zeros((0, 0, h), np.float32),
                "attention_mask": np.zeros((0, 0), np.int64),
                "position_ids": np.zeros((0, 0), np.int64),
            }
        return {"ids": np.zeros(0, np.int64), "feat": feat, "labels": None, "t_src": np.zeros(0)}
