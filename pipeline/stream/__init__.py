"""The stream's building blocks, free of Ray actors: config (``config``), flow control (``flow``),
emulated links (``link``), payloads on the wire (``wire``), sample sources (``data``) and metrics
(``metrics``). The Ray actors in ``actors`` are made of these; ``splitstream`` wires them together."""
