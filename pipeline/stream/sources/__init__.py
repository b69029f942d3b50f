"""Readers of the user's data: image files, a video, a table, and the Python API's items.

The driver calls :func:`describe` (it lists the files, probes the video, checks the table's
columns) and ships the small, picklable spec to the edge, which calls :func:`open_reader` and
then :meth:`Reader.read` for batches of item indices. Nothing here needs Ray.
"""

from __future__ import annotations

from pipeline.stream.sources.images import ImagesReader, ImagesSpec, describe_images
from pipeline.stream.sources.items import Loaded, Reader, convert_items
from pipeline.stream.sources.table import TableReader, TableSpec, describe_table
from pipeline.stream.sources.transform import IMAGE_EXTENSIONS, Transform
from pipeline.stream.sources.video import VideoReader, VideoSpec, describe_video

ReaderSpec = ImagesSpec | VideoSpec | TableSpec
KINDS = ("images", "video", "table")

__all__ = [
    "IMAGE_EXTENSIONS",
    "KINDS",
    "ImagesReader",
    "ImagesSpec",
    "Loaded",
    "Reader",
    "ReaderSpec",
    "TableReader",
    "TableSpec",
    "Transform",
    "VideoReader",
    "VideoSpec",
    "convert_items",
    "describe",
    "open_reader",
]


def describe(
    kind: str,
    *,
    path: str,
    column: str | None = None,
    label_column: str | None = None,
    key_column: str | None = None,
    loop: bool = False,
    transform: Transform | None = None,
) -> ReaderSpec:
    """The spec of a source (``kind``: images, video or table); a ValueError whose message
    starts with the config key at fault."""
    if kind == "images":
        return describe_images(path, transform)
    if kind == "video":
        return describe_video(path, loop=loop, transform=transform)
    if kind == "table":
        return describe_table(path, column, label_column, key_column, transform)
    raise ValueError(f"data.source: {kind!r} is not one of {list(KINDS)}")


def open_reader(spec: ReaderSpec, threads: int = 1) -> Reader:
    """The reader of a spec (in the edge actor); ``threads`` decode in parallel."""
    if isinstance(spec, ImagesSpec):
        return ImagesReader(spec, threads)
    if isinstance(spec, VideoSpec):
        return VideoReader(spec, threads)
    if isinstance(spec, TableSpec):
        return TableReader(spec, threads)
    raise TypeError(f"not a reader spec: {type(spec).__name__}")
