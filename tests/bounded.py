"""Subprocesses that cannot hang a test: a job outliving its timeout fails the test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: The venv's mpiexec (the pip MPICH) before any other on the PATH; None where there is none.
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def mpi_command(ranks: int, *args: object) -> list[str]:
    """``mpiexec -n ranks python -m mpi4py ARGS``: an uncaught exception on a rank aborts the job."""
    return [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mpi4py", *map(str, args)]


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the MPI launcher's variables (a child is no rank of ours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_"))}
    env.update(extra or {})
    return env


def run_bounded(
    command: list[str], timeout: float, env: dict[str, str], merge_output: bool, cwd=None
) -> tuple[int, str]:
    """Exit status and output (stdout then stderr, or interleaved when ``merge_output``)."""
    stderr = subprocess.STDOUT if merge_output else subprocess.PIPE
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # mpiexec (hydra) takes its ranks down on SIGTERM
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"{' '.join(command)} still ran after {timeout} s\n{out}\n{err or ''}")
    return proc.returncode, out + (err or "")
