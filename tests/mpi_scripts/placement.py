"""Where every rank computes, under mpiexec.

usage: placement.py OUT_DIR DEVICE
Opens ``mpi_estimator(device=DEVICE)`` twice (timing logs in OUT_DIR/first and OUT_DIR/second,
whose attributes record each rank's device, GPU and local rank); rank 0 runs one exact query in
the first and writes OUT_DIR/values.npy. With DEVICE=GPU each rank also writes
OUT_DIR/cupy-RANK.txt: CuPy's current device after placement.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

import hpcqnn
from workload import MODEL

out, device = Path(sys.argv[1]), sys.argv[2]
for name in ("first", "second"):
    with hpcqnn.mpi_estimator(partition_labels=MODEL.partition_labels, device=device, timing_dir=out / name) as est:
        if est is not None and name == "first":
            params = np.random.default_rng(5).uniform(-np.pi, np.pi, (3, MODEL.circuit.num_parameters))
            np.save(out / "values.npy", est.run([(MODEL.circuit, MODEL.observable, params)]).result()[0].data.evs)
        if name == "first" and device == "GPU":
            import cupy

            (out / f"cupy-{MPI.COMM_WORLD.Get_rank()}.txt").write_text(str(cupy.cuda.Device().id))
