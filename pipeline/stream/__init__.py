"""The stream's building blocks, free of Ray actors: config (``config``, its schema in
``config_schema``), flow control (``flow``), emulated links (``link``, their outage windows in
``outages``), payloads on the wire (``wire``), sample sources (``data``, and the readers of the user's
files in ``sources``), result rows and their output (``results``, ``output``), resume checkpoints
(``checkpoint``), stop requests (``stopping``), the Python API's iterable (``feeder``), metrics
(``metrics``) and the run report (``report``). The Ray actors in ``actors`` are made of these;
``splitstream`` wires them together."""
