"""An MPI job's session: start-up checks, rank placement, timing logs and the estimator.

``with mpi_estimator(...) as estimator:`` is the public entry (``hpcqnn.mpi_estimator``); the
helpers here let the command line decide things on rank 0 for the whole job. MPI itself stays in
``_core`` (the only importer of mpi4py).
"""

from __future__ import annotations

import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from hpcqnn.errors import (
    DeviceUnavailableError,
    ExecutionConfigError,
    HpcqnnError,
    MPISessionError,
    RunDirectoryError,
)
from hpcqnn.execution.devices import DEVICES, Placement, announce, array_module, place
from hpcqnn.execution.simulator import AerRunner
from hpcqnn.execution.straggler import Straggler
from hpcqnn.options import SCHEDULES
from hpcqnn.parallel._core import (
    Comm,
    MPIEngine,
    StopSignals,
    abort,
    barrier,
    check_world,
    local_layout,
    mpi_library,
    world,
)
from hpcqnn.run import launcher
from hpcqnn.run.runinfo import identity
from hpcqnn.run.slurm import slurm_attributes
from hpcqnn.run.timelog import HDF5TimingLog, rank_file, set_aside_other_size
from hpcqnn.run.timing import PhaseRecorder

#: Whether this process is inside a ``with mpi_estimator(...)`` block (they do not nest).
_inside_session = False


def place_ranks(comm: Comm, requested: str, local_rank: int) -> tuple[Placement, list[str]]:
    """This rank's placement and every rank's label, decided on all ranks before any work.

    A rank that cannot use a requested GPU makes every rank raise the same
    ``DeviceUnavailableError`` (nothing to abort); where ``"auto"`` fell back to the CPU, rank 0
    says so once per process.
    """
    try:
        placement, problem = place(requested, local_rank), ""
    except DeviceUnavailableError as exc:
        placement, problem = Placement(), str(exc)
    found = comm.allgather((socket.gethostname(), placement.label, placement.note, problem))
    failed = [(rank, host, text) for rank, (host, _, _, text) in enumerate(found) if text]
    if failed:
        where = ", ".join(f"{rank} ({host})" for rank, host, _ in failed)
        raise DeviceUnavailableError(f"rank(s) {where} of {len(found)}: {failed[0][2]}")
    fallbacks: dict[str, list[int]] = {}
    for rank, (_, _, note, _) in enumerate(found):
        if note:
            fallbacks.setdefault(note, []).append(rank)
    if comm.Get_rank() == 0:
        for note, ranks in fallbacks.items():
            if len(found) == 1:
                where = ""
            elif len(ranks) == len(found):
                where = f" on all {len(found)} ranks"
            else:
                where = " on ranks " + ", ".join(map(str, ranks))
            announce(f"device='auto' falls back to the CPU{where}: {note}")
    return placement, [label for _, label, _, _ in found]


def speaks_for_the_job() -> bool:
    """Whether this process says what every rank of the job would say alike (an error raised on
    every rank, a notice): rank 0 of the MPI world; where the launcher started several processes
    that each see a world of their own (``MPIWorldError``), the launcher's rank 0."""
    if world().Get_size() > 1:
        return world().Get_rank() == 0
    return (launcher.size() or 1) == 1 or launcher.rank() in (None, 0)


def on_root(task: Callable[[], Any], comm: Comm | None = None) -> tuple[Any, str | None]:
    """Run ``task()`` on rank 0 only; every rank gets its result and error message (or None).

    For decisions about shared state (run directories, defaults that depend on the clock) that
    every rank must share and that must not race with rank 0's writes, before any work starts.
    """
    comm = comm or world()
    value, message = None, None
    if comm.Get_rank() == 0:
        try:
            value = task()
        except HpcqnnError as exc:
            message = str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure must reach every rank, or they hang
            message = f"{type(exc).__name__}: {exc}"
    return comm.bcast((value, message), root=0)


def gather_on_root(value: object, comm: Comm | None = None) -> list | None:
    """Every rank's ``value`` in rank order on rank 0, ``None`` on the others."""
    return (comm or world()).gather(value, root=0)


def _check_timing_dir(comm: Comm, timing_dir: str | Path, resume_at: int | None) -> None:
    """On every rank, before any log opens: a new run finds no timing logs (the same error on
    every rank otherwise); a resumed one on another rank count has rank 0 set the old logs aside."""
    if resume_at is None:
        taken = [
            rank
            for rank, exists in enumerate(comm.allgather(rank_file(timing_dir, comm.Get_rank()).exists()))
            if exists
        ]
        if taken:
            raise RunDirectoryError(
                f"{Path(timing_dir) / 'timing'} already holds the timing logs of rank(s) "
                f"{', '.join(map(str, taken))}: timing logs are never overwritten; give a new timing_dir"
            )
        return
    moved, problem = on_root(lambda: set_aside_other_size(timing_dir, comm.Get_size()), comm)
    if problem:
        raise RunDirectoryError(f"cannot set the earlier timing logs aside: {problem}")
    if moved is not None and comm.Get_rank() == 0:
        announce(f"resumed on {comm.Get_size()} ranks: the timing logs of the earlier ranks are in {moved}")


def _announce_set_aside(comm: Comm, log: HDF5TimingLog) -> list[str]:
    """Every rank's timing log that could not be read and was set aside, said on rank 0 (the
    resumed run's summaries then miss that rank's earlier queries); the paths on rank 0."""
    moved = comm.gather(str(log.set_aside) if log.set_aside else None, root=0)
    found = [path for path in moved or () if path]
    for path in found:
        announce(
            f"an earlier timing log could not be read and was set aside as {path}: the run's timing "
            "summaries miss the queries it held"
        )
    return found


def _log_attributes(
    comm: Comm, placement: Placement, local_rank: int, config_text: str, schedule: str, threads: int
) -> dict:
    """What a rank's timing log records about where and how it ran (README: timing logs)."""
    return {
        "rank": comm.Get_rank(), "size": comm.Get_size(), **identity(mpi_library()),
        **placement.attributes(), "local_rank": local_rank,
        "config": config_text, "schedule": schedule, "threads": threads,
        "clock": "time.time() (Unix epoch seconds)",
        **slurm_attributes(),
    }


@contextmanager
def mpi_estimator(
    *,
    comm: Comm | None = None,
    schedule: str = "static",
    straggler: Straggler | None = None,
    root_computes: bool = True,
    threads: int | None = None,
    device: str = "auto",
    timing_dir: str | Path | None = None,
    resume_at: int | None = None,
    config_text: str = "",
    stop: StopSignals | None = None,
    **estimator_options: Any,
) -> Iterator[Any]:
    """``with mpi_estimator(...) as est:`` gives the estimator on rank 0 and ``None`` elsewhere.

    Workers serve rank 0's queries until rank 0 leaves the block. An exception on any rank prints
    that rank's traceback and aborts the whole job (``MPI.Abort``) instead of hanging it.
    ``timing_dir`` is a run directory: each rank writes ``timing/rank-NNNNN.h5`` there
    (``resume_at``: continue existing files for a run resumed at that query). ``device`` is decided on
    every rank before any work (``place_ranks``). ``stop`` (each rank's): a stop signal that
    reaches a worker alone is relayed to rank 0's at the end of the query it arrived in.
    """
    from hpcqnn.estimator import DistributedEstimator

    global _inside_session
    comm = comm or world()
    if _inside_session:  # before any communication: the outer block's workers only listen to its engine
        raise MPISessionError(
            "`with mpi_estimator(...)` blocks do not nest: use the estimator of the enclosing block"
        )
    # the same on every rank: a plain error everywhere, nothing to abort
    check_world()
    if schedule not in SCHEDULES:
        raise ExecutionConfigError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if device not in DEVICES:
        raise ExecutionConfigError(f"device must be one of {DEVICES}, got {device!r}")
    if straggler is not None and straggler.ranks and max(straggler.ranks) >= comm.Get_size():
        raise ExecutionConfigError(
            f"straggler ranks {list(straggler.ranks)} must be below the {comm.Get_size()} ranks of this job"
        )
    barrier(comm)  # rank 0 may arrive late (busy elsewhere): wait without spinning
    if timing_dir is not None:
        _check_timing_dir(comm, timing_dir, resume_at)
    local_rank, cores = local_layout(comm)
    placement, rank_devices = place_ranks(comm, device, local_rank)
    threads = cores if threads is None else threads
    # NumPy's BLAS too: ranks sharing a node would each start a thread per core (the two-partition
    # contraction is one matmul big enough for OpenBLAS to go parallel), and those threads spin on
    # cores the other ranks simulate on (measured here: 2 ranks on 2 cores, iris_cut3 queries
    # 1.8x slower)
    blas_threads = threadpool_limits(limits=threads or None, user_api="blas")
    log = engine = None
    _inside_session = True
    try:
        recorder = PhaseRecorder()
        if timing_dir is not None:
            attributes = _log_attributes(comm, placement, local_rank, config_text, schedule, threads)
            log = HDF5TimingLog(rank_file(timing_dir, comm.Get_rank()), attributes, resume_at=resume_at)
            recorder.sink = log
            recorder.restore(log.kept)
        set_aside_logs = [] if log is None else _announce_set_aside(comm, log)
        engine = MPIEngine(
            comm, AerRunner(placement, threads), array_module(placement), recorder, schedule, straggler,
            root_computes, rank_devices=rank_devices, set_aside_logs=set_aside_logs, stop=stop,
        )
        if comm.Get_rank() == 0:
            estimator = DistributedEstimator(engine=engine, **estimator_options)
            yield estimator
            engine.shutdown()
        else:
            engine.serve()
            yield None
    except BaseException as exc:
        clean_exit = isinstance(exc, SystemExit) and exc.code in (0, None)
        if clean_exit and comm.Get_rank() == 0 and engine is not None:
            engine.shutdown()
        if clean_exit or comm.Get_size() == 1:
            raise
        if isinstance(exc, KeyboardInterrupt):  # a second Ctrl-C: the user's stop, not a failure
            sys.stderr.write(f"hpcqnn: rank {comm.Get_rank()} of {comm.Get_size()} interrupted; aborting the job\n")
        else:
            sys.stderr.write(f"hpcqnn: rank {comm.Get_rank()} of {comm.Get_size()} failed; aborting the job\n")
            sys.stderr.write(traceback.format_exc())
        abort(comm)
    finally:
        _inside_session = False
        blas_threads.restore_original_limits()
        if log is not None:
            log.close()
