"""Image files: a folder (recursive), a glob pattern, or a ``.txt`` list of paths.

:func:`describe_images` lists the files in the driver; :class:`ImagesReader` decodes them with
Pillow on worker threads in the edge. A file that cannot be used is rejected with its reason.
"""

from __future__ import annotations

import glob
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from pipeline.stream.sources.items import Loaded, Reader, assemble
from pipeline.stream.sources.transform import IMAGE_EXTENSIONS, Rejected, Transform, load_image

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ImagesSpec:
    """The files to read: ``root`` joined with each key (an absolute key stays as it is)."""

    root: str
    keys: tuple[str, ...]
    labels: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None
    transform: Transform | None = None
    fps: ClassVar[float | None] = None
    text: ClassVar[bool] = False

    @property
    def size(self) -> int:
        return len(self.keys)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _walk(folder: str) -> list[str]:
    """Image files under ``folder``, as sorted POSIX paths relative to it (linked folders are
    followed, each real folder once)."""
    found = []
    seen = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = [os.path.realpath(os.path.join(dirpath, d)) for d in dirnames]
        dirnames[:] = [d for d, r in zip(dirnames, real, strict=True) if r not in seen]
        seen.update(real)
        rel = os.path.relpath(dirpath, folder)
        for name in filenames:
            if is_image_name(name):
                found.append(Path(name).as_posix() if rel == "." else Path(rel, name).as_posix())
    return sorted(found)


def _class_labels(keys: list[str]) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    """Labels of a folder-per-class layout: every file one level down, in two or more folders."""
    parts = [k.split("/") for k in keys]
    if any(len(p) != 2 for p in parts):
        return None
    names = sorted({p[0] for p in parts})
    if len(names) < 2:
        return None
    index = {n: i for i, n in enumerate(names)}
    return tuple(index[p[0]] for p in parts), tuple(names)


def _glob_root(pattern: str) -> str:
    """The longest leading folder of ``pattern`` without glob characters."""
    fixed = []
    for part in Path(pattern).parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _read_list(path: str) -> list[str]:
    """Paths listed one a line (blank lines and ``#`` comments skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"data.path: cannot read the list of images {path!r}: {exc}") from None
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def describe_images(path: str, transform: Transform | None = None) -> ImagesSpec:
    """List the images at ``path`` (folder, glob pattern, ``.txt`` list or one image file)."""
    looked = f"(looked for {', '.join(IMAGE_EXTENSIONS)})"
    if _GLOB_CHARS & set(path) and not os.path.exists(path):
        root = _glob_root(path)
        rel = [
            Path(os.path.relpath(f, root)).as_posix()
            for f in glob.glob(path, recursive=True)
            if is_image_name(f) and os.path.isfile(f)
        ]
        if not rel:
            raise ValueError(f"data.path: no images match the pattern {path!r} {looked}")
        return ImagesSpec(root=os.path.abspath(root), keys=tuple(sorted(rel)), transform=transform)
    if not os.path.exists(path):
        raise ValueError(f"data.path: no such file or folder: {path!r}")
    if os.path.isdir(path):
        keys = _walk(path)
        if not keys:
            raise ValueError(f"data.path: no images found in folder {path!r} {looked}")
        classes = _class_labels(keys)
        labels, names = classes if classes is not None else (None, None)
        return ImagesSpec(
            root=os.path.abspath(path),
            keys=tuple(keys),
            labels=labels,
            class_names=names,
            transform=transform,
        )
    if path.lower().endswith(".txt"):
        keys = _read_list(path)
        if not keys:
            raise ValueError(f"data.path: the list of images {path!r} names no files")
        root = os.path.dirname(os.path.abspath(path))
        return ImagesSpec(root=root, keys=tuple(keys), transform=transform)
    if is_image_name(path):
        root, name = os.path.split(os.path.abspath(path))
        return ImagesSpec(root=root, keys=(name,), transform=transform)
    raise ValueError(
        f"data.path: {path!r} is not a folder, a glob pattern, a .txt list of image paths "
        f"or an image {looked}"
    )


class ImagesReader(Reader):
    """Decodes the spec's files, ``threads`` at a time (Pillow decodes without the GIL)."""

    def __init__(self, spec: ImagesSpec, threads: int = 1) -> None:
        self.spec = spec
        self.size = spec.size
        self.has_labels = spec.has_labels
        self.class_names = spec.class_names
        self.fps = None
        self.text = False
        self._paths = [os.path.join(spec.root, k) for k in spec.keys]
        self._pool = ThreadPoolExecutor(threads, "images") if threads > 1 else None

    def _load(self, i: int) -> np.ndarray | str:
        try:
            return load_image(self._paths[i], self.spec.transform)
        except Rejected as exc:
            return str(exc)

    def read(self, idx: np.ndarray) -> Loaded:
        idx = [int(i) for i in np.asarray(idx, np.int64).reshape(-1)]
        rejected: dict[int, str] = {}
        wanted = []
        for pos, i in enumerate(idx):
            if 0 <= i < self.size:
                wanted.append(pos)
            else:
                rejected[pos] = f"no item {i} (the source has {self.size})"
        todo = [idx[pos] for pos in wanted]
        done = list(self._pool.map(self._load, todo)) if self._pool else list(map(self._load, todo))
        values: list[np.ndarray | str | None] = [None] * len(idx)
        for pos, value in zip(wanted, done, strict=True):
            if isinstance(value, str):
                rejected[pos] = value
            else:
                values[pos] = value
        keys = [self.spec.keys[i] if 0 <= i < self.size else str(i) for i in idx]
        labels = self.spec.labels
        per_pos = None if labels is None else [labels[i] if 0 <= i < self.size else -1 for i in idx]
        return assemble(values, keys, rejected, per_pos)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
