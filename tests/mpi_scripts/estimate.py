"""Exact, then sampled, estimates of the workload under mpiexec.

usage: estimate.py OUT_DIR SCHEDULE [SHAPE]
Without SHAPE it runs the MODEL workload, with one the workload.SHAPES entry of that name.
Timing goes to OUT_DIR/{exact,sampled}/timing/; rank 0 writes OUT_DIR/results.npz with keys
``MODE/evs/RUN/PUB`` and ``MODE/stds/RUN/PUB``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import hpcqnn
from workload import MODEL, SEED, SHAPES, SHOTS, collect, shape_runs

out, schedule = Path(sys.argv[1]), sys.argv[2]
shape = sys.argv[3] if len(sys.argv) > 3 else None
options = SHAPES[shape][0] if shape else {"partition_labels": MODEL.partition_labels}
selected = shape_runs(shape) if shape else None
results: dict[str, np.ndarray] = {}
for mode, shots in (("exact", None), ("sampled", SHOTS)):
    with hpcqnn.mpi_estimator(
        **options, shots=shots, seed=SEED, schedule=schedule,
        timing_dir=out / mode, config_text=json.dumps({"mode": mode, "schedule": schedule}),
    ) as est:
        if est is not None:
            results.update({f"{mode}/{key}": value for key, value in collect(est, selected).items()})
if results:  # rank 0
    np.savez(out / "results.npz", **results)
