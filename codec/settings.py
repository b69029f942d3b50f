"""``CodecSettings``: the four knobs of ``codec.encode`` (bits, level, axis, clip) as one value.

The layers above the codec (the wire, the stream's actors, rate control, evaluation) pass one of these
instead of four loose parameters. It is frozen and hashable, compares by value, pickles (Ray sends it
to actors), and checks its fields as ``codec.encode`` does, raising :class:`codec.CodecError`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .api import check_bits, check_level
from .costmodel import DEFAULT_LEVEL
from .errors import CodecError
from .quantize import check_clip


@dataclass(frozen=True, order=True)
class CodecSettings:
    """``bits`` 1..8, ``level`` 1..9, ``axis`` (None: per tensor, else the per-channel axis) and
    ``clip`` (None, "mse", "wmse" or "wmse_ends"), with ``codec.encode``'s defaults and meaning."""

    bits: int = 8
    level: int = DEFAULT_LEVEL
    axis: int | None = None
    clip: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", check_bits(self.bits))
        object.__setattr__(self, "level", check_level(self.level))
        if self.axis is not None:
            if isinstance(self.axis, bool) or not isinstance(self.axis, int | np.integer):
                raise CodecError(f"axis must be an integer or None, got {self.axis!r}")
            object.__setattr__(self, "axis", int(self.axis))
        check_clip(self.clip)

    def with_bits(self, bits: int) -> CodecSettings:
        """The same settings at another bit width."""
        return dataclasses.replace(self, bits=bits)

    def as_dict(self) -> dict[str, Any]:
        """``{"bits", "level", "axis", "clip"}``: the keyword arguments of ``codec.encode``."""
        return {"bits": self.bits, "level": self.level, "axis": self.axis, "clip": self.clip}

    def label(self) -> str:
        """A short name, e.g. ``8b/L3/tensor`` or ``4b/L3/axis1/mse``."""
        gran = "tensor" if self.axis is None else f"axis{self.axis}"
        return f"{self.bits}b/L{self.level}/{gran}" + ("" if self.clip is None else f"/{self.clip}")
