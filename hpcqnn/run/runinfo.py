"""What a run records about where and how it ran: ``identity`` (every rank's timing log),
``provenance`` (identity plus versions and the Slurm job: results.json and the benchmarks'
reports) and ``run_metadata`` (results.json)."""

from __future__ import annotations

import json
import os
import platform
import socket
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from hpcqnn import __version__
from hpcqnn.run.slurm import slurm_info
from hpcqnn.run.timing import query_summary

if TYPE_CHECKING:  # the config module loads the datasets' libraries; gpucheck needs none of it
    from hpcqnn.run.config import Config

#: The GPU stack (gpucheck lists these), then everything a run's versions record.
GPU_PACKAGES = (
    "qiskit-aer",
    "qiskit-aer-gpu",
    "qiskit-aer-gpu-cu11",
    "cupy-cuda13x",
    "cupy-cuda12x",
    "cupy-cuda11x",
    "cupy",
)
PACKAGES = ("qiskit", "qiskit-addon-cutting", "numpy", "mpi4py", "mpich", "h5py", *GPU_PACKAGES)


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Versions of those of ``names`` that are installed."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def package_versions() -> dict[str, str]:
    return {"hpcqnn": __version__, "python": platform.python_version(), **installed_versions(PACKAGES)}


def identity(mpi_library: str | None = None) -> dict:
    """Where this process runs: host, hpcqnn version and the MPI library (given by the caller:
    this module loads no MPI). Every rank's timing log records it."""
    found = {"hostname": socket.gethostname(), "hpcqnn_version": __version__}
    return found if mpi_library is None else {**found, "mpi_library": mpi_library}


def provenance(mpi_library: str | None = None) -> dict:
    """``identity`` plus the package versions and the Slurm job (``{}`` outside Slurm), for
    results.json and the benchmarks' reports."""
    return {**identity(mpi_library), "versions": package_versions(), "slurm": slurm_info()}


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON to ``path``, creating its folder. Atomic: a results.json
    marks a finished run (the job scripts skip or requeue by it), so it never exists half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)


def write_report(path: Path | None, report: object) -> None:
    """``write_json`` and say so on stdout; nothing without a path (a command's --json)."""
    if path is not None:
        write_json(path, report)
        print(f"\nwrote {path}")


def run_metadata(config: Config, estimator, wall_seconds: float) -> dict:
    """Config, the cut plan (as ``hpcqnn plan`` prints it: partitions, subexperiments, the qubits
    each simulates), ranks, devices (rank 0's, and every rank's), the noise subexperiments ran
    with, versions, rank 0's per-query phase summary and the unreadable earlier timing logs set
    aside when the run resumed."""
    from hpcqnn.parallel._core import mpi_library
    from hpcqnn.run.config import config_dict
    from hpcqnn.tools.planner import recorded_plan

    return {
        "config": config_dict(config),
        "plan": recorded_plan(config, estimator),
        "ranks": estimator.engine.size,
        **estimator.engine.placement.attributes(),  # rank 0's device and GPU
        "rank_devices": estimator.engine.rank_devices,
        "noise": None if estimator.noise is None else estimator.noise.description,
        **provenance(mpi_library()),
        "wall_seconds": wall_seconds,
        "query_phases": query_summary(estimator.recorder.rows),
        "timing_logs_set_aside": estimator.engine.set_aside_logs,
    }
