"""``hpcqnn train`` (``hpcqnn.cli.main``) preempted the way Slurm does it, SIGTERM to every rank,
or stopped the way mpiexec passes on a Ctrl-C, SIGINT to every rank.

usage: interrupt.py N[:INT] train CONFIG --out DIR [--set ...]

On rank 0, the N-th call of ``QNNClassifier.loss_and_gradient`` (one training step) first sends
the signal (SIGTERM, or SIGINT with ``:INT``) to every rank of the job (their pids are gathered
before the run starts), then computes the step as usual, so the run stops at a known step.
Works as a plain process (one rank) and under ``mpiexec -n R python -m mpi4py``.
"""

from __future__ import annotations

import os
import signal
import sys

from mpi4py import MPI

from hpcqnn import cli
from hpcqnn.model import QNNClassifier

step, _, name = sys.argv[1].partition(":")
stop_at, signum = int(step), signal.Signals[f"SIG{name or 'TERM'}"]
pids = MPI.COMM_WORLD.allgather(os.getpid())
original = QNNClassifier.loss_and_gradient
calls = 0


def preempted_loss_and_gradient(self, *args, **kwargs):
    global calls
    calls += 1
    if calls == stop_at:
        for pid in pids:
            os.kill(pid, signum)
    return original(self, *args, **kwargs)


QNNClassifier.loss_and_gradient = preempted_loss_and_gradient
raise SystemExit(cli.main(sys.argv[2:]))
