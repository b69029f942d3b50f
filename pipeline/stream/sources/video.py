"""A video file read frame by frame with PyAV; item ``i`` is frame ``i`` (``i % n`` when looping).

:func:`describe_video` demuxes the file once in the driver, without decoding, to count its
frames (the demuxed packets, not the container's own count, which may be missing or wrong) and
to note each frame's timestamp and the keyframes. :class:`VideoReader` keeps one decoder open:
ascending reads continue it, and an earlier frame (a replay, or a loop's wrap) seeks to the
keyframe at or before it and decodes forward, at most one group of pictures.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from pipeline.stream.sources.items import Loaded, Reader, assemble
from pipeline.stream.sources.transform import Rejected, Transform, one_line


@dataclass(frozen=True)
class VideoSpec:
    """A probed video: each frame's pts in presentation order (None when the file has none) and
    the indices of its keyframes."""

    path: str
    nframes: int
    fps: float
    pts: tuple[int, ...] | None
    time_base: Fraction
    keyframes: tuple[int, ...]
    loop: bool = False
    transform: Transform | None = None
    has_labels: ClassVar[bool] = False
    class_names: ClassVar[tuple[str, ...] | None] = None
    text: ClassVar[bool] = False

    @property
    def size(self) -> int | None:
        return None if self.loop else self.nframes

    @property
    def duration(self) -> float:
        """Seconds one pass of the file lasts (a loop's period)."""
        if self.pts is None:
            return self.nframes / self.fps
        return self.time(self.nframes - 1) + 1 / self.fps

    def time(self, frame: int) -> float:
        """Seconds from the first frame to ``frame`` of the file."""
        if self.pts is None:
            return frame / self.fps
        return float((self.pts[frame] - self.pts[0]) * self.time_base)

    def key(self, i: int) -> str:
        """``"{i}@{t:.3f}"``: the item index and its time (a loop adds whole passes)."""
        t = self.time(i % self.nframes) + (i // self.nframes) * self.duration
        return f"{i}@{t:.3f}"


def _av() -> Any:
    """PyAV, imported where a video is read (importing the sources needs no FFmpeg)."""
    import av

    return av


def describe_video(path: str, loop: bool = False, transform: Transform | None = None) -> VideoSpec:
    """Probe ``path``: frames, frame rate, timestamps and keyframes (demuxed, not decoded)."""
    av = _av()
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"data.path: cannot open video {path!r}: {one_line(exc)}") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"data.path: no video stream in {path!r}")
        stream = container.streams.video[0]
        stamps: list[int | None] = []
        keys: list[int | None] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                stamps.append(pts)
                if packet.is_keyframe:
                    keys.append(pts)
        except av.FFmpegError as exc:
            if not stamps:
                raise ValueError(
                    f"data.path: cannot read video {path!r}: {one_line(exc)}"
                ) from None
        rate = stream.average_rate or stream.guessed_rate
        time_base = stream.time_base or Fraction(1, 1)
    n = len(stamps)
    if n == 0:
        raise ValueError(f"data.path: video {path!r} has no frames")
    known = None not in stamps and len(set(stamps)) == n
    pts = tuple(sorted(p for p in stamps if p is not None)) if known else None
    if rate:
        fps = float(rate)
    elif pts is not None and n > 1 and pts[-1] > pts[0]:
        fps = (n - 1) / float((pts[-1] - pts[0]) * time_base)
    else:
        fps = 25.0  # FFmpeg's own guess when a stream states none
    if pts is not None:
        at = {p: i for i, p in enumerate(pts)}
        keyframes = tuple(sorted({at[k] for k in keys if k in at} | {0}))
    else:
        keyframes = (0,)
    return VideoSpec(
        path=path,
        nframes=n,
        fps=fps,
        pts=pts,
        time_base=Fraction(time_base),
        keyframes=keyframes,
        loop=loop,
        transform=transform,
    )


class VideoReader(Reader):
    """Decodes the spec's video with ``threads`` FFmpeg decoder threads."""

    def __init__(self, spec: VideoSpec, threads: int = 1) -> None:
        self.spec = spec
        self.size = spec.size
        self.has_labels = False
        self.class_names = None
        self.fps = spec.fps
        self.text = False
        self._threads = threads
        self._delay = 16 + threads  # packets a decoder may hold back (reordering, frame threads)
        self._index = {p: i for i, p in enumerate(spec.pts)} if spec.pts is not None else None
        self._container: Any = None
        self._rewind()

    def _rewind(self, frame: int = 0) -> None:
        """Restart decoding at the keyframe at or before ``frame`` (a fresh open for frame 0)."""
        av = _av()
        spec = self.spec
        key = spec.keyframes[bisect.bisect_right(spec.keyframes, frame) - 1]
        if key == 0 or spec.pts is None:
            if self._container is not None:
                self._container.close()
            self._container = av.open(spec.path)
            self._stream = self._container.streams.video[0]
            ctx = self._stream.codec_context
            if self._threads > 1:
                ctx.thread_count = self._threads
                ctx.thread_type = "AUTO"
            key = 0
        else:
            self._container.seek(spec.pts[key], stream=self._stream, backward=True)
            self._stream.codec_context.flush_buffers()
        self._packets = self._container.demux(self._stream)
        self._pending: dict[int, Any] = {}  # frame index -> decoded frame, or why it failed
        self._next = key  # frames before this one were given or passed
        self._last = key - 1  # the latest frame the decoder gave
        self._fed: dict[int, int] = {}  # frame index -> packets fed before its own
        self._count = 0  # packets fed since the rewind
        self._eof = False
        self._why_end = "the video ended before it"

    def _frame_index(self, pts: int | None) -> int:
        if self._index is not None and pts in self._index:
            return self._index[pts]
        return self._last + 1

    def _pull(self) -> bool:
        """Decode one more packet into ``_pending``; False at the end of the file."""
        av = _av()
        if self._eof:
            return False
        try:
            packet = next(self._packets)
        except StopIteration:
            self._eof = True
            return False
        except av.FFmpegError as exc:
            self._eof = True
            self._why_end = f"the file cannot be read past it: {one_line(exc)}"
            return False
        own = self._index.get(packet.pts) if self._index is not None else None
        if own is not None:
            self._fed[own] = self._count
        self._count += 1
        try:
            frames = self._stream.codec_context.decode(packet)
        except av.FFmpegError as exc:
            if own is not None and own >= self._next:
                self._pending[own] = f"cannot decode: {one_line(exc)}"
            return True
        for frame in frames:
            i = self._frame_index(frame.pts)
            self._last = max(self._last, i)
            if i >= self._next:
                self._pending[i] = frame
        return True

    def _convert(self, frame: Any) -> np.ndarray:
        transform = self.spec.transform
        try:
            if transform is not None:
                return transform.apply(frame.to_image())
            x = frame.to_ndarray(format="rgb24").transpose(2, 0, 1).astype(np.float32)
        except (ValueError, OSError) as exc:
            raise Rejected(f"cannot convert the frame to RGB: {one_line(exc)}") from None
        x /= 255.0
        return x

    def _frame(self, j: int) -> np.ndarray:
        keyframes = self.spec.keyframes
        sought = j < self._next or keyframes[bisect.bisect_right(keyframes, j) - 1] > self._next
        if sought:
            self._rewind(j)
        value = self._decode_to(j)
        if value is None and sought and j not in self._fed and self._last > j and self._next > 0:
            self._rewind(0)  # the seek landed past it: decode from the start, once
            value = self._decode_to(j)
        self._next = j + 1
        if value is None:
            why = "the decoder gave no picture for it" if j in self._fed else self._why_end
            raise Rejected(f"frame {j} was not decoded: {why}")
        if isinstance(value, str):
            raise Rejected(value)
        return self._convert(value)

    def _decode_to(self, j: int) -> Any:
        """Frame ``j`` (or why it failed, or None), dropping what comes before it."""
        while j not in self._pending and self._last <= j:
            if j in self._fed and self._count - self._fed[j] > self._delay:
                break  # its packet went in long ago and no picture came out
            if not self._pull():
                break
        value = self._pending.pop(j, None)
        for k in [k for k in self._pending if k < j]:
            del self._pending[k]
        for k in [k for k in self._fed if k < j]:
            del self._fed[k]
        return value

    def read(self, idx: np.ndarray) -> Loaded:
        idx = [int(i) for i in np.asarray(idx, np.int64).reshape(-1)]
        n = self.spec.nframes
        values: list[np.ndarray | None] = [None] * len(idx)
        rejected: dict[int, str] = {}
        for pos, i in enumerate(idx):
            if i < 0 or (not self.spec.loop and i >= n):
                rejected[pos] = f"no frame {i} (the video has {n})"
                continue
            try:
                values[pos] = self._frame(i % n)
            except Rejected as exc:
                rejected[pos] = str(exc)
        keys = [self.spec.key(i) if i >= 0 else str(i) for i in idx]
        return assemble(values, keys, rejected)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
