"""Exact estimates with rank 1 slowed down 4x; the timing logs show who executed what.

usage: straggler.py OUT_DIR SCHEDULE QUERIES [enumerated [DELAY]]
Runs the workload's first run QUERIES times; rank 0 writes OUT_DIR/results.npz (``evs/Q/0``).
``enumerated`` runs one experiment per subexperiment and row (``coherent=False``): many more,
smaller work units, for schedules over many ranks. ``DELAY``: seconds rank 1 also sleeps per
tile batch, beyond the 4x (tiles of a few ms on oversubscribed cores cost every rank more in
waiting for a core than the 4x costs rank 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import hpcqnn
from workload import MODEL, collect, runs

out, schedule, queries = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
enumerated = sys.argv[4:5] == ["enumerated"]
delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
with hpcqnn.mpi_estimator(
    partition_labels=MODEL.partition_labels, schedule=schedule, coherent=not enumerated,
    straggler=hpcqnn.Straggler(ranks=(1,), slowdown=4.0, delay=delay), timing_dir=out,
) as est:
    if est is not None:
        np.savez(out / "results.npz", **collect(est, runs()[:1] * queries))
