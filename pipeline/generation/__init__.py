"""Split generation: a causal LM cut in two, with a KV cache on each side, one coded hidden vector up
the link and one token down per step (``generate``; the ``splitstream generate`` command)."""
