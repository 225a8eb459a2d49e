"""MPI plumbing: the only module of hpcqnn that imports mpi4py. ``session`` is its public face.

Rank 0 drives (user code, training, benchmark) and holds the ``DistributedEstimator``; the other
ranks serve queries until rank 0 shuts the engine down. Wire protocol: an 8-int header
(``Ibcast``) announces each message. Per program (templates and term tables) one pickled
broadcast, after which every rank compiles it (``execution.compiled``) under the id it came
with; per (program, shots, seed) setting a header; per query the header and the parameter
matrix (``Bcast``). Work is split into tiles (``hpcqnn.execution.tiles``), statically or on
demand (tile requests and answers are point-to-point int64 messages, as is a worker's news
of a stop signal it received); each rank accumulates the
tiles it ran into its own query buffer as they finish, and the buffers meet at rank 0 in one
``Reduce(SUM)`` (each entry is written by exactly one rank, so the sum is the serial result),
where the final contraction runs.

Devices: each rank simulates on the GPU its local rank picks, and rank 0 contracts with CuPy
when it has a GPU. The query buffers stay in host memory on every device: Aer hands its results
back there and filling a buffer is only copying them in (or, sampled, one small matmul of the
counts), so the Reduce is an ordinary host-memory MPI reduce (no CUDA-aware MPI needed or
used), and rank 0 moves the reduced estimates (or sums) to its GPU once, for the contraction.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Protocol

import numpy as np
from mpi4py import MPI

from hpcqnn.cutting.program import Program
from hpcqnn.errors import ExecutionConfigError, MPISessionError, MPIWorldError
from hpcqnn.execution.compiled import CompiledProgram, compile_program
from hpcqnn.execution.devices import Placement
from hpcqnn.execution.engine import finish_query, run_tiles
from hpcqnn.execution.query import Query, QueryBuffers
from hpcqnn.execution.simulator import AerRunner
from hpcqnn.execution.straggler import Straggler
from hpcqnn.execution.tiles import Tile, dynamic_chunk, split_chunks, split_static
from hpcqnn.options import ABORT_GRACE, POLL, SAMPLE_BLOCK, SCHEDULES, TILES_PER_RANK, WAIT_FIRST, WAIT_MAX
from hpcqnn.run import launcher
from hpcqnn.run.timing import PhaseRecorder, PhaseRow

Comm = MPI.Comm

_QUERY, _PROGRAM, _SETTING, _STOP = 1, 2, 3, 4
_TAG_REQUEST, _TAG_TILE, _TAG_STOP = 11, 12, 13
# header fields: _QUERY: cmd, setting, rows, parameters, query, stream, seed (-1: None);
# _PROGRAM: cmd, program; _SETTING: cmd, setting, program, shots (-1: None)
_HEADER = 8


class StopSignals(Protocol):
    """The stop signals a job's processes receive (``training.loop.StopRequest``)."""

    signum: int  # the first stop signal this process received; 0: none

    def relay(self, signum: int, rank: int) -> None:
        """Rank 0: worker ``rank`` received ``signum``; stop as for a signal of one's own."""


def world() -> Comm:
    """The MPI world (MPI starts on first use, never at import)."""
    return MPI.COMM_WORLD


def wait(request: MPI.Request) -> None:
    """Wait without spinning a core: ranks often outnumber cores on a workstation."""
    pause = WAIT_FIRST
    while not request.Test():
        time.sleep(pause)
        pause = min(pause * 2, WAIT_MAX)


def barrier(comm: Comm) -> None:
    """A barrier that sleeps while it waits (``wait``)."""
    wait(comm.Ibarrier())


def abort(comm: Comm) -> None:
    """End the whole job, after a moment for the launcher to pass on this rank's last words:
    MPI_Abort tears every process down, and output still in flight was lost (about 1 run in 8
    here: the failing rank's traceback missing)."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(ABORT_GRACE)
    comm.Abort(1)
    os._exit(1)  # MPICH's Abort can return before the launcher kills us: never run on


@dataclass
class MPIEngine:
    """Runs a query's tiles on every rank of ``comm`` and reduces the results at rank 0."""

    comm: Comm
    runner: AerRunner
    xp: ModuleType = np
    recorder: PhaseRecorder = field(default_factory=PhaseRecorder)
    schedule: str = "static"
    straggler: Straggler | None = None
    root_computes: bool = True
    tiles_per_rank: int = TILES_PER_RANK
    rank_devices: list[str] = field(default_factory=list)  # where each rank computes ("GPU 0", "CPU")
    set_aside_logs: list[str] = field(default_factory=list)  # rank 0: unreadable earlier logs, moved away
    stop: StopSignals | None = None  # a worker's stop signal reaches rank 0 at the end of a query

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ExecutionConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        if not self.root_computes and self.size == 1:
            raise ExecutionConfigError("root_computes=False needs at least 2 ranks")
        self._compiled: dict[int, CompiledProgram] = {}  # program id -> this rank's compiled program
        self._settings: dict[int, tuple[int, int | None]] = {}  # setting -> (program id, shots)
        self._setting_ids: dict[tuple[int, int | None], int] = {}  # rank 0
        self.closed = False  # rank 0: shutdown released the workers, no rank serves any more
        self._stop_reported = False  # a worker: rank 0 was told of its stop signal

    @property
    def placement(self) -> Placement:
        return self.runner.placement

    # -- rank 0 -------------------------------------------------------------------------------

    def evaluate(self, query: Query) -> tuple[np.ndarray, np.ndarray | None]:
        """Rank 0: run one query on all ranks; values [rows, observables] and variances."""
        self._require_open()
        setting = self._share(query)
        params = np.ascontiguousarray(query.params, dtype=np.float64)
        with self.recorder.phase(query.number, "broadcast", n_rows=len(params), bytes=params.nbytes):
            seed = -1 if query.seed is None else query.seed
            self._header([_QUERY, setting, len(params), params.shape[1], query.number, query.stream, seed])
            self.comm.Bcast(params, root=0)
        buffers = self._work(query)
        with self.recorder.phase(query.number, "contract", n_rows=len(params)):
            result = finish_query(query, buffers, self.xp)
        self.recorder.flush()
        return result

    def shutdown(self) -> None:
        """Rank 0: release the workers from ``serve``; the engine takes no more work."""
        self._header([_STOP])
        self.closed = True

    def _require_open(self) -> None:
        """Refuse work after ``shutdown``: the workers have left, and rank 0 would wait forever."""
        if self.closed:
            raise MPISessionError(
                "this estimator's MPI session has ended (its `with mpi_estimator(...)` block was left, "
                "and the other ranks with it): run its queries inside the block"
            )

    def compile(self, program: Program) -> CompiledProgram:
        """Rank 0: broadcast ``program`` under a new id; every rank compiles it once."""
        self._require_open()
        pid = len(self._compiled)
        self._header([_PROGRAM, pid])
        self.comm.bcast(program, root=0)
        return self._compile(pid, program)

    def _compile(self, pid: int, program: Program) -> CompiledProgram:
        compiled = self._compiled[pid] = compile_program(program, self.runner, key=pid)
        return compiled

    def _share(self, query: Query) -> int:
        """The setting id of the query's program and shots, sent to the workers when new."""
        pid = query.compiled.key
        if self._compiled.get(pid) is not query.compiled:
            raise ValueError("this query's program was compiled by another engine (use engine.compile)")
        key = (pid, query.shots)
        setting = self._setting_ids.get(key)
        if setting is None:
            setting = self._setting_ids[key] = len(self._setting_ids)
            self._settings[setting] = key
            self._header([_SETTING, setting, pid, -1 if query.shots is None else query.shots])
        return setting

    def _header(self, values: list[int]) -> np.ndarray:
        header = np.zeros(_HEADER, dtype=np.int64)
        header[: len(values)] = values
        wait(self.comm.Ibcast(header, root=0))
        return header

    # -- workers ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Ranks > 0: execute queries until rank 0 calls ``shutdown``."""
        while True:
            cmd, *fields = (int(v) for v in self._header([]))
            if cmd == _STOP:
                return
            if cmd == _PROGRAM:
                self._compile(fields[0], self.comm.bcast(None, root=0))
            elif cmd == _SETTING:
                setting, pid, shots = fields[:3]
                self._settings[setting] = (pid, None if shots < 0 else shots)
            else:
                setting, rows, width, number, stream, seed = fields[:6]
                pid, query_shots = self._settings[setting]
                params = np.empty((rows, width))
                with self.recorder.phase(number, "broadcast", n_rows=rows, bytes=params.nbytes):
                    self.comm.Bcast(params, root=0)
                seed_or_none = None if seed < 0 else seed
                self._work(Query(number, self._compiled[pid], params, query_shots, seed_or_none, stream=stream))
                self.recorder.flush()

    # -- every rank ---------------------------------------------------------------------------

    def _work(self, query: Query) -> QueryBuffers:
        counts = [query.experiments(c) for c in range(len(query.program.circuits))]
        align = SAMPLE_BLOCK if query.program.sampled else 1
        buffers = QueryBuffers(query.compiled, query.rows)

        def run(tiles: list[Tile]) -> None:
            self._run(query, tiles, buffers)

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
        self._report_stop_signal()
        with self.recorder.phase(query.number, "wait"):
            barrier(self.comm)
        self._receive_stop_signals()
        with self.recorder.phase(query.number, "reduce", bytes=buffers.flat.nbytes):
            if self.rank == 0:
                self.comm.Reduce(MPI.IN_PLACE, buffers.flat, op=MPI.SUM, root=0)
            else:
                self.comm.Reduce(buffers.flat, None, op=MPI.SUM, root=0)
        return buffers

    def _report_stop_signal(self) -> None:
        """A worker: tell rank 0, once, of a stop signal it received (Slurm or a user may signal
        one worker alone, which would otherwise go unheard: workers serve until rank 0 stops).
        Sent before the query's closing barrier, so rank 0 finds it right after that barrier.
        Point to point and only when signalled: collective traffic to every rank on every query
        would turn a lost node into an MPI error rather than the hang Slurm requeues."""
        if self.rank == 0 or self.stop is None or not self.stop.signum or self._stop_reported:
            return
        self.comm.Send(np.array([self.stop.signum], dtype=np.int64), dest=0, tag=_TAG_STOP)
        self._stop_reported = True

    def _receive_stop_signals(self) -> None:
        """Rank 0: pass the workers' stop signals that arrived on to ``stop``."""
        if self.rank != 0:
            return
        status = MPI.Status()
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=_TAG_STOP, status=status):
            signum = np.zeros(1, dtype=np.int64)
            self.comm.Recv(signum, source=status.Get_source(), tag=_TAG_STOP)
            if self.stop is not None:
                self.stop.relay(int(signum[0]), status.Get_source())

    def _run(self, query: Query, tiles: list[Tile], buffers: QueryBuffers) -> None:
        if not tiles:
            return
        elapsed = run_tiles(self.runner, query, tiles, buffers, self.recorder)
        delay = 0.0 if self.straggler is None else self.straggler.seconds(self.rank, query.number, tiles, elapsed)
        if delay > 0:
            begin = time.time()
            time.sleep(delay)
            self.recorder.add(
                PhaseRow(query.number, "straggle", begin, time.time(), n_tiles=len(tiles), injected_delay=delay)
            )

    def _coordinate(self, queue: deque, run: Callable[[list[Tile]], None]) -> None:
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

    def _request_tiles(self, run: Callable[[list[Tile]], None]) -> None:
        """A worker of the dynamic schedule: always one request ahead of its work."""
        request = np.zeros(1, dtype=np.int64)
        tile = np.zeros(3, dtype=np.int64)
        self.comm.Send(request, dest=0, tag=_TAG_REQUEST)
        while True:
            wait(self.comm.Irecv(tile, source=0, tag=_TAG_TILE))
            if tile[0] < 0:
                return
            current = Tile(*map(int, tile))
            self.comm.Send(request, dest=0, tag=_TAG_REQUEST)
            run([current])


def check_world() -> None:
    """Refuse to run when every launched process sees a world of its own (wrong MPI library)."""
    expected, size = launcher.size(), world().Get_size()
    if expected is not None and expected != size:
        raise MPIWorldError(
            f"the launcher started {expected} processes but MPI reports a world of {size}: "
            "mpi4py is linked against a different MPI than the launcher (use the mpiexec of the "
            "MPI mpi4py was built with, or `srun --mpi=pmi2` for the pip MPICH)"
        )


def local_layout(comm: Comm) -> tuple[int, int]:
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


def mpi_library() -> str:
    return MPI.Get_library_version().strip().splitlines()[0]
