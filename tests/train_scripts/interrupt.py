"""``hpcqnn train`` (``hpcqnn.cli.main``) preempted the way Slurm does it, SIGTERM to every rank,
or stopped the way mpiexec passes on a Ctrl-C, SIGINT to every rank.

usage: interrupt.py N[:INT][@RANK] train CONFIG --out DIR [--set ...]
       interrupt.py fgsm[:INT][@RANK] train CONFIG --out DIR [--set ...]

On rank 0, the N-th call of ``QNNClassifier.loss_and_gradient`` (one training step) - or with
``fgsm`` the final evaluation's input-gradient query - first sends the signal (SIGTERM, or
SIGINT with ``:INT``) to every rank of the job, or with ``@RANK`` to that rank alone (their pids
are gathered before the run starts), then computes as usual, so the run stops at a known point.
Works as a plain process (one rank) and under ``mpiexec -n R python -m mpi4py``.
"""

from __future__ import annotations

import os
import signal
import sys

from mpi4py import MPI

from hpcqnn import cli
from hpcqnn.training.model import QNNClassifier

spec, _, only = sys.argv[1].partition("@")
when, _, name = spec.partition(":")
method, stop_at = ("input_gradient", 1) if when == "fgsm" else ("loss_and_gradient", int(when))
signum = signal.Signals[f"SIG{name or 'TERM'}"]
pids = MPI.COMM_WORLD.allgather(os.getpid())
if only:
    pids = [pids[int(only)]]
original = getattr(QNNClassifier, method)
calls = 0


def preempted(self, *args, **kwargs):
    global calls
    calls += 1
    if calls == stop_at:
        for pid in pids:
            os.kill(pid, signum)
    return original(self, *args, **kwargs)


setattr(QNNClassifier, method, preempted)
raise SystemExit(cli.main(sys.argv[2:]))
