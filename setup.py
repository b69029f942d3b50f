"""Builds the codec's C kernels (quantization, statistics, interleaved rANS)."""

from setuptools import Extension, setup

# one file per concern (see codec/csrc/internal.h); module.c holds the Python bindings, runtime.c the
# kernels' allocator hook and CPU-feature detection (tests/test_csrc_layout.py checks this list is complete)
SOURCES = [
    "module.c",
    "runtime.c",
    "contexts.c",
    "costmodel.c",
    "quantize.c",
    "stats.c",
    "represent.c",
    "tables.c",
    "rans_encode.c",
    "rans_decode.c",
    "frame.c",
    "frame_write.c",
    "crc32.c",
]

setup(
    ext_modules=[
        Extension(
            "codec._kernels",
            sources=[f"codec/csrc/{name}" for name in SOURCES],
            depends=["codec/csrc/internal.h"],
            extra_compile_args=[
                "-O3",
                "-std=c11",
                "-ffp-contract=off",
                "-fno-math-errno",
                "-fno-strict-aliasing",
                "-Wall",
                "-Wno-unused-function",
            ],
        )
    ]
)
