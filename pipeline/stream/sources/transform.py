"""Image preprocessing and decoding shared by the readers: RGB conversion, resize, crop, normalise.

:class:`Transform` does what torchvision's ``ImageClassification`` preset does on a PIL image
(resize the short side, centre crop, ``(x / 255 - mean) / std``), in PIL and numpy only.
:func:`decode_image` turns an encoded image into that float32 ``(3, H, W)`` array, or raises
:class:`Rejected` with a one-line reason; it never lets a bad file raise anything else.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File name endings of images (compared case-insensitively)."""

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
_OPEN_LOCK = threading.Lock()  # warnings.catch_warnings is process-global, so one open at a time
_WHITE = (255, 255, 255)


class Rejected(Exception):
    """One item cannot be used; ``str(exc)`` is the one-line reason."""


def one_line(exc: BaseException | str) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class Transform:
    """Resize the short side to ``resize``, centre crop to ``crop`` x ``crop``, then
    ``(x / 255 - mean) / std`` per channel. ``None`` skips a step; a crop larger than the image
    pads it with black, as torchvision's ``CenterCrop`` does."""

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}")
        if len(self.mean) not in (1, 3) or len(self.std) not in (1, 3):
            raise ValueError("mean and std need one or three values (RGB)")
        if any(not v > 0 for v in self.std):
            raise ValueError("std values must be positive")
        for name in ("resize", "crop"):
            size = getattr(self, name)
            if size is not None and size <= 0:
                raise ValueError(f"{name} must be positive, got {size}")

    def draft_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The size after the resize step, or None when there is none."""
        if self.resize is None:
            return None
        short = min(width, height)
        if width <= height:
            return self.resize, int(self.resize * height / short)
        return int(self.resize * width / short), self.resize

    def apply(self, img: Image.Image) -> np.ndarray:
        """RGB float32 ``(3, H, W)`` of a PIL image (converted to RGB first)."""
        img = to_rgb(img)
        size = self.draft_size(*img.size)
        if size is not None and size != img.size:
            img = img.resize(size, _RESAMPLE[self.interpolation])
        if self.crop is not None:
            img = _centre_crop(img, self.crop)
        x = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        x /= 255.0
        x -= mean
        x /= std
        return x

    @classmethod
    def from_torchvision(cls, weights: Any) -> Transform:
        """The preset of a torchvision ``WeightsEnum`` member (``weights.transforms()``)."""
        preset = weights.transforms()
        missing = [a for a in ("resize_size", "crop_size", "mean", "std") if not hasattr(preset, a)]
        if missing:
            raise ValueError(
                f"{weights}: its transforms() ({type(preset).__name__}) is not an image "
                f"classification preset (no {', '.join(missing)})"
            )
        interpolation = getattr(getattr(preset, "interpolation", None), "value", "bilinear")
        return cls(
            resize=_first(preset.resize_size),
            crop=_first(preset.crop_size),
            mean=tuple(preset.mean),
            std=tuple(preset.std),
            interpolation=str(interpolation),
        )


def _first(size: Any) -> int | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size
    if len(size) != 1:
        raise ValueError(f"only a square or short-side size is supported, got {list(size)}")
    return int(size[0])


def _centre_crop(img: Image.Image, crop: int) -> Image.Image:
    """Centre ``crop`` x ``crop`` with torchvision's offsets (and black padding when smaller)."""
    w, h = img.size
    left = int(round((w - crop) / 2.0)) if w >= crop else -((crop - w) // 2)
    top = int(round((h - crop) / 2.0)) if h >= crop else -((crop - h) // 2)
    if (left, top, w, h) == (0, 0, crop, crop):
        return img
    return img.crop((left, top, left + crop, top + crop))


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB image of any PIL mode: alpha (LA, RGBA, PA, palette with transparency) is
    composited on white; 16- and 32-bit grey is scaled to 8 bits (65535 -> 255)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, _WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if mode.startswith("I") or mode == "F":
        grey = np.asarray(img).astype(np.float64)
        scale = 1.0 if mode == "F" else 257.0
        grey = np.clip(np.rint(grey / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return img.convert("RGB")


def plain(img: Image.Image) -> np.ndarray:
    """RGB float32 ``(3, H, W)`` in [0, 1], no resize or normalisation."""
    x = np.asarray(to_rgb(img), dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    x /= 255.0
    return x


def _open(data: bytes) -> Image.Image:
    """``Image.open`` with Pillow's decompression bomb warning raised as an error."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.width * img.height > limit:
        raise Image.DecompressionBombError(f"{img.width}x{img.height} pixels is over {limit}")
    return img


def decode_image(data: bytes, transform: Transform | None) -> np.ndarray:
    """Float32 ``(3, H, W)`` of an encoded image; :class:`Rejected` with the reason if it fails.

    A JPEG decodes at a reduced scale (``Image.draft``) when the resize target is at most half
    its size, as Pillow's own ``thumbnail`` does."""
    if not data:
        raise Rejected("empty file")
    try:
        with _open(data) as img:
            size = transform.draft_size(*img.size) if transform is not None else None
            if size is not None and img.format == "JPEG":
                img.draft("RGB", (2 * size[0], 2 * size[1]))
            img.load()
            return plain(img) if transform is None else transform.apply(img)
    except UnidentifiedImageError:
        raise Rejected("not an image: cannot identify image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected(f"decompression bomb: {one_line(exc)}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
        raise Rejected(f"corrupt or truncated image: {one_line(exc)}") from None
    except MemoryError:
        raise Rejected("image too large to decode (out of memory)") from None
    except Exception as exc:  # a malformed file can trip anything inside a Pillow plugin
        raise Rejected(f"cannot decode: {type(exc).__name__}: {one_line(exc)}") from None


def read_file(path: str) -> bytes:
    """A file's bytes; :class:`Rejected` naming why it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise Rejected(f"file not found: {path!r}") from None
    except PermissionError:
        raise Rejected(f"permission denied: {path!r}") from None
    except IsADirectoryError:
        raise Rejected(f"a folder, not a file: {path!r}") from None
    except OSError as exc:
        raise Rejected(f"cannot read {path!r}: {one_line(exc.strerror or exc)}") from None


def load_image(path: str, transform: Transform | None) -> np.ndarray:
    """:func:`decode_image` of the file at ``path``."""
    return decode_image(read_file(path), transform)
