"""Slurm: the real scripts of slurm/ submitted to a single-node cluster on this machine.

A module fixture starts the cluster with ``slurm/local_cluster.sh start`` (root; it installs
slurm-wlm and munge when missing) and stops it afterwards; the tests that need it are skipped,
with the reason, only where it cannot run at all (``slurm_cluster_possible``: not root, or no
Slurm and no apt-get); where it can, a start that fails or times out fails them. Jobs are tiny Iris runs, submitted with
``sbatch --wait`` (which returns the job's exit code) and checked through their run directories:
results.json, one HDF5 timing file per rank, the Slurm ids (once ``hpcqnn.run.slurm`` is wired into
results.json and the HDF5 attributes), one run directory per array task, and a job stopped by
SIGTERM or requeued mid-training that resumes from its checkpoint and ends bit-identical to an
uninterrupted run. ``slurm_info`` and the workstation sweep (jobs/sweep.sh) need no cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from slurmjobs import Cluster, Submission, clean_environment

from bounded import MPIEXEC
from hpcqnn.run.slurm import slurm_attributes, slurm_info
from hpcqnn.run.timelog import rank_file, read_timing

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "slurm"
CONFIG = "jobs/iris_quick.toml"  # relative to the submit directory (the repository root)
QUICK = ["--set", "data.max_train=24", "--set", "evaluation.gaussian_draws=1"]
ONE_EPOCH = ["--set", "training.epochs=1", *QUICK]
# slow enough to be signalled mid-training: rank 1 sleeps per tile batch, numbers unchanged
SLOW = [
    "--set",
    "training.epochs=3",
    *QUICK,
    "--set",
    "execution.straggler_ranks=[1]",
    "--set",
    "execution.straggler_delay=0.4",
]
START_TIMEOUT = 900.0  # the first start installs slurm-wlm and munge
JOB_TIMEOUT = 180.0  # per job, requeues included

HOOK_RESULTS = (
    "HOOK MISSING: results.json has no slurm.job_id; add `\"slurm\": slurm_info(),` to the dict "
    "returned by run_metadata in hpcqnn/runinfo.py (from .slurm import slurm_info)"
)
HOOK_HDF5 = (
    "HOOK MISSING: the rank HDF5 files have no slurm_job_id attribute; add "
    "`**slurm_attributes(),` to the attributes dict of HDF5TimingLog in mpi_estimator "
    "(hpcqnn/distributed.py; from .slurm import slurm_attributes)"
)


# -- no cluster needed --------------------------------------------------------------------------


def test_slurm_info_reads_the_environment():
    assert slurm_info({"PATH": "/bin"}) == {} and slurm_attributes({}) == {}
    env = {
        "SLURM_JOB_ID": "107", "SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "7",
        "SLURM_JOB_NAME": "hpcqnn-sweep", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "n[01-02]",
        "SLURM_NTASKS": "8", "SLURM_STEP_ID": "0", "SLURM_LOCALID": "3", "SLURM_PROCID": "7",
        "SLURM_CPUS_PER_TASK": "4", "SLURM_GPUS_PER_TASK": "1", "SLURM_JOB_GPUS": "0,1",
        "SLURM_RESTART_COUNT": "1", "SLURM_STEP_NUM_TASKS": "8", "HOME": "/root",
    }
    info = slurm_info(env)
    assert info == {
        "job_id": 107, "array_job_id": 100, "array_task_id": 7, "job_name": "hpcqnn-sweep",
        "nodes": 2, "nodelist": "n[01-02]", "ntasks": 8, "step_id": 0, "step_tasks": 8, "proc_id": 7,
        "local_id": 3, "cpus_per_task": 4, "gpus_per_task": "1", "job_gpus": "0,1", "restart_count": 1,
    }
    assert slurm_attributes(env)["slurm_job_id"] == 107
    assert slurm_info({"SLURM_JOBID": "5", "SLURM_NPROCS": "2"}) == {"job_id": 5, "ntasks": 2}  # old names
    json.dumps(info)  # results.json-ready


def test_scripts_parse():
    scripts = [*SLURM.glob("*.sbatch"), *SLURM.glob("*.sh"), *(REPO / "jobs").glob("*.sh")]
    assert len(scripts) >= 7
    for script in scripts:
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, f"{script}: {check.stderr}"
    # train_gpu.sbatch cannot run here (no GPU): at least it asks for one GPU per rank, GPU device
    gpu = (SLURM / "train_gpu.sbatch").read_text()
    assert "#SBATCH --gpus-per-task=1" in gpu and "execution.device=GPU" in gpu


def write_matrix(path: Path) -> list[tuple[int, list[str]]]:
    """A two-line sweep: 1 rank; 2 ranks with a straggler. Returns (ranks, extra args) per task."""
    path.write_text(
        "# test matrix: CONFIG RANKS [args]\n"
        f"{CONFIG}  1\n"
        "\n"
        f"{CONFIG}  2  --set execution.straggler_ranks=[1] --set execution.straggler_slowdown=2\n"
    )
    return [(1, []), (2, ["--set", "execution.straggler_ranks=[1]", "--set", "execution.straggler_slowdown=2"])]


@pytest.mark.mpi
def test_workstation_sweep(tmp_path):
    """jobs/sweep.sh: the matrix under mpiexec, one line after another; a rerun skips finished lines
    and sets aside a line stopped before its first checkpoint."""
    matrix = tmp_path / "matrix.txt"
    tasks = write_matrix(matrix)
    stopped_early = tmp_path / "out" / "ws_1"  # as left by Ctrl-C during the first epoch
    (stopped_early / "timing").mkdir(parents=True)
    (stopped_early / "config.toml").write_text("# partial\n")
    env = clean_environment(SWEEP_ID="ws")
    command = [str(REPO / "jobs" / "sweep.sh"), str(matrix), str(tmp_path / "out"), *ONE_EPOCH]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert run.returncode == 0, run.stdout + run.stderr
    for i, (ranks, _) in enumerate(tasks):
        run_dir = tmp_path / "out" / f"ws_{i}"
        results = json.loads((run_dir / "results.json").read_text())
        assert results["ranks"] == ranks
        assert all(rank_file(run_dir, r).exists() for r in range(ranks))
    assert json.loads((tmp_path / "out" / "ws_1" / "results.json").read_text())["config"]["execution"][
        "straggler_ranks"
    ] == [1]
    assert (tmp_path / "out" / "ws_1.incomplete-1" / "config.toml").read_text() == "# partial\n"
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert again.returncode == 0 and again.stdout.count("already finished") == 2, again.stdout + again.stderr


# -- the local cluster --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(slurm_cluster_possible):
    script = str(SLURM / "local_cluster.sh")
    state = os.environ.get("HPCQNN_SLURM_DIR", "/tmp/hpcqnn-slurm")
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    was_running = subprocess.run([script, "status"], env=base, capture_output=True, text=True).returncode == 0
    if was_running:  # used as it is: a second start is refused
        yield Cluster(clean_environment(SLURM_CONF=f"{state}/slurm.conf"))
        return
    started = time.monotonic()
    try:
        start = subprocess.run([script, "start"], env=base, capture_output=True, text=True, timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"slurm/local_cluster.sh start did not finish in {START_TIMEOUT:.0f} s: {exc.stdout}{exc.stderr}")
    print(f"\n[test_slurm] cluster start ({time.monotonic() - started:.1f} s): {start.stdout.strip()}")
    if start.returncode != 0:  # the cluster can run here (slurm_cluster_possible): a broken script is a failure
        pytest.fail(f"slurm/local_cluster.sh start failed (exit {start.returncode}):\n{start.stdout}{start.stderr}")
    yield Cluster(clean_environment(SLURM_CONF=f"{state}/slurm.conf"))
    stop = subprocess.run([script, "stop"], env=base, capture_output=True, text=True, timeout=120)
    print(f"\n[test_slurm] cluster stop: {stop.stdout.strip()} {stop.stderr.strip()}")


def check_run(run_dir: Path, ranks: int, log: str) -> dict:
    """A finished run directory: results.json for ``ranks`` ranks and every rank's timing file."""
    assert (run_dir / "results.json").exists(), f"no results.json in {run_dir}\n{log}"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["ranks"] == ranks
    assert results["history"] and results["final"]["test_accuracy"] >= 0
    for rank in range(ranks):
        rows, attributes = read_timing(rank_file(run_dir, rank))
        assert attributes["rank"] == rank and attributes["size"] == ranks
        assert "execute" in set(rows["phase"])  # every rank simulated its share
        if rank == 0:  # every query logged, across a restart too (resumed runs append)
            assert rows["query"].min() == 0 and rows["query"].max() == results["budget"]["queries"] - 1
    assert not rank_file(run_dir, ranks).exists()
    return results


def check_slurm_ids(run_dir: Path, ranks: int, job_id: int, **expected: int) -> None:
    """The hooks: results.json['slurm'] and the slurm_* HDF5 attributes of every rank."""
    results = json.loads((run_dir / "results.json").read_text())
    assert results.get("slurm", {}).get("job_id") == job_id, HOOK_RESULTS
    for key, value in expected.items():
        assert results["slurm"][key] == value, (key, results["slurm"])
    for rank in range(ranks):
        _, attributes = read_timing(rank_file(run_dir, rank))
        assert attributes.get("slurm_job_id") == job_id, HOOK_HDF5
        assert attributes.get("slurm_proc_id") == rank, attributes


@pytest.fixture(scope="module")
def cpu_job(cluster, tmp_path_factory):
    """train_cpu.sbatch with 3 ranks on this 2-CPU node (--overcommit), one epoch."""
    out = tmp_path_factory.mktemp("cpu")
    job = Submission(
        cluster, "--ntasks=3", "--overcommit", f"--output={out}/%x-%j.out",
        str(SLURM / "train_cpu.sbatch"), CONFIG, str(out), *ONE_EPOCH, logs=out,
    ).wait()
    print(f"\n[test_slurm] train_cpu job {job.job_id}: {job.seconds:.1f} s")
    return job, out / f"hpcqnn-cpu-{job.job_id}"


def test_train_cpu(cpu_job):
    job, run_dir = cpu_job
    assert job.returncode == 0, job.log
    check_run(run_dir, 3, job.log)
    assert "srun --mpi=pmi2 --ntasks=3" in job.log and "hpcqnn-slurm: finished" in job.log, job.log


def test_train_cpu_records_slurm_ids(cpu_job):
    job, run_dir = cpu_job
    assert job.returncode == 0, job.log
    check_slurm_ids(run_dir, 3, job.job_id, ntasks=3, job_name="hpcqnn-cpu")


@pytest.fixture(scope="module")
def sweep_job(cluster, tmp_path_factory):
    """sweep.sbatch through submit_sweep.sh: a 2-task array from a 2-line matrix."""
    out = tmp_path_factory.mktemp("sweep")
    tasks = write_matrix(out / "matrix.txt")
    job = Submission(
        cluster, str(SLURM / "submit_sweep.sh"), f"--output={out}/%x-%A_%a.out",
        str(out / "matrix.txt"), str(out), *ONE_EPOCH, logs=out,
    ).wait()
    print(f"\n[test_slurm] sweep array {job.job_id}: {job.seconds:.1f} s")
    return job, out, tasks


def test_sweep_array(sweep_job):
    job, out, tasks = sweep_job
    assert job.returncode == 0, job.log
    run_dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in run_dirs] == [f"hpcqnn-sweep-{job.job_id}_{i}" for i in range(len(tasks))], job.log
    for run_dir, (ranks, _) in zip(run_dirs, tasks):
        check_run(run_dir, ranks, job.log)
    execution = json.loads((run_dirs[1] / "results.json").read_text())["config"]["execution"]
    assert execution["straggler_ranks"] == [1] and execution["straggler_slowdown"] == 2.0


def test_sweep_array_records_slurm_ids(sweep_job):
    job, out, tasks = sweep_job
    assert job.returncode == 0, job.log
    for i, (ranks, _) in enumerate(tasks):
        run_dir = out / f"hpcqnn-sweep-{job.job_id}_{i}"
        task_job_id = json.loads((run_dir / "results.json").read_text()).get("slurm", {}).get("job_id")
        assert task_job_id is not None, HOOK_RESULTS
        check_slurm_ids(run_dir, ranks, task_job_id, array_job_id=job.job_id, array_task_id=i)


def test_failed_job_exit_code(cluster, tmp_path):
    """sbatch --wait returns the job's exit code: a bad config ends the job with hpcqnn's 2."""
    job = Submission(
        cluster, "--ntasks=1", f"--output={tmp_path}/%x-%j.out", str(SLURM / "train_cpu.sbatch"),
        CONFIG, str(tmp_path), "--set", "training.epochs=-1", logs=tmp_path,
    ).wait()
    assert job.returncode == 2, job.log
    assert "training.epochs" in job.log and "training step failed with exit code 2" in job.log, job.log


@pytest.fixture(scope="module")
def reference_parameters(tmp_path_factory) -> list[float]:
    """The SLOW run's final parameters without Slurm and without interruption."""
    out = tmp_path_factory.mktemp("reference") / "run"
    command = [MPIEXEC, "-n", "2", sys.executable, "-m", "hpcqnn.cli", "train", CONFIG, "--out", str(out), *SLOW]
    run = subprocess.run(
        command, cwd=REPO, env=clean_environment(), capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads((out / "results.json").read_text())["final"]["parameters"]


@pytest.mark.mpi  # the reference run
@pytest.mark.parametrize("how", ["scancel --signal=TERM", "scontrol requeue"])
def test_stopped_job_resumes_after_requeue(cluster, tmp_path, reference_parameters, how):
    """SIGTERM mid-training (what --signal=TERM@60 sends before the time limit; preemption and
    `scontrol requeue` also kill the job): rank 0 checkpoints, the job is requeued (by itself
    after a clean stop, by Slurm otherwise), resumes with --resume in the same run directory,
    and ends with the parameters of an uninterrupted run."""
    submission = Submission(
        cluster, "--ntasks=2", f"--output={tmp_path}/%x-%j.out", str(SLURM / "train_cpu.sbatch"),
        CONFIG, str(tmp_path), *SLOW, logs=tmp_path,
    )
    submission.wait_for("epoch 1/3")  # printed after the epoch's checkpoint
    signal = cluster.command(*how.split(), str(submission.job_id))
    assert signal.returncode == 0, signal.stdout + signal.stderr
    job = submission.wait()
    print(f"\n[test_slurm] {how}: job {job.job_id} finished after requeue in {job.seconds:.1f} s")
    assert job.returncode == 0, job.log
    run_dir = tmp_path / f"hpcqnn-cpu-{job.job_id}"
    assert "restart 0" in job.log and "hpcqnn-slurm: requeued (restart 1): resuming from" in job.log, job.log
    assert "resuming at epoch" in job.log, job.log
    if how.startswith("scancel"):  # a clean stop: hpcqnn checkpointed, the script requeued the job
        assert "SIGTERM: checkpoint written" in job.log and "requeueing job" in job.log, job.log
    results = check_run(run_dir, 2, job.log)
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
    assert not list(tmp_path.glob("*.incomplete-*"))
    np.testing.assert_array_equal(results["final"]["parameters"], reference_parameters)
