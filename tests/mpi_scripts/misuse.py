"""Rank 0 misuses the session: runs a query after leaving the ``mpi_estimator`` block
(``after``), or opens a second block inside the first (``nested``). Either must end the job
with a named error, not wait for workers that are not listening.

usage: misuse.py after|nested
"""

from __future__ import annotations

import sys

import hpcqnn
from workload import MODEL, runs

how = sys.argv[1]
with hpcqnn.mpi_estimator(partition_labels=MODEL.partition_labels) as est:
    if est is not None:
        est.run(runs()[0]).result()
        if how == "nested":
            with hpcqnn.mpi_estimator(partition_labels=MODEL.partition_labels):
                pass
if est is not None:
    est.run(runs()[0]).result()
