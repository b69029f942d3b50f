"""splitstream's middle layer, one package per subsystem: models and split points, with their
weights, training and sample photographs (``pipeline.models``); offline evaluation
(``pipeline.evaluation``: rate against fidelity, the fidelity measures, the lm-eval adapter); split
generation with a KV cache on each side (``pipeline.generation``); and the stream's building blocks
without any Ray actor (``pipeline.stream``: config, flow control, links, wire format, data,
metrics).

Import-light on purpose: importing ``pipeline`` pulls in neither torch nor Ray. The Ray actors live one
layer up in ``actors``, and the wiring and command line one more layer up in ``splitstream``.
"""

__all__ = ["load_config"]


def load_config(*args, **kwargs):
    """Shortcut for :func:`pipeline.stream.config.load_config`."""
    from pipeline.stream.config import load_config as _load

    return _load(*args, **kwargs)
