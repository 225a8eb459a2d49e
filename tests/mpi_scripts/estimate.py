"""Exact, then sampled, estimates of the workload under mpiexec.

usage: estimate.py OUT_DIR SCHEDULE
Timing goes to OUT_DIR/{exact,sampled}/timing/; rank 0 writes OUT_DIR/results.npz with keys
``MODE/evs/RUN/PUB`` and ``MODE/stds/RUN/PUB``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from workload import MODEL, SEED, SHOTS, collect

import hpcqnn

out, schedule = Path(sys.argv[1]), sys.argv[2]
results: dict[str, np.ndarray] = {}
for mode, shots in (("exact", None), ("sampled", SHOTS)):
    with hpcqnn.mpi_estimator(
        partition_labels=MODEL.partition_labels, shots=shots, seed=SEED, schedule=schedule,
        timing_dir=out / mode, config_text=json.dumps({"mode": mode, "schedule": schedule}),
    ) as est:
        if est is not None:
            results.update({f"{mode}/{key}": value for key, value in collect(est).items()})
if results:  # rank 0
    np.savez(out / "results.npz", **results)
