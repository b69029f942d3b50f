"""The run report: one JSON-able dict of constant size (``build``), its plain-text table and title
(``table``) and its PNG summaries (``plots``).

Every figure says where it was measured: ``goodput_mbps`` at the receiver (the decoder's arrival stamps
and the batches' wire bytes), latencies at the sink, per-stage figures in the stage's own calls; the
emulated link's own schedule is reported apart, under ``link`` (``scheduled_mbps``,
``utilization_scheduled``, and the configured ``outages`` per edge).
"""

from pipeline.stream.report.build import build_report, edge_summary, link_outages
from pipeline.stream.report.plots import (
    FIDELITY_BARS,
    FIDELITY_SERIES,
    outage_spans,
    plot_rate_timeline,
    plot_report,
)
from pipeline.stream.report.table import (
    STOP_REASONS,
    format_report,
    node_label,
    run_title,
    simulated_device_label,
)

__all__ = [
    "FIDELITY_BARS",
    "FIDELITY_SERIES",
    "STOP_REASONS",
    "build_report",
    "edge_summary",
    "format_report",
    "link_outages",
    "node_label",
    "outage_spans",
    "plot_rate_timeline",
    "plot_report",
    "run_title",
    "simulated_device_label",
]
