"""The stream's building blocks, free of Ray actors: config (``config``), flow control (``flow``),
emulated links (``link``), payloads on the wire (``wire``), sample sources (``data``, and the readers of
the user's files in ``sources``), result rows and their output (``results``, ``output``), resume
checkpoints (``checkpoint``), stop requests (``stopping``), the Python API's iterable (``feeder``) and
metrics (``metrics``). The Ray actors in ``actors`` are made of these; ``splitstream`` wires them
together."""
