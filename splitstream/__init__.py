"""splitstream's top layer: builds the Ray actor graph from a config, runs the stream and reports
(``splitstream.runner``), and the command line (``splitstream``, ``splitstream.cli``).

Layers, each importing only those before it: ``codec`` <- ``pipeline`` <- ``actors`` <- ``splitstream``.
"""

__all__ = ["Stream", "load_config", "run_pipeline"]


def load_config(*args, **kwargs):
    """Shortcut for :func:`pipeline.stream.config.load_config`."""
    from pipeline.stream.config import load_config as _load

    return _load(*args, **kwargs)


def run_pipeline(*args, **kwargs):
    """Shortcut for :func:`splitstream.runner.run_pipeline`."""
    from splitstream.runner import run_pipeline as _run

    return _run(*args, **kwargs)


def __getattr__(name: str):
    if name == "Stream":  # imported on first use: the package stays light to import
        from splitstream.stream import Stream

        return Stream
    raise AttributeError(name)
