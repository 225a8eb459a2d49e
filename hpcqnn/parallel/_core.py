"""MPI execution of estimator queries. The only module of hpcqnn that imports mpi4py.

Rank 0 drives (user code, training, benchmark) and holds the ``DistributedEstimator``; the other
ranks serve queries until rank 0 leaves ``mpi_estimator``. Per cut plan, the program (templates
and term tables) is broadcast once; per query only a small header and the parameter matrix move
(``Bcast``). Work is split into tiles (``hpcqnn.execution.tiles``), statically or on demand; each rank
turns the tiles it ran into estimates in its own query buffer as they finish, and the buffers
meet at rank 0 in one ``Reduce(SUM)`` (each entry is written by exactly one rank, so the sum is
the serial result), where the final contraction runs.

Devices: each rank simulates on the GPU its local rank picks (``devices``), and rank 0
contracts with CuPy when it has a GPU. The query buffers stay in host memory on every device:
Aer hands its results back there and filling a buffer is only copying them in, so the Reduce is
an ordinary host-memory MPI reduce (no CUDA-aware MPI needed or used), and rank 0 moves the
reduced estimates to its GPU once, for the contraction.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
from mpi4py import MPI

from hpcqnn import __version__
from hpcqnn.run import launcher
from hpcqnn.execution.devices import DEVICES, Placement, announce, array_module, place
from hpcqnn.execution.engine import finish_query, run_tiles
from hpcqnn.errors import DeviceUnavailableError, ExecutionConfigError, HpcqnnError, MPIWorldError, RunDirectoryError
from hpcqnn.cutting.program import Program, QueryBuffers, query_rows
from hpcqnn.options import POLL, SAMPLE_BLOCK, SCHEDULES, TILES_PER_RANK, WAIT_FIRST, WAIT_MAX
from hpcqnn.execution.simulator import AerRunner
from hpcqnn.run.slurm import slurm_attributes
from hpcqnn.execution.tiles import Tile, dynamic_chunk, split_chunks, split_static
from hpcqnn.run.timelog import HDF5TimingLog, rank_file, set_aside_other_size
from hpcqnn.run.timing import PhaseRecorder, PhaseRow

_QUERY, _PROGRAM, _STOP = 1, 2, 3
_TAG_REQUEST, _TAG_TILE = 11, 12
_HEADER = 8  # cmd, program id, rows, parameters, shots, seed, query, spare


@dataclass(frozen=True)
class Straggler:
    """Injected slowness, per tile: a tile is hit on ``ranks`` (every tile) or with
    ``probability`` (drawn per query and tile, seeded); each hit tile adds ``delay`` seconds, and
    ``slowdown`` stretches the hit tiles' share of the measured execution time."""

    ranks: tuple[int, ...] = ()
    probability: float = 0.0
    delay: float = 0.0
    slowdown: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise ExecutionConfigError(f"straggler probability must be in [0, 1], got {self.probability}")
        if self.delay < 0 or self.slowdown < 1.0:
            raise ExecutionConfigError(
                f"straggler delay must be >= 0 and slowdown >= 1, got {self.delay} and {self.slowdown}"
            )

    @classmethod
    def unless_idle(cls, ranks: Sequence[int], probability: float, delay: float, slowdown: float, seed: int):
        """The straggler these settings describe, or ``None`` when they slow nothing down."""
        if ranks or probability or delay or slowdown != 1.0:
            return cls(tuple(ranks), probability, delay, slowdown, seed)
        return None

    def seconds(self, rank: int, query: int, tiles: Sequence[Tile], elapsed: float) -> float:
        """Injected delay for a batch of tiles that took ``elapsed`` seconds on ``rank``."""
        if rank in self.ranks:
            hit = np.ones(len(tiles), dtype=bool)
        elif self.probability > 0:
            hit = np.array(
                [np.random.default_rng([self.seed, query, t.circuit, t.start]).random() < self.probability for t in tiles]
            )
        else:
            return 0.0
        sizes = np.array([t.stop - t.start for t in tiles], dtype=float)
        share = sizes[hit].sum() / sizes.sum() if sizes.sum() else 0.0
        return self.delay * int(hit.sum()) + (self.slowdown - 1.0) * elapsed * share


def _wait(request: MPI.Request) -> None:
    """Wait without spinning a core: ranks often outnumber cores on a workstation."""
    pause = WAIT_FIRST
    while not request.Test():
        time.sleep(pause)
        pause = min(pause * 2, WAIT_MAX)


@dataclass
class MPIEngine:
    """Runs a query's tiles on every rank of ``comm`` and reduces the results at rank 0."""

    comm: MPI.Comm
    runner: AerRunner
    xp: ModuleType = np
    recorder: PhaseRecorder = field(default_factory=PhaseRecorder)
    schedule: str = "static"
    straggler: Straggler | None = None
    root_computes: bool = True
    tiles_per_rank: int = TILES_PER_RANK
    rank_devices: list[str] = field(default_factory=list)  # where each rank computes ("GPU 0", "CPU")

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ExecutionConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        if not self.root_computes and self.size == 1:
            raise ExecutionConfigError("root_computes=False needs at least 2 ranks")
        self._programs: dict[int, Program] = {}
        self._ids: dict[int, int] = {}

    @property
    def device(self) -> str:
        return self.runner.device

    # -- rank 0 -------------------------------------------------------------------------------

    def evaluate(self, program, params, weights, shots, seed, query):
        """Rank 0: run one query on all ranks; values [rows, observables] and variances."""
        pid = self._share(program)
        params = np.ascontiguousarray(params, dtype=np.float64)
        header = [_QUERY, pid, len(params), params.shape[1], shots or -1, -1 if seed is None else seed, query, 0]
        with self.recorder.phase(query, "broadcast", n_rows=len(params), bytes=params.nbytes):
            self._header(header)
            self.comm.Bcast(params, root=0)
        buffers = self._work(program, params, shots, seed, query)
        with self.recorder.phase(query, "contract", n_rows=len(params)):
            result = finish_query(program, buffers, weights, self.xp)
        self.recorder.flush()
        return result

    def shutdown(self) -> None:
        """Rank 0: release the workers from ``serve``."""
        self._header([_STOP] + [0] * (_HEADER - 1))

    def _share(self, program: Program) -> int:
        pid = self._ids.get(id(program))
        if pid is None:
            pid = len(self._ids)
            self._ids[id(program)] = pid
            self._programs[pid] = program  # keeps the program alive, so its id stays unique
            self._header([_PROGRAM, pid] + [0] * (_HEADER - 2))
            self.comm.bcast(program, root=0)
        return pid

    def _header(self, values: list[int]) -> np.ndarray:
        header = np.array(values, dtype=np.int64)
        _wait(self.comm.Ibcast(header, root=0))
        return header

    # -- workers ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Ranks > 0: execute queries until rank 0 calls ``shutdown``."""
        while True:
            cmd, pid, rows, width, shots, seed, query, _ = self._header([0] * _HEADER)
            if cmd == _STOP:
                return
            if cmd == _PROGRAM:
                self._programs[pid] = self.comm.bcast(None, root=0)
                continue
            params = np.empty((rows, width))
            with self.recorder.phase(query, "broadcast", n_rows=rows, bytes=params.nbytes):
                self.comm.Bcast(params, root=0)
            self._work(self._programs[pid], params, None if shots < 0 else int(shots), None if seed < 0 else int(seed), int(query))
            self.recorder.flush()

    # -- every rank ---------------------------------------------------------------------------

    def _work(self, program, params, shots, seed, query) -> QueryBuffers:
        rows = query_rows(program.plan, params)
        counts = [program.experiments(c, rows) for c in range(len(program.circuits))]
        align = SAMPLE_BLOCK if program.sampled else 1
        buffers = QueryBuffers(program, rows)
        run = lambda tiles: self._run(program, rows, tiles, buffers, shots, seed, query)  # noqa: E731
        if self.schedule == "static" or self.size == 1:
            first = 0 if self.root_computes else 1
            shares = split_static(counts, self.size - first, align)
            if self.rank >= first:
                run(shares[self.rank - first])
        elif self.rank == 0:
            chunk = dynamic_chunk(sum(counts), self.size, self.tiles_per_rank)
            self._coordinate(deque(split_chunks(counts, chunk, align)), run)
        else:
            self._request_tiles(run)
        with self.recorder.phase(query, "wait"):
            _wait(self.comm.Ibarrier())
        with self.recorder.phase(query, "reduce", bytes=buffers.flat.nbytes):
            if self.rank == 0:
                self.comm.Reduce(MPI.IN_PLACE, buffers.flat, op=MPI.SUM, root=0)
            else:
                self.comm.Reduce(buffers.flat, None, op=MPI.SUM, root=0)
        return buffers

    def _run(self, program, rows, tiles, buffers, shots, seed, query) -> None:
        if not tiles:
            return
        elapsed = run_tiles(self.runner, program, rows, tiles, buffers, shots, seed, query, self.recorder)
        delay = 0.0 if self.straggler is None else self.straggler.seconds(self.rank, query, tiles, elapsed)
        if delay > 0:
            begin = time.time()
            time.sleep(delay)
            self.recorder.add(PhaseRow(query, "straggle", begin, time.time(), n_tiles=len(tiles), injected_delay=delay))

    def _coordinate(self, queue: deque, run) -> None:
        """Rank 0 of the dynamic schedule: answer tile requests, computing between them.

        One receive stays posted per worker (each has at most one request outstanding): testing
        posted receives drives MPI's progress, where a single Iprobe after a long tile can miss
        a request that already arrived (seen with MPICH), leaving the worker idle a tile longer.
        """
        buffers = {w: np.zeros(1, dtype=np.int64) for w in range(1, self.size)}
        pending = {w: self.comm.Irecv(b, source=w, tag=_TAG_REQUEST) for w, b in buffers.items()}
        while pending or queue:
            for worker, request in list(pending.items()):
                if not request.Test():
                    continue
                tile = queue.popleft() if queue else Tile(-1, 0, 0)
                self.comm.Send(np.array(tile, dtype=np.int64), dest=worker, tag=_TAG_TILE)
                if tile.circuit < 0:
                    del pending[worker]
                else:
                    pending[worker] = self.comm.Irecv(buffers[worker], source=worker, tag=_TAG_REQUEST)
            if queue and (self.root_computes or not pending):
                run([queue.popleft()])
            elif pending:
                time.sleep(POLL)

    def _request_tiles(self, run) -> None:
        """A worker of the dynamic schedule: always one request ahead of its work."""
        request = np.zeros(1, dtype=np.int64)
        tile = np.zeros(3, dtype=np.int64)
        self.comm.Send(request, dest=0, tag=_TAG_REQUEST)
        while True:
            _wait(self.comm.Irecv(tile, source=0, tag=_TAG_TILE))
            if tile[0] < 0:
                return
            current = Tile(*map(int, tile))
            self.comm.Send(request, dest=0, tag=_TAG_REQUEST)
            run([current])


# -- launching ----------------------------------------------------------------------------------


def check_world() -> None:
    """Refuse to run when every launched process sees a world of its own (wrong MPI library)."""
    expected, world = launcher.size(), MPI.COMM_WORLD.Get_size()
    if expected is not None and expected != world:
        raise MPIWorldError(
            f"the launcher started {expected} processes but MPI reports a world of {world}: "
            "mpi4py is linked against a different MPI than the launcher (use the mpiexec of the "
            "MPI mpi4py was built with, or `srun --mpi=pmi2` for the pip MPICH)"
        )


def local_layout(comm: MPI.Comm) -> tuple[int, int]:
    """This rank's index among the ranks of ``comm`` on its node (it picks the rank's GPU), and
    the cores it owns: its CPU affinity if ranks on the node are bound apart, else a share.

    Taken from the MPI world, not from launcher variables: ``mpiexec`` inside a Slurm batch
    script leaves every rank the batch step's SLURM_LOCALID.
    """
    mine = os.sched_getaffinity(0)
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        sets = local.allgather(sorted(mine))
        disjoint = sum(len(s) for s in sets) == len(set().union(*map(set, sets)))
        return local.Get_rank(), max(1, len(mine) if disjoint else len(mine) // local.Get_size())
    finally:
        local.Free()


def place_ranks(comm: MPI.Comm, requested: str, local_rank: int) -> tuple[Placement, list[str]]:
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
    world = MPI.COMM_WORLD
    if world.Get_size() > 1:
        return world.Get_rank() == 0
    return (launcher.size() or 1) == 1 or launcher.rank() in (None, 0)


def on_root(task, comm: MPI.Comm | None = None) -> tuple[object, str | None]:
    """Run ``task()`` on rank 0 only; every rank gets its result and error message (or None).

    For decisions about shared state (run directories, defaults that depend on the clock) that
    every rank must share and that must not race with rank 0's writes, before any work starts.
    """
    comm = comm or MPI.COMM_WORLD
    value, message = None, None
    if comm.Get_rank() == 0:
        try:
            value = task()
        except HpcqnnError as exc:
            message = str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure must reach every rank, or they hang
            message = f"{type(exc).__name__}: {exc}"
    return comm.bcast((value, message), root=0)


def gather_on_root(value: object, comm: MPI.Comm | None = None) -> list | None:
    """Every rank's ``value`` in rank order on rank 0, ``None`` on the others."""
    return (comm or MPI.COMM_WORLD).gather(value, root=0)


def mpi_library() -> str:
    return MPI.Get_library_version().strip().splitlines()[0]


def _check_timing_dir(comm: MPI.Comm, timing_dir: str | Path, resume_at: int | None) -> None:
    """On every rank, before any log opens: a new run finds no timing logs (the same error on
    every rank otherwise); a resumed one on another rank count has rank 0 set the old logs aside."""
    if resume_at is None:
        taken = [rank for rank, exists in enumerate(comm.allgather(rank_file(timing_dir, comm.Get_rank()).exists())) if exists]
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


@contextmanager
def mpi_estimator(
    *,
    comm: MPI.Comm | None = None,
    schedule: str = "static",
    straggler: Straggler | None = None,
    root_computes: bool = True,
    threads: int | None = None,
    device: str = "auto",
    timing_dir: str | None = None,
    resume_at: int | None = None,
    config_text: str = "",
    **estimator_options,
) -> Iterator[object]:
    """``with mpi_estimator(...) as est:`` gives the estimator on rank 0 and ``None`` elsewhere.

    Workers serve rank 0's queries until rank 0 leaves the block. An exception on any rank prints
    that rank's traceback and aborts the whole job (``MPI.Abort``) instead of hanging it.
    ``timing_dir`` is a run directory: each rank writes ``timing/rank-NNNNN.h5`` there
    (``resume_at``: continue existing files for a run resumed at that query). ``device`` is decided on
    every rank before any work (``place_ranks``).
    """
    from hpcqnn.estimator import DistributedEstimator

    comm = comm or MPI.COMM_WORLD
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
    _wait(comm.Ibarrier())  # rank 0 may arrive late (busy elsewhere): wait without spinning
    if timing_dir is not None:
        _check_timing_dir(comm, timing_dir, resume_at)
    local_rank, cores = local_layout(comm)
    placement, rank_devices = place_ranks(comm, device, local_rank)
    log = engine = None
    try:
        threads = cores if threads is None else threads
        recorder = PhaseRecorder()
        if timing_dir is not None:
            log = HDF5TimingLog(
                rank_file(timing_dir, comm.Get_rank()),
                {
                    "rank": comm.Get_rank(), "size": comm.Get_size(), "hostname": socket.gethostname(),
                    **placement.attributes(), "local_rank": local_rank,
                    "mpi_library": mpi_library(), "hpcqnn_version": __version__,
                    "config": config_text, "schedule": schedule, "threads": threads,
                    "clock": "time.time() (Unix epoch seconds)",
                    **slurm_attributes(),
                },
                resume_at=resume_at,
            )
            recorder.sink = log
            recorder.restore(log.kept)
        engine = MPIEngine(
            comm, AerRunner(placement, threads), array_module(placement), recorder, schedule, straggler,
            root_computes, rank_devices=rank_devices,
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
        sys.stderr.flush()
        comm.Abort(1)
        os._exit(1)  # MPICH's Abort can return before the launcher kills us: never run on
    finally:
        if log is not None:
            log.close()
