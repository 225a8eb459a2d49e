"""Rank 0's code raises inside the ``mpi_estimator`` block; no code after the block may run.

usage: root_error.py OUT_DIR
MPICH's ``MPI_Abort`` can return before the launcher kills the job; here it always returns
(touching OUT_DIR/abort-RANK), so a fall-through is seen every time: a rank that gets past the
block touches OUT_DIR/after-RANK, then ends the job itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mpi4py import MPI

import hpcqnn
from workload import MODEL, runs

out = Path(sys.argv[1])


class ReturningAbort(MPI.Intracomm):
    def Abort(self, errorcode: int = 0) -> None:
        (out / f"abort-{self.Get_rank()}").touch()


with hpcqnn.mpi_estimator(comm=ReturningAbort(MPI.COMM_WORLD), partition_labels=MODEL.partition_labels) as est:
    if est is not None:
        est.run(runs()[0]).result()
        raise ValueError("injected failure in rank 0's code")
(out / f"after-{MPI.COMM_WORLD.Get_rank()}").touch()
MPI.COMM_WORLD.Abort(1)
