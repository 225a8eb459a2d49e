"""What the process launcher (mpiexec/hydra, Open MPI, srun) tells each process it started.

Pure: reads environment variables only, so it also works where MPI has not started yet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Per-process local rank, innermost launcher first: mpiexec's own (MPICH/hydra, Open MPI) before
#: Slurm's, because ``mpiexec`` inside a batch script inherits the batch step's SLURM_LOCALID (0
#: for every rank).
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
#: How many processes were started, in the same order.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
#: This process's index among them, in the same order.
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")


def _first_count(names: tuple[str, ...], environ: Mapping[str, str] | None) -> int | None:
    environ = os.environ if environ is None else environ
    for name in names:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return None


def local_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's index on its node as its launcher set it, else 0.

    For processes outside an MPI world; MPI ranks take theirs from the MPI world itself.
    """
    found = _first_count(LOCAL_RANK_VARIABLES, environ)
    return 0 if found is None else found


def size(environ: Mapping[str, str] | None = None) -> int | None:
    """How many processes the launcher says it started; ``None`` when not started by one."""
    return _first_count(SIZE_VARIABLES, environ)


def rank(environ: Mapping[str, str] | None = None) -> int | None:
    """This process's index among the processes its launcher started; ``None`` when not
    started by one."""
    return _first_count(RANK_VARIABLES, environ)
