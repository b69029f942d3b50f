"""The codec's one exception type."""


class CodecError(ValueError):
    """A frame or an input the codec cannot process: malformed, truncated, corrupted or out of range."""
