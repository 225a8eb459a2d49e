"""Shared test set-up: the skips of the ``mpi`` and ``slurm`` markers, decided once here.

- ``mpi`` (the test launches ``mpiexec``): skipped, with the reason, only where no ``mpiexec``
  is found (``bounded.MPIEXEC``: the venv's, i.e. the pip MPICH, before any other on the PATH).
- ``slurm``: the tests that need the local cluster take the ``slurm_cluster_possible`` fixture,
  which skips them, with the reason, where ``slurm/local_cluster.sh`` cannot run (not root; or
  Slurm and munge missing with no apt-get to install them). The ``slurm`` tests that need no
  cluster (the scripts parse, ``slurm_info``, the workstation sweep) run everywhere.

Tolerances shared by the suites are named in ``tests/tolerances.py`` (a module, so that tests
import them; pytest does not mean conftest.py to be imported).
"""

from __future__ import annotations

import os
import shutil

import pytest

from bounded import MPIEXEC

#: What slurm/local_cluster.sh installs (slurm-wlm, munge) when any of these is missing.
SLURM_TOOLS = ("slurmctld", "slurmd", "sbatch", "munged")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MPIEXEC is not None:
        return
    skip = pytest.mark.skip(reason="no mpiexec found (neither next to this Python nor on the PATH)")
    for item in items:
        if item.get_closest_marker("mpi") is not None:
            item.add_marker(skip)


def slurm_cluster_problem() -> str | None:
    """Why ``slurm/local_cluster.sh start`` cannot work on this machine, or None."""
    if os.geteuid() != 0:
        return "slurm/local_cluster.sh needs root (it installs and runs slurmctld, slurmd, munged)"
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing and shutil.which("apt-get") is None:
        return f"Slurm/munge missing ({', '.join(missing)}) and no apt-get to install slurm-wlm and munge"
    return None


@pytest.fixture(scope="session")
def slurm_cluster_possible() -> None:
    """Skip the requesting test where the local Slurm cluster cannot be started (see the module
    docstring); whether it then starts is the ``cluster`` fixture's business (tests/test_slurm.py)."""
    problem = slurm_cluster_problem()
    if problem is not None:
        pytest.skip(problem)
