"""Real MPI jobs (mpiexec + tests/mpi_scripts): results equal the serial estimator at every rank
count and schedule, per-rank timing logs, straggler-aware scheduling, failures end the job."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import hpcqnn
from bounded import clean_environment, mpi_command, run_bounded
from hpcqnn.run.timelog import rank_file, read_timing
from statevector import exact_values
from tolerances import EXACT_ATOL, ROUNDING_TOL

pytestmark = pytest.mark.mpi

SCRIPTS = Path(__file__).parent / "mpi_scripts"
JOB_TIMEOUT = 120.0  # seconds for a job that should succeed
FAIL_TIMEOUT = 60.0  # seconds within which a failed job must have ended
QUERIES = 5  # engine queries per mode in estimate.py (one per run of the workload)
COLUMNS = ("query", "phase", "t_start", "t_end", "n_circuits", "n_rows")
ATTRIBUTES = ("rank", "size", "hostname", "device", "mpi_library", "hpcqnn_version", "config")

_spec = importlib.util.spec_from_file_location("mpi_workload", SCRIPTS / "workload.py")
workload = importlib.util.module_from_spec(_spec)  # the scripts' queries, for serial references
_spec.loader.exec_module(workload)


@dataclass(frozen=True)
class Job:
    returncode: int
    output: str  # stdout, then stderr
    seconds: float


def launch(script: str, *args: object, ranks: int | None, timeout: float, env: dict[str, str] | None = None) -> Job:
    """Run a script under ``mpiexec -n ranks python -m mpi4py`` (or as a plain process when
    ``ranks`` is None); fail the test if it outlives ``timeout``."""
    command = [sys.executable, str(SCRIPTS / script), *map(str, args)]
    if ranks is not None:
        command = mpi_command(ranks, *command[1:])
    start = time.monotonic()
    returncode, output = run_bounded(command, timeout, clean_environment(env), merge_output=False)
    return Job(returncode, output, time.monotonic() - start)


def check_success(job: Job) -> None:
    assert job.returncode == 0, job.output


def phase_rows(run_dir: Path, size: int) -> list[np.ndarray]:
    """Timing rows of every rank of a run directory."""
    return [read_timing(rank_file(run_dir, r))[0] for r in range(size)]


def executed(rows: np.ndarray, query: int | None = None) -> int:
    """Experiments a rank executed (in one query, or in all)."""
    mask = rows["phase"] == "execute"
    if query is not None:
        mask &= rows["query"] == query
    return int(rows["n_experiments"][mask].sum())


# -- references: this process, no MPI ----------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    arrays: dict[str, np.ndarray]  # keys of workload.collect
    experiments: list[int]  # experiments executed per query


@pytest.fixture(scope="module")
def serial() -> dict[str, Reference]:
    """The serial ``DistributedEstimator`` on the same runs, exact and sampled."""
    references = {}
    for mode, shots in (("exact", None), ("sampled", workload.SHOTS)):
        est = hpcqnn.DistributedEstimator(
            partition_labels=workload.MODEL.partition_labels, shots=shots, seed=workload.SEED
        )
        arrays = workload.collect(est)
        rows = est.recorder.rows
        per_query = [
            sum(r.n_experiments for r in rows if r.query == q and r.phase == "execute") for q in range(QUERIES)
        ]
        references[mode] = Reference(arrays, per_query)
    return references


@pytest.fixture(scope="module")
def statevector() -> dict[str, np.ndarray]:
    """Uncut statevector expectation values, keyed like evs."""
    return {f"evs/{r}/{p}": exact_values(*pub) for r, pubs in enumerate(workload.runs()) for p, pub in enumerate(pubs)}


# -- estimate.py at every rank count and schedule ----------------------------------------------


@pytest.fixture(scope="module")
def estimate_run(tmp_path_factory) -> Callable[[int, str], Path]:
    """``estimate.py`` under ``mpiexec -n size`` with ``schedule``, once per (size, schedule)."""
    done: dict[tuple[int, str], Path] = {}

    def run(size: int, schedule: str) -> Path:
        if (size, schedule) not in done:
            out = tmp_path_factory.mktemp(f"estimate-{size}-{schedule}")
            check_success(launch("estimate.py", out, schedule, ranks=size, timeout=JOB_TIMEOUT))
            done[size, schedule] = out
        return done[size, schedule]

    return run


GRID = [(size, schedule) for schedule in ("static", "dynamic") for size in (1, 2, 3, 4)]


@pytest.mark.parametrize(("size", "schedule"), GRID)
def test_results_match_serial(estimate_run, serial, statevector, size: int, schedule: str):
    """Exact and sampled evs/stds equal the serial estimator's, exact ones the statevector's."""
    with np.load(estimate_run(size, schedule) / "results.npz") as data:
        results = dict(data)
    for mode in ("exact", "sampled"):
        expected = serial[mode].arrays
        assert sorted(k.removeprefix(f"{mode}/") for k in results if k.startswith(f"{mode}/")) == sorted(expected)
        for key, value in expected.items():
            got = results[f"{mode}/{key}"]
            assert got.shape == value.shape, key
            np.testing.assert_allclose(got, value, rtol=0, atol=ROUNDING_TOL, err_msg=f"{mode} {key}")
    for key, value in statevector.items():
        np.testing.assert_allclose(results[f"exact/{key}"], value, rtol=0, atol=EXACT_ATOL, err_msg=key)
        sampled = results[f"sampled/{key}"]
        assert np.all(results[f"sampled/{key.replace('evs', 'stds')}"] > 0)
        assert not np.allclose(sampled, value, atol=1e-6), "sampled mode returned exact values"


@pytest.mark.parametrize(("size", "schedule"), GRID)
def test_timing_files(estimate_run, serial, size: int, schedule: str):
    """One HDF5 file per rank with the documented columns and attributes; every query appears on
    every rank with a reduce row; across ranks each experiment executes exactly once."""
    out = estimate_run(size, schedule)
    for mode in ("exact", "sampled"):
        run_dir = out / mode
        assert sorted(p.name for p in (run_dir / "timing").iterdir()) == [
            rank_file(run_dir, r).name for r in range(size)
        ]
        all_rows = []
        for r in range(size):
            rows, attrs = read_timing(rank_file(run_dir, r))
            all_rows.append(rows)
            assert set(COLUMNS) <= set(rows.dtype.names)
            assert set(ATTRIBUTES) <= set(attrs)
            assert (attrs["rank"], attrs["size"]) == (r, size)
            assert attrs["hostname"] == socket.gethostname()
            assert attrs["device"] in ("CPU", "GPU")
            assert "MPI" in attrs["mpi_library"]
            assert attrs["hpcqnn_version"] == hpcqnn.__version__
            assert json.loads(attrs["config"]) == {"mode": mode, "schedule": schedule}
            assert np.all(rows["t_end"] >= rows["t_start"])
            assert set(rows["query"].tolist()) == set(range(QUERIES))
            for q in range(QUERIES):
                assert np.any((rows["query"] == q) & (rows["phase"] == "reduce")), (mode, r, q)
        for q in range(QUERIES):
            assert sum(executed(rows, q) for rows in all_rows) == serial[mode].experiments[q], (mode, q)


SHAPE_GRID = [
    ("wire", 3, "dynamic"), ("chain", 2, "static"), ("chain", 4, "dynamic"), ("trainable", 3, "static"),
    ("noisy", 3, "dynamic"),
]


@pytest.mark.parametrize(("shape", "size", "schedule"), SHAPE_GRID)
def test_wire_cuts_and_chains_match_serial(tmp_path: Path, shape: str, size: int, schedule: str):
    """A wire cut, a four-partition chain, trainable RZZ cuts and a wire cut on a noisy fake
    device: MPI evs/stds equal the serial estimator's, noiseless exact ones the uncut
    statevector's (the CutWire marker removed)."""
    check_success(launch("estimate.py", tmp_path, schedule, shape, ranks=size, timeout=JOB_TIMEOUT))
    with np.load(tmp_path / "results.npz") as data:
        results = dict(data)
    options = workload.SHAPES[shape][0]
    selected = workload.shape_runs(shape)
    for mode, shots in (("exact", None), ("sampled", workload.SHOTS)):
        estimator = hpcqnn.DistributedEstimator(**options, shots=shots, seed=workload.SEED)
        for key, value in workload.collect(estimator, selected).items():
            np.testing.assert_allclose(
                results[f"{mode}/{key}"], value, rtol=0, atol=ROUNDING_TOL, err_msg=f"{mode} {key}"
            )
    for r, pubs in enumerate(selected if "backend" not in options else []):
        np.testing.assert_allclose(results[f"exact/evs/{r}/0"], exact_values(*pubs[0]), rtol=0, atol=EXACT_ATOL)


# -- scheduling under an injected straggler ----------------------------------------------------


def straggler_rows(tmp_path: Path, schedule: str, serial: dict[str, Reference], queries: int = 3) -> list[np.ndarray]:
    """Run ``straggler.py`` on 3 ranks; check its results; return each rank's timing rows."""
    check_success(launch("straggler.py", tmp_path, schedule, queries, ranks=3, timeout=JOB_TIMEOUT))
    with np.load(tmp_path / "results.npz") as data:
        for q in range(queries):
            np.testing.assert_allclose(data[f"evs/{q}/0"], serial["exact"].arrays["evs/0/0"], rtol=0, atol=ROUNDING_TOL)
    rows = phase_rows(tmp_path, 3)
    for r, ranks_rows in enumerate(rows):
        straggle = ranks_rows[ranks_rows["phase"] == "straggle"]
        if r == 1:
            assert len(straggle) > 0 and np.all(straggle["injected_delay"] > 0)
        else:
            assert len(straggle) == 0, r
    for q in range(queries):
        assert sum(executed(x, q) for x in rows) == serial["exact"].experiments[0]
    return rows


def test_dynamic_schedule_avoids_straggler(tmp_path, serial):
    """Rank 1, 4x slower, executes fewer experiments than each of the other ranks."""
    work = [executed(rows) for rows in straggler_rows(tmp_path, "dynamic", serial)]
    assert work[1] < min(work[0], work[2]), work


def test_static_schedule_ignores_straggler(tmp_path, serial):
    """The static schedule gives every rank an equal share (exact mode aligns to 1 experiment)."""
    rows = straggler_rows(tmp_path, "static", serial)
    total = serial["exact"].experiments[0]
    for q in range(3):
        shares = [executed(x, q) for x in rows]
        assert all(abs(share - total / 3) <= 1 for share in shares), shares


# -- failures end the job ----------------------------------------------------------------------


@pytest.mark.parametrize(("how", "message"), [("raise", "injected failure on rank 1"), ("kill", "")])
def test_failure_ends_job(tmp_path, how: str, message: str):
    """A rank raising or SIGKILLed in its second query ends the job (non-zero, bounded time);
    the first query's timing rows stay readable on every rank."""
    job = launch("failure.py", tmp_path, how, ranks=3, timeout=FAIL_TIMEOUT)
    assert job.returncode != 0, job.output
    assert job.seconds < FAIL_TIMEOUT
    assert message in job.output
    if how == "raise":
        assert "hpcqnn: rank 1 of 3 failed" in job.output
    assert (tmp_path / "done-0").exists() and not (tmp_path / "done-1").exists(), job.output
    for r, rows in enumerate(phase_rows(tmp_path, 3)):
        first = rows[rows["query"] == 0]
        assert "reduce" in set(first["phase"]), r
        assert executed(rows, 0) > 0, r
        assert not np.any((rows["query"] == 1) & (rows["phase"] == "reduce")), r


def test_mismatched_world(tmp_path):
    """A plain process told by PMI_SIZE that 3 were launched refuses to run."""
    job = launch("estimate.py", tmp_path, "static", ranks=None, timeout=JOB_TIMEOUT, env={"PMI_SIZE": "3"})
    assert job.returncode != 0
    assert re.search(r"hpcqnn\.errors\.MPIWorldError: .*\b3\b.*\b1\b", job.output), job.output
    assert not (tmp_path / "results.npz").exists()
    assert not any(tmp_path.rglob("*.h5"))


def test_root_exception_is_not_swallowed(tmp_path):
    """An exception in rank 0's code inside the block ends the job even when ``MPI_Abort``
    returns: code after the block never runs."""
    job = launch("root_error.py", tmp_path, ranks=3, timeout=FAIL_TIMEOUT)
    assert job.returncode != 0, job.output
    assert "injected failure in rank 0's code" in job.output
    assert (tmp_path / "abort-0").exists(), job.output
    assert not (tmp_path / "after-0").exists(), "rank 0 ran the code after the block: the exception was swallowed"


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("after", "this estimator's MPI session has ended"),
        ("nested", "`with mpi_estimator(...)` blocks do not nest"),
    ],
)
def test_misused_session_ends_the_job_with_a_named_error(how: str, message: str):
    """A query after the block, or a block inside a block, on rank 0 of 2: the job ends at once
    with MPISessionError (it used to wait forever for workers that had left or never listened)."""
    job = launch("misuse.py", how, ranks=2, timeout=FAIL_TIMEOUT)
    assert job.returncode != 0, job.output
    assert "MPISessionError" in job.output and message in job.output, job.output


# -- refused before any work ---------------------------------------------------------------------


def test_existing_timing_logs_are_refused_before_any_work(tmp_path):
    with hpcqnn.mpi_estimator(partition_labels="AABB", timing_dir=tmp_path) as estimator:
        assert estimator is not None
    written = rank_file(tmp_path, 0).read_bytes()
    with pytest.raises(
        hpcqnn.RunDirectoryError, match=r"rank\(s\) 0: timing logs are never overwritten; give a new timing_dir"
    ):
        with hpcqnn.mpi_estimator(partition_labels="AABB", timing_dir=tmp_path):
            pytest.fail("the block must not run")
    assert rank_file(tmp_path, 0).read_bytes() == written


def test_straggler_ranks_outside_the_job_are_refused():
    straggler = hpcqnn.Straggler(ranks=(1,), slowdown=2.0)
    with pytest.raises(hpcqnn.ExecutionConfigError, match=r"straggler ranks \[1\] must be below the 1 ranks"):
        with hpcqnn.mpi_estimator(partition_labels="AABB", straggler=straggler):
            pytest.fail("the block must not run")


def test_misused_session_on_one_rank_raises_the_same_error():
    with hpcqnn.mpi_estimator(partition_labels=workload.MODEL.partition_labels) as estimator:
        estimator.run(workload.runs()[3]).result()
        with pytest.raises(hpcqnn.MPISessionError, match="blocks do not nest"):
            with hpcqnn.mpi_estimator(partition_labels="AABB"):
                pytest.fail("the block must not run")
    with pytest.raises(hpcqnn.MPISessionError, match="session has ended"):
        estimator.run(workload.runs()[3])
    with hpcqnn.mpi_estimator(partition_labels="AABB") as again:  # one after the other is fine
        assert again is not None
