"""GPU path of the codec (numba-cuda), in progress: order-0 rANS kernels that read and write exactly the
CPU's stream bytes, and quantize / dequantize kernels that give exactly the CPU's symbols and floats.
Needs ``numba-cuda`` (the ``dev`` extra); ``import codec`` never imports this package.

    from codec.gpu import rans
    symbols = rans.decode(payload, n, freqs, prob_bits, block_log2)   # == codec.rans.decode(...)
    payload = rans.encode(symbols, freqs, prob_bits, block_log2)      # == codec.rans.encode(...)

    from codec.gpu import quantize
    q, params, hist = quantize.quantize(x, bits, axis, clip=clip)    # == codec.quantize.quantize(...)
    y = quantize.dequantize(q, params, shape)                         # == codec.quantize.dequantize(...)
"""

try:
    import numba.cuda  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("codec.gpu needs numba-cuda: pip install numba-cuda") from exc
