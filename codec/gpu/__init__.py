"""GPU path of the codec (numba-cuda), in progress: order-0 rANS kernels that read and write exactly the
CPU's stream bytes, quantize / dequantize kernels that give exactly the CPU's symbols and floats, and the
representation kernels (packed, delta, delta-packed, delta-nibble, sparse: undone and built exactly as on
the CPU), so that a frame whose streams are order-0 or stored decodes on the device end to end.
Needs ``numba-cuda`` (the ``dev`` extra); ``import codec`` never imports this package.

    from codec.gpu import rans
    symbols = rans.decode(payload, n, freqs, prob_bits, block_log2)   # == codec.rans.decode(...)
    payload = rans.encode(symbols, freqs, prob_bits, block_log2)      # == codec.rans.encode(...)

    from codec.gpu import quantize
    q, params, hist = quantize.quantize(x, bits, axis, clip=clip)    # == codec.quantize.quantize(...)
    y = quantize.dequantize(q, params, shape)                         # == codec.quantize.dequantize(...)

    from codec.gpu import represent
    q = represent.merge(streams, kind, param, n, layout, bits)         # == codec.represent.merge(...)
    streams = represent.split(q, kind, param, layout, bits)            # == codec.represent.split(...)

    from codec.gpu import frame
    y = frame.decode(blob)              # == codec.decode(blob) (order-0 / stored streams), all on the device
    y_dev, parsed = frame.decode_device(blob, out=device_vector)      # float32, left on the device
    blob = frame.encode_candidate(x, candidate, bits, axis)            # == api.encode_prepared(...)
"""

try:
    import numba.cuda  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("codec.gpu needs numba-cuda: pip install numba-cuda") from exc
