"""Byte-level helpers for the codec's frame tests: every frame ends in the CRC-32 (zlib's,
little-endian) of the bytes before it, so a forged frame needs it recomputed to reach the parser."""

from __future__ import annotations

import struct
import zlib


def reseal(body: bytes | bytearray) -> bytes:
    """``body`` followed by its checksum."""
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def recrc(blob: bytes | bytearray) -> bytes:
    """``blob`` with its last four bytes (the checksum) made right again."""
    return reseal(blob[:-4])
