"""splitstream pipeline: models and split points, config, flow control, graph wiring, CLI.

Import-light on purpose: importing ``pipeline`` pulls in neither torch nor Ray; use the
submodules (``pipeline.config``, ``pipeline.runner``, ...) directly.
"""

__all__ = ["load_config", "run_pipeline"]


def load_config(*args, **kwargs):
    """Shortcut for :func:`pipeline.config.load_config`."""
    from pipeline.config import load_config as _load

    return _load(*args, **kwargs)


def run_pipeline(*args, **kwargs):
    """Shortcut for :func:`pipeline.runner.run_pipeline`."""
    from pipeline.runner import run_pipeline as _run

    return _run(*args, **kwargs)
