"""Where a run sits in Slurm: the ``SLURM_*`` variables, read in one place.

Pure (no mpi4py, no Slurm commands): ``slurm_info()`` turns the environment of a process started
by ``sbatch``/``srun`` into a small dict for ``results.json``; ``slurm_attributes()`` gives the same
as flat ``slurm_*`` HDF5 attributes. Outside Slurm both are empty.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# key in slurm_info() -> the variables that may hold it, first found wins (older spellings last)
_FIELDS: dict[str, tuple[str, ...]] = {
    "job_id": ("SLURM_JOB_ID", "SLURM_JOBID"),
    "array_job_id": ("SLURM_ARRAY_JOB_ID",),
    "array_task_id": ("SLURM_ARRAY_TASK_ID",),
    "job_name": ("SLURM_JOB_NAME",),
    "partition": ("SLURM_JOB_PARTITION",),
    "cluster": ("SLURM_CLUSTER_NAME",),
    "nodes": ("SLURM_JOB_NUM_NODES", "SLURM_NNODES"),
    "nodelist": ("SLURM_JOB_NODELIST", "SLURM_NODELIST"),
    "ntasks": ("SLURM_NTASKS", "SLURM_NPROCS"),
    "step_id": ("SLURM_STEP_ID", "SLURM_STEPID"),
    "step_tasks": ("SLURM_STEP_NUM_TASKS",),
    "proc_id": ("SLURM_PROCID",),
    "local_id": ("SLURM_LOCALID",),
    "cpus_per_task": ("SLURM_CPUS_PER_TASK",),
    "gpus": ("SLURM_GPUS", "SLURM_GPUS_ON_NODE"),
    "gpus_per_task": ("SLURM_GPUS_PER_TASK",),
    "job_gpus": ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS"),
    "restart_count": ("SLURM_RESTART_COUNT",),
}
_TEXT = {"job_name", "partition", "cluster", "nodelist", "gpus", "gpus_per_task", "job_gpus"}


def _value(key: str, text: str) -> int | str:
    """Counts and ids as int; names, node lists and GPU specs (``a100:2``, ``0,1``) as text."""
    text = text.strip()
    if key not in _TEXT and text.isdigit():
        return int(text)
    return text


def slurm_info(environ: Mapping[str, str] | None = None) -> dict[str, int | str]:
    """The Slurm job, array task, step and resources of this process; ``{}`` outside Slurm.

    Keys (present only when Slurm set them): job_id, array_job_id, array_task_id, job_name,
    partition, cluster, nodes, nodelist, ntasks, step_id, step_tasks, proc_id, local_id,
    cpus_per_task, gpus, gpus_per_task, job_gpus, restart_count (requeues so far; absent before
    the first). Inside ``srun`` ntasks is the step's task count and proc_id/local_id are this
    rank's. The job id survives a requeue, so it names a run directory stably.
    """
    env = os.environ if environ is None else environ
    if not (env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")):
        return {}
    info: dict[str, int | str] = {}
    for key, names in _FIELDS.items():
        for name in names:
            text = env.get(name, "")
            if text.strip():
                info[key] = _value(key, text)
                break
    return info


def slurm_attributes(environ: Mapping[str, str] | None = None) -> dict[str, int | str]:
    """``slurm_info()`` as flat HDF5 file attributes: ``slurm_job_id``, ``slurm_nodelist``, ..."""
    return {f"slurm_{key}": value for key, value in slurm_info(environ).items()}
