"""Offline evaluation of a split model through the codec: rate against task fidelity
(``evaluate``, ``python -m pipeline.evaluation.evaluate``; also the rate controller's profiles), the
fidelity measures themselves (``fidelity``), and the lm-evaluation-harness model ``splitstream``
(``lm_eval_adapter``). Importing this package imports none of them."""
