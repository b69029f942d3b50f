"""What a reader gives (:class:`Loaded`), the reader base, and the Python API's raw items.

:func:`convert_items` turns a batch of items from the user's iterable into a :class:`Loaded`:
PIL images, numpy arrays, torch tensors, strings or encoded image bytes, each optionally as a
``(key, item)`` pair. A bad item is rejected with its reason; it never raises.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pipeline.stream.sources.transform import Rejected, Transform, decode_image, one_line, plain


@dataclass(frozen=True)
class Loaded:
    """What a reader gives for a request of n item indices.

    ``x``: the good items only, in request order: float32 ``(n_good, C, H, W)``, or a list of
    strings for text (``len(x) == 0`` when none is good). ``labels``: int64 ``(n_good,)``, or None
    when the source has no labels. ``keys``: the key of every requested item (n). ``rejected``:
    position in the request -> one-line reason."""

    x: np.ndarray | list[str]
    labels: np.ndarray | None
    keys: list[str]
    rejected: dict[int, str]


class Reader:
    """Base of the readers: five facts about the source and :meth:`read`."""

    size: int | None = None  # items; None: endless (a looping video)
    has_labels: bool = False
    class_names: tuple[str, ...] | None = None
    fps: float | None = None
    text: bool = False

    def read(self, idx: np.ndarray) -> Loaded:
        """The items at ``idx`` (int64 item indices)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files and threads (the reader cannot read after)."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shape_text(shape: tuple[int, ...]) -> str:
    if len(shape) == 3 and shape[0] == 3:
        return f"{shape[2]}x{shape[1]}"
    return str(shape)


def _majority(values: list) -> Any:
    """The most frequent value, the earliest on a tie."""
    counts = Counter(values)
    top = max(counts.values())
    return next(v for v in values if counts[v] == top)


def assemble(
    values: Sequence[np.ndarray | str | None],
    keys: list[str],
    rejected: dict[int, str],
    labels: Sequence[int] | None = None,
) -> Loaded:
    """A :class:`Loaded` from one value per requested position (None where ``rejected`` already
    holds the reason). Strings and arrays do not mix, and arrays must share one shape: the kind
    and shape most items have win (the earliest on a tie); the others are rejected."""
    rejected = dict(rejected)
    good = [i for i, v in enumerate(values) if v is not None and i not in rejected]
    kinds = [isinstance(values[i], str) for i in good]
    want_text = _majority(kinds) if kinds else False
    for i, is_text in zip(good, kinds, strict=True):
        if is_text != want_text:
            rejected[i] = "an array among strings" if want_text else "a string among arrays"
    good = [i for i in good if i not in rejected]
    x: np.ndarray | list[str]
    if want_text:
        x = [str(values[i]) for i in good]
    else:
        arrays = {i: np.asarray(values[i]) for i in good}
        shapes = [a.shape for a in arrays.values()]
        ref = _majority(shapes) if shapes else ()
        for i, a in arrays.items():
            if a.shape != ref:
                rejected[i] = (
                    f"size {_shape_text(a.shape)} differs from the batch's {_shape_text(ref)} "
                    "(a transform that resizes and crops makes one size)"
                )
        good = [i for i in good if i not in rejected]
        x = np.stack([arrays[i] for i in good]) if good else np.zeros((0,), np.float32)
    y = None if labels is None else np.asarray([labels[i] for i in good], np.int64)
    return Loaded(x=x, labels=y, keys=keys, rejected=dict(sorted(rejected.items())))


def _array(item: Any) -> np.ndarray:
    """A float32 copy of a numpy array or torch tensor; :class:`Rejected` if unusable."""
    if type(item).__module__.startswith("torch"):
        item = item.detach().cpu()
        if item.is_complex():
            raise Rejected("a complex tensor")
        item = item.float().numpy()
    kind = item.dtype.kind
    if kind not in "biuf":
        raise Rejected(f"an array of dtype {item.dtype} (numbers are needed)")
    x = np.array(item, dtype=np.float32, copy=True)
    if not np.isfinite(x).all():
        raise Rejected("non-finite values (NaN or infinity)")
    return x


def _is_tensor(item: Any) -> bool:
    return type(item).__module__.startswith("torch") and hasattr(item, "detach")


def convert_one(item: Any, transform: Transform | None) -> np.ndarray | str:
    """One raw item as a float32 array or a string; :class:`Rejected` with the reason."""
    if isinstance(item, str):
        return item
    if isinstance(item, Image.Image):
        try:
            return plain(item) if transform is None else transform.apply(item)
        except (OSError, ValueError) as exc:
            raise Rejected(f"cannot convert the image: {one_line(exc)}") from None
    if isinstance(item, bytes | bytearray | memoryview):
        return decode_image(bytes(item), transform)
    if isinstance(item, np.ndarray) or _is_tensor(item):
        return _array(item)
    raise Rejected(
        f"unsupported item type {type(item).__name__} (a PIL image, array, tensor, str or bytes)"
    )


def convert_items(items: list, transform: Transform | None, first_key: int) -> Loaded:
    """A batch of the user's items; a ``(key, item)`` tuple keys itself (``str(key)``), else the
    key is ``str(first_key + position)``."""
    keys: list[str] = []
    values: list[np.ndarray | str | None] = []
    rejected: dict[int, str] = {}
    for pos, raw in enumerate(items):
        item = raw
        if isinstance(raw, tuple) and len(raw) == 2:
            keys.append(str(raw[0]))
            item = raw[1]
        else:
            keys.append(str(first_key + pos))
        try:
            values.append(convert_one(item, transform))
        except Rejected as exc:
            values.append(None)
            rejected[pos] = str(exc)
        except Exception as exc:  # a user's odd object: its item is rejected, the batch goes on
            values.append(None)
            rejected[pos] = f"cannot convert the item: {type(exc).__name__}: {one_line(exc)}"
    return assemble(values, keys, rejected)
