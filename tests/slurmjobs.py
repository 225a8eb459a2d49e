"""Slurm jobs for the tests (tests/test_slurm.py, tests/test_multinode.py): a cluster's client
environment, ``sbatch --wait`` in the background with its log followed, bounded waits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT = 180.0  # per job, requeues included


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without launcher/Slurm leftovers, the venv of this Python first."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("PMI_", "PMIX_", "SLURM_", "SBATCH_", "SRUN_", "HPCQNN_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if (Path(sys.prefix) / "bin" / "activate").exists():
        env["HPCQNN_VENV"] = sys.prefix
    env.update(extra)
    return env


@dataclass
class Cluster:
    env: dict[str, str]  # for sbatch/scontrol and the jobs they submit

    def command(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@dataclass
class Job:
    job_id: int
    returncode: int
    log: str  # the Slurm log (every array task's, when there are several)
    seconds: float


class Submission:
    """``sbatch --wait --parsable`` in the background: the job id at once, the exit code later."""

    def __init__(self, cluster: Cluster, *args: str, logs: Path):
        self.cluster, self.logs, self.started = cluster, logs, time.monotonic()
        command = (
            [args[0], "--wait", "--parsable", *args[1:]]
            if args[0].endswith("submit_sweep.sh")
            else ["sbatch", "--wait", "--parsable", *args]
        )
        self.proc = subprocess.Popen(
            command, cwd=REPO, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline().strip()
        if not line.split(";")[0].isdigit():
            out, err = self.proc.communicate(timeout=30)
            pytest.fail(f"sbatch did not submit: {' '.join(command)}\n{line}{out}{err}")
        self.job_id = int(line.split(";")[0])

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.out")))

    def wait_for(self, text: str, timeout: float = JOB_TIMEOUT) -> None:
        """Until the job's log shows ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.cancel()
                pytest.fail(f"job {self.job_id} never logged {text!r}\n{self.log()}")
            time.sleep(0.1)

    def cancel(self) -> None:
        self.cluster.command("scancel", str(self.job_id))

    def wait(self, timeout: float = JOB_TIMEOUT) -> Job:
        try:
            self.proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.cancel()
            self.proc.kill()
            self.proc.communicate()
            state = self.cluster.command("scontrol", "show", "job", str(self.job_id)).stdout
            pytest.fail(f"job {self.job_id} still ran after {timeout:.0f} s\n{state}\n{self.log()}")
        return Job(self.job_id, self.proc.returncode, self.log(), time.monotonic() - self.started)
