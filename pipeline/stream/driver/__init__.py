"""The stream driver's parts: its state (:mod:`.state`), how it is built (:mod:`.build`), the one module
that calls Ray (:mod:`.ray_calls`), and the policies the executor's loop delegates to: admission and
credits, dispatching calls, rate decisions, delivery accounting, replay and recovery, watchdogs,
autoscaling glue, metering and the report. Only :mod:`.ray_calls` imports Ray; no part imports the
executor."""
