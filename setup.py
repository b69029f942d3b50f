"""Builds the codec's C kernels (quantization, statistics, interleaved rANS)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "codec._kernels",
            sources=["codec/_kernels.c", "codec/csrc/crc32.c"],
            depends=["codec/csrc/crc32.h"],
            extra_compile_args=["-O3", "-std=c11", "-ffp-contract=off", "-fno-math-errno", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"],
        )
    ]
)
