"""Real photographs for ImageNet-trained vision models, read offline from installed packages.

The photographs are scikit-learn's two sample images (``china.jpg``, ``flower.jpg``) and 16
of the images in scikit-image's wheel (``skimage/data``): 18 photographs in all, read from
disk with PIL (nothing is fetched). scikit-image's synthetic test patterns (chessboards,
colour wheel, logo, phantom, horse silhouette), its artificially blurred clock, its tiny
images and the right view of its stereo pair are left out. Grey photographs are repeated
over the three channels.

Each photograph gives up to ``len(CROPS)`` = 20 crops of ``size`` x ``size`` (224 by default),
ImageNet-normalized as torchvision's weights expect: the photo is resized so its short side
is 256 (or 320) x ``size`` / 224, then cut at the centre or one of the four corners, and
flipped left-right or not. ``photo_crops(n)`` takes the first ``n`` crops of a fixed order
that goes through every photograph before it takes a second crop of any, so at most
18 x 20 = 360 crops exist. Crops of one photograph are correlated: the effective sample
size of a figure lies between the photograph count and the crop count.

``random_crops(n, seed)`` gives any number of seeded random crops instead (short side drawn from
256..320, a random position and flip, photograph ``i % 18``): sets of different seeds serve as a
tuning set and an evaluation set (the fidelity benchmark's low-bit rule is chosen on one, reported
on another).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (short side at size 224, (vertical, horizontal) position of the crop in 0..1, flipped)
CROPS: tuple[tuple[int, tuple[float, float], bool], ...] = tuple(
    (short, pos, flip)
    for pos in ((0.5, 0.5), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0))
    for short in (256, 320)
    for flip in (False, True)
)


@dataclass
class PhotoCrops:
    """Normalized crops (N, 3, size, size), the photograph index of each, and the photo names."""

    images: torch.Tensor
    photo: torch.Tensor
    names: tuple[str, ...]
    label: str | None = None  # random_crops: what the source line names

    @property
    def source(self) -> str:
        """One line naming the data and its counts (for result rows)."""
        if self.label is not None:
            return self.label
        used = len(set(self.photo.tolist()))
        return f"photos: {self.images.shape[0]} crops of {used} photographs"


def _package_dir(name: str) -> Path:
    """Directory of an installed package, located without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {name!r} (which carries the photographs) is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def photo_paths() -> list[Path]:
    """Files of the 18 photographs, scikit-learn's first (``FileNotFoundError`` if one is missing)."""
    sk = _package_dir("sklearn") / "datasets" / "images"
    ski = _package_dir("skimage") / "data"
    paths = [sk / n for n in SKLEARN_PHOTOS] + [ski / n for n in SKIMAGE_PHOTOS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"bundled photographs missing: {', '.join(missing)}")
    return paths


def _resized(path: Path, short: int) -> np.ndarray:
    """RGB photo resized (bilinear, antialiased) so its short side is ``short``, the long side
    truncated as torchvision's ``Resize(short)`` does; float32 0..1."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    return np.asarray(rgb.resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def max_crops() -> int:
    """How many distinct crops ``photo_crops`` can give."""
    return len(SKLEARN_PHOTOS + SKIMAGE_PHOTOS) * len(CROPS)


def photo_crops(n: int, size: int = 224) -> PhotoCrops:
    """The first ``n`` crops (see the module docstring); deterministic, no randomness."""
    paths = photo_paths()
    if not 1 <= n <= max_crops():
        raise ValueError(f"photo crops: n must be in 1..{max_crops()}, got {n}")
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    out = np.empty((n, 3, size, size), dtype=np.float32)
    photo = torch.arange(n) % len(paths)
    for k, path in enumerate(paths):
        for short in sorted({c[0] for c in CROPS}):
            mine = [i for i in range(k, n, len(paths)) if CROPS[i // len(paths)][0] == short]
            if not mine:
                continue
            img = _resized(path, round(short * size / 224))
            for i in mine:
                _, (fy, fx), flip = CROPS[i // len(paths)]
                y0 = round(fy * (img.shape[0] - size))
                x0 = round(fx * (img.shape[1] - size))
                crop = img[y0 : y0 + size, x0 : x0 + size]
                if flip:
                    crop = crop[:, ::-1]
                out[i] = ((crop - mean) / std).transpose(2, 0, 1)
    return PhotoCrops(torch.from_numpy(out), photo, tuple(p.name for p in paths))


SEEDED_SHORT = (256, 320)
"""random_crops: the range of the short side (at size 224) that a photograph is resized to (the
fixed crops' two lengths, 256 and 320, and every one between)."""


def random_crops(n: int, seed: int, size: int = 224) -> PhotoCrops:
    """``n`` seeded random crops of ``size`` x ``size``, normalized as :func:`photo_crops`'s: crop ``i``
    is of photograph ``i % 18`` (every photograph as often, to one), resized so its short side is
    a random length in ``SEEDED_SHORT`` x ``size`` / 224, cut at a random position and flipped
    left-right or not at random. Different seeds give different crops (a crop position is drawn from
    hundreds of pixels), so sets with different seeds can serve as tuning and evaluation sets."""
    paths = photo_paths()
    if n < 1:
        raise ValueError(f"random crops: n must be >= 1, got {n}")
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    rng = np.random.default_rng([seed, 224])
    shorts = rng.integers(SEEDED_SHORT[0], SEEDED_SHORT[1] + 1, n)
    pos = rng.random((n, 2))
    flips = rng.random(n) < 0.5
    out = np.empty((n, 3, size, size), dtype=np.float32)
    photo = torch.arange(n) % len(paths)
    for k, path in enumerate(paths):
        for i in range(k, n, len(paths)):
            img = _resized(path, max(size, round(int(shorts[i]) * size / 224)))
            y0 = round(pos[i, 0] * (img.shape[0] - size))
            x0 = round(pos[i, 1] * (img.shape[1] - size))
            crop = img[y0 : y0 + size, x0 : x0 + size]
            if flips[i]:
                crop = crop[:, ::-1]
            out[i] = ((crop - mean) / std).transpose(2, 0, 1)
    source = f"photos seed {seed}: {n} crops of {len(set(photo.tolist()))} photographs"
    return PhotoCrops(torch.from_numpy(out), photo, tuple(p.name for p in paths), source)


def write_jpeg_photos(
    folder: str | Path,
    n: int,
    *,
    seed: int = 0,
    quality: int = 90,
    sizes: tuple[int, int] = (256, 480),
) -> list[Path]:
    """Write ``n`` JPEG photographs into ``folder`` (``photo-00000.jpg``, ...): random crops of the
    bundled photographs (a random photo, crop box and output size, the long side in ``sizes``), some
    flipped, saved at ``quality``. Real photographic content for the stream's user-data tests and
    benchmarks; seeded, so a seed gives the same files. Returns their paths, in name order."""
    from PIL import Image

    rng = np.random.default_rng([seed, 90])
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    for p in photo_paths():
        with Image.open(p) as im:
            photos.append(im.convert("RGB"))
    paths = []
    for i in range(n):
        img = photos[int(rng.integers(len(photos)))]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x0, y0, x0 + cw, y0 + ch))
        long_side = int(rng.integers(sizes[0], sizes[1] + 1))
        scale = long_side / max(cw, ch)
        crop = crop.resize((max(1, round(cw * scale)), max(1, round(ch * scale))))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = out / f"photo-{i:05d}.jpg"
        crop.save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths
