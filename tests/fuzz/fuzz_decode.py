"""Coverage-guided fuzz target for ``codec.decode`` (atheris: libFuzzer driving Python and the C kernels).

Any input must either decode to an array of the shape the frame declares or raise CodecError; any other
exception, a sanitizer report, a timeout or an allocation above libFuzzer's limit is a finding. A mutant
whose CRC-32 no longer matches is also tried resealed, so that it reaches the parser and the kernels
behind the checksum (a custom mutator would do it, but libFuzzer preloaded with the sanitizer runtime
ignores custom mutators). Run it through ``pytest -m fuzz`` (tests/test_fuzz.py builds the AddressSanitizer +
UndefinedBehaviorSanitizer extension and passes the libFuzzer flags), or by hand as shown there.
"""

from __future__ import annotations

import struct
import sys
import zlib

import atheris

with atheris.instrument_imports(include=["codec"]):
    import codec

MAX_ELEMENTS = 1 << 20  # a decoded frame takes at most 4 MiB of float32


def reseal(body: bytes) -> bytes:
    """``body`` followed by its CRC-32: a forged but well-checksummed frame."""
    return body + struct.pack("<I", zlib.crc32(body))


def check(blob: bytes) -> None:
    """Decodes to the declared shape, or raises CodecError; anything else escapes as a finding."""
    try:
        out = codec.decode(blob, max_elements=MAX_ELEMENTS)
    except codec.CodecError:
        return
    info = codec.inspect(blob, max_elements=MAX_ELEMENTS)
    if out.shape != info.shape:
        raise AssertionError(f"decoded shape {out.shape} != declared {info.shape}")


def test_one_input(data: bytes) -> None:
    check(data)
    if len(data) >= 4 and zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        # the mutant again with its checksum recomputed, so that it reaches the parser and the kernels
        check(reseal(data[:-4]))


def main() -> None:
    print(f"kernels: {codec._kernels.__file__}", file=sys.stderr)  # which build is fuzzed
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
