"""A rank fails while serving its second query: rank 1 raises, or rank 2 is SIGKILLed.

usage: failure.py OUT_DIR raise|kill
Static schedule, so every rank executes once per query. Rank 0 touches OUT_DIR/done-Q after
finishing query Q; timing goes to OUT_DIR/timing/.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from pathlib import Path

from mpi4py import MPI

import hpcqnn
from hpcqnn.execution.simulator import AerRunner
from workload import MODEL, runs

out, how = Path(sys.argv[1]), sys.argv[2]
rank = MPI.COMM_WORLD.Get_rank()
if rank == {"raise": 1, "kill": 2}[how]:
    run_tiles = AerRunner.run
    calls = itertools.count()

    def failing_run(self, compiled, rows, tiles, *rest):
        if next(calls) >= 1:
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected failure on rank {rank}")
        return run_tiles(self, compiled, rows, tiles, *rest)

    AerRunner.run = failing_run

with hpcqnn.mpi_estimator(partition_labels=MODEL.partition_labels, schedule="static", timing_dir=out) as est:
    if est is not None:
        for query in range(3):
            est.run(runs()[0]).result()
            (out / f"done-{query}").touch()
