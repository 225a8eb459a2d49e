"""Analysis of hpcqnn run directories: tidy tables, derived numbers, figures, a replay model.

- ``analysis.load``: run directories (per-rank HDF5 timing logs, ``results.json``, config) ->
  pandas tables.
- ``analysis.metrics``: pure functions on those tables (critical path, phase shares, scaling,
  cut overhead, straggler sensitivity, accuracy and robustness, seed matrices: mean ± std over
  seeds per cut count).
- ``analysis.figures``: matplotlib figures (PNG and PDF).
- ``analysis.replay``: a calibrated discrete-event model of a query's critical path, validated
  on the measured rank counts and projected to 1024 ranks.
- ``python -m analysis.report RUN_DIR... --out REPORT_DIR`` and ``python -m analysis.sweep --out DIR``.
"""
