"""splitstream's feature codec: asymmetric integer quantization, dense / packed / sparse symbol
representations chosen by a cost model, context-modelled 32-lane interleaved rANS, checksummed frames.

    blob = codec.encode(x, bits=8)      # NumPy array or torch tensor -> bytes
    y = codec.decode(blob)              # NumPy array, original shape
    y = codec.decode(blob, device="cuda")   # on the GPU (codec.gpu, numba-cuda), a CUDA array

CUDA arrays (torch CUDA tensors, CuPy arrays) are encoded on the device; ``codec.device`` documents the
``device=`` argument and counts the device path's host fallbacks.
"""

from . import arrow, device
from .api import FrameInfo, decode, encode, inspect
from .batch import Workspace, decode_batch, encode_batch
from .costmodel import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL
from .device import DeviceFallbackWarning
from .errors import CodecError
from .session import Session
from .settings import CodecSettings

__all__ = [
    "arrow",
    "CodecError",
    "CodecSettings",
    "DEFAULT_LEVEL",
    "DeviceFallbackWarning",
    "device",
    "FrameInfo",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "Session",
    "Workspace",
    "decode",
    "decode_batch",
    "encode",
    "encode_batch",
    "inspect",
]
__version__ = "0.1.0"
