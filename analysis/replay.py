"""Replay model: a steady query's critical path at any rank count, from measured costs.

**Calibration** (``calibrate``) from the timing rows of runs of one workload (same circuits):

- ``execute`` rows give a ``TileCost`` in *core-seconds*: a row of ``n`` experiments is
  ``ceil(n / CALL_EXPERIMENTS)`` Aer calls of 256, ..., the remainder (``AerRunner.run``), each
  ``call + experiment x m ** exponent``, fitted (relative least squares) through the median per
  distinct row size ``n``. Core-seconds weight each moment of a row by the cores its rank had
  then (``core_shares``): a computing rank uses ``c`` cores (``rank_cores``: its Aer threads if
  the widest subexperiment template reaches Aer's statevector parallel threshold of 14 qubits,
  else 1 - Aer runs narrower circuits on one thread) while the ``k`` computing ranks of its host
  fit in its cores; sleeping and waiting ranks use none. A *crowded* host (``k x c`` above its
  cores: 4 ranks on 2 cores) is described by two numbers. ``root_share``: 0 shares the cores
  evenly; 1 gives rank 0 a core of its own (``min(c, cores - 1)``) and the others share the
  rest - what Linux mostly did here (measured with per-process CPU times): the always-busy
  rank 0 ran alone on one core, the ranks that sleep between tiles crowded the other; 0.5
  interpolates the rates. ``capacity``: the cores a crowded host delivers (its time-sliced cores
  deliver ``capacity / cores`` of a core: context switches and cache refills inflate the work,
  MPI's blocking reduce spins, woken ranks wait for a slice). The rows cannot tell either from
  the cost of the work, so ``fit_host`` picks both (``ROOT_SHARES`` x ``EFFICIENCIES``) as the
  pair under which the calibrated model best predicts the walls of the configurations (the
  median wall of each; least squares of relative errors): costs calibrated under a wrong share
  mispredict the other configurations, crowded or not.
- local ``reconstruct`` rows (those with experiments) give the same kind of cost; rank 0's final
  contraction gives seconds per parameter row.
- ``loop``: core-seconds of the dynamic schedule's loop per tile (testing and answering requests,
  bookkeeping): rank 0's median gap between one of its tiles and the next (``_rows``).
- ``start_lag``: a worker's parameter broadcast ends this long after rank 0's (header polling).
- ``sync``: from the last rank entering the barrier to the end of rank 0's reduce, minus the
  modelled messages (the polling granularity of ``_wait`` and rank skew).
  ``start_lag`` and ``sync`` are calibrated apart on crowded runs (``crowded_lag``,
  ``crowded_sync``: ranks wake into busy cores there) and on the others.
- ``overhead``: rank 0's untimed seconds per query (wall minus its phases), static runs.
- ``fit_network``: the message latency is the median per-hop duration of the workers' parameter
  broadcast; bandwidth is assumed (shared memory or the interconnect, see ``CLUSTER``).

**Simulation** (``simulate``): ranks are coroutines on a discrete-event machine with processor
sharing: computing ranks run at the rates of ``core_shares`` (rank 0 at its own, the others at
one common rate; ``cores=None``: dedicated cores, no sharing); sleeping and waiting ranks use none.
A batch runs as its sequence of Aer calls (``call_sizes``: tiles cut at ``CALL_EXPERIMENTS``,
consecutive pieces packed into a call while they fit, as ``AerRunner.run`` does).
Static: each rank runs its ``hpcqnn.execution.tiles.split_static`` share as one batch. Dynamic: rank 0
hands out ``split_chunks`` tiles on request (one request ahead per worker, a Recv + Send of
rank-0 time each) and runs tiles itself between requests, as ``MPIEngine._coordinate`` does;
every tile costs ``loop`` core-seconds on the rank that runs it; a waiting worker notices its
tile at its next poll (``_wait`` sleeps 10 us, doubling to 0.5 ms); rank
0 keeps a receive posted per worker, so it sees a request at its first test after a tile
(``prompt_probe``; a bare ``Iprobe`` loop, as hpcqnn had before, sees it a tile later with MPICH:
``_Machine._probe`` models both).
A slowed batch sleeps ``delay`` per tile plus ``slowdown - 1`` times its execution (a straggler
rank's every batch; with ``probability``, its expectation). Then:

``wall = overhead + broadcast + last rank done + barrier + sync + reduce + contraction``

with ``h = ceil(log2 P)`` hops: broadcast ``2h x latency + h x bytes / bandwidth`` (header and
parameters), barrier ``h x latency``, reduce ``h`` (tree) or ``P - 1`` (linear) times
``latency + buffer bytes / bandwidth``.

**Validation** (``validate``): every measured configuration is predicted from a calibration on
the runs of the same workload in the *other* configurations - costs from the straggler-free
ones, root share and capacity from the walls of all of them - and compared with the median of
its runs; configurations whose simulator calls are smaller or larger than any calibrated one are
marked (``in_range``): the fixed cost of a call is only known from small tiles.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from hpcqnn.options import CALL_EXPERIMENTS, POLL, SAMPLE_BLOCK, SCHEDULES, TILES_PER_RANK, WAIT_FIRST, WAIT_MAX
from hpcqnn.execution.tiles import dynamic_chunk, split_chunks, split_static

from . import metrics
from .load import RunTables

CPU_PHASES = ("execute", "accumulate", "loop")  # "loop": rank 0 between its dynamic tiles (``_rows``)
AER_PARALLEL_QUBITS = 14  # Aer's default statevector_parallel_threshold
WORKLOAD_KEYS = ["kind", "dataset", "qubits", "layers", "cuts", "cutting", "mode"]
CONFIG_KEYS = ["ranks", "schedule", "rows", "straggler", "straggler_ranks", "straggler_probability", "straggler_slowdown",
               "straggler_delay"]
PROJECTION_RANKS = tuple(2**k for k in range(11))


@dataclass(frozen=True)
class Network:
    """Message cost: ``latency + bytes / bandwidth`` per hop."""

    latency: float
    bandwidth: float

    def message(self, nbytes: float) -> float:
        return self.latency + nbytes / self.bandwidth


#: An HPC interconnect (HDR InfiniBand class): 2 us, 12.5 GB/s.
CLUSTER = Network(latency=2e-6, bandwidth=12.5e9)
#: Assumed intra-node bandwidth when fitting a workstation's latency.
LOCAL_BANDWIDTH = 5e9


@dataclass(frozen=True)
class TileCost:
    """Core-seconds of ``n`` experiments run in calls of at most ``batch`` experiments (as
    ``hpcqnn.execution.simulator.AerRunner.run`` does with ``CALL_EXPERIMENTS``; ``inf``: one call): each
    call of ``m`` costs ``call + experiment x m ** exponent`` up to the largest calibrated call
    ``fitted_up_to``, linear beyond it (no extrapolated growth)."""

    call: float
    experiment: float
    exponent: float = 1.0
    fitted_up_to: float = math.inf
    batch: float = math.inf

    def __call__(self, n: float) -> float:
        return sum(self.single(m) for m in self.calls(n))

    def calls(self, n: float) -> list[float]:
        """Sizes of the calls ``n`` experiments take: ``batch``, ..., ``batch``, the remainder."""
        if n <= 0 or n <= self.batch:
            return [n]
        full, rest = divmod(n, self.batch)
        return [self.batch] * int(full) + ([rest] if rest > 0 else [])

    def single(self, m: float) -> float:
        """Core-seconds of one call on ``m`` experiments."""
        top = min(m, self.fitted_up_to)
        return self.call + self.experiment * top**self.exponent * m / top if m > 0 else self.call


@dataclass(frozen=True)
class Costs:
    """Calibrated per-query costs (core-seconds for compute, seconds otherwise)."""

    execute: TileCost
    reconstruct: TileCost
    contraction_row: float
    start_lag: float
    sync: float
    overhead: float
    capacity: float  # effective cores of the measured host when crowded (``core_shares``)
    root_share: float = 0.0  # how the measured host shared its cores (``core_shares``)
    loop: float = 0.0  # core-seconds of the dynamic schedule's loop per tile (request, reply, bookkeeping)
    crowded_lag: float | None = None  # ``start_lag`` and ``sync`` where ranks outnumbered cores (None: as uncrowded)
    crowded_sync: float | None = None


@dataclass(frozen=True)
class Workload:
    """One query: (subexperiment, row) experiments over ``circuits`` templates (split evenly),
    parameter rows and the bytes that move."""

    experiments: int
    rows: int
    param_bytes: int
    buffer_bytes: int
    align: int = 1
    circuits: int = 1

    def counts(self) -> list[int]:
        """Experiments per circuit."""
        share, extra = divmod(self.experiments, self.circuits)
        return [share + (c < extra) for c in range(self.circuits)]


@dataclass(frozen=True)
class Scenario:
    """Where and how the query runs."""

    ranks: int
    schedule: str = "static"
    reduce: str = "tree"
    rank_cores: int = 1  # cores a computing rank uses (see ``rank_cores``)
    cores: float | None = None  # cores all ranks share; None: each rank has its own
    root_share: float = 0.0  # how ranks share ``cores`` when they want more (``core_shares``)
    capacity: float | None = None  # what ``cores`` deliver when crowded (``core_shares``); None: ``cores``
    straggler_ranks: tuple[int, ...] = ()
    probability: float = 0.0  # chance that a tile is slowed (modelled by its expectation)
    slowdown: float = 1.0
    delay: float = 0.0  # seconds per slowed tile
    root_computes: bool = True
    tiles_per_rank: int = TILES_PER_RANK
    prompt_probe: bool = True  # False: a bare Iprobe loop that sees requests a tile late (``_Machine._probe``)


@dataclass(frozen=True)
class Replay:
    """The modelled critical path of one query, by term (seconds)."""

    overhead: float
    broadcast: float
    compute: float
    barrier: float
    sync: float
    reduce: float
    contraction: float

    @property
    def wall(self) -> float:
        return self.overhead + self.broadcast + self.compute + self.barrier + self.sync + self.reduce + self.contraction


# -- the discrete-event machine ------------------------------------------------------------------


def core_shares(
    root: bool, others: int, rank_cores: float, cores: float | None, root_share: float = 0.0,
    capacity: float | None = None,
) -> tuple[float, float]:
    """Cores (of rank 0, of each other rank) while ``root`` (rank 0 computing or not) and
    ``others`` more ranks compute on a host of ``cores`` cores (None: a core set per rank).

    Ranks that fit (``k x c <= cores``) get their ``c`` cores. On a crowded host, cores that
    time-slice several ranks deliver ``capacity / cores`` of a core (context switches, shared
    caches, other load; ``capacity`` None: ``cores``), and ``root_share`` says who gets them:
    0: every computing rank ``c x min(1, capacity / (k x c))`` (even); 1: rank 0 keeps
    ``min(c, cores - 1)`` cores to itself (unsliced; its even share if that is more) and the
    others share what the remaining cores deliver; in between, both rates are interpolated.
    Measured with Linux on 2 cores: the always-busy rank 0 often runs alone on one core while
    the ranks that sleep between tiles crowd the other (the load balancer sees their low average
    load), but not always - whole runs of 4 ranks shared the cores evenly."""
    c, computing = float(rank_cores), others + int(root)
    if cores is None or not computing or computing * c <= cores:
        return (c if root else 0.0), (c if others else 0.0)
    efficiency = (cores if capacity is None else capacity) / cores
    even = c * min(1.0, efficiency * cores / (computing * c))
    if not root_share or not root or not others:
        return (even if root else 0.0), (even if others else 0.0)
    mine = max(even, min(c, cores - 1.0))
    theirs = min(c, efficiency * (cores - mine) / others)
    return even + root_share * (mine - even), even + root_share * (theirs - even)


class _Machine:
    """Rank coroutines on shared cores (processor sharing, virtual time) with message passing.

    A coroutine yields ``("cpu", core_seconds)``, ``("sleep", seconds)``, ``("send", rank, msg)``,
    ``("recv",)`` (resumes with the next message) or ``("probe",)`` (resumes with the queued
    messages it sees, see ``_probe``). Computing ranks run at the rates of ``core_shares``:
    rank 0 at its own, every other rank at one common rate, so one virtual clock per class
    (rank 0, the others) orders their ends.
    """

    def __init__(self, ranks: int, rank_cores: int, cores: float | None, latency: float, prompt_probe: bool,
                 root_share: float = 0.0, capacity: float | None = None):
        self.now = 0.0
        self.finish = [0.0] * ranks
        self._rank_cores, self._cores, self._latency, self._prompt = rank_cores, cores, latency, prompt_probe
        self._root_share, self._capacity = root_share, capacity
        self._probed = [0.0] * ranks
        self._virtual = [0.0, 0.0]  # per class: rank 0, the others
        self._cpu: list[list[tuple[float, int, int]]] = [[], []]  # per class: (virtual end, seq, rank)
        self._timers: list[tuple[float, int, int, object]] = []  # (time, seq, rank, message or _WAKE)
        self._mail = [deque() for _ in range(ranks)]
        self._receiving: dict[int, float] = {}  # rank -> when it began waiting
        self._procs: list[Iterator] = []
        self._seq = 0

    def run(self, procs: list[Iterator]) -> float:
        """Run every rank's coroutine to its end; the time the last one ended."""
        self._procs = procs
        for rank in range(len(procs)):
            self._resume(rank, None)
        while self._cpu[0] or self._cpu[1] or self._timers:
            rates = self._rates()
            ends = [self.now + (heap[0][0] - virtual) / rate if heap and rate > 0 else math.inf
                    for heap, virtual, rate in zip(self._cpu, self._virtual, rates)]
            first = 0 if ends[0] <= ends[1] else 1
            t_timer = self._timers[0][0] if self._timers else math.inf
            if ends[first] <= t_timer:
                self._advance(ends[first], rates)
                virtual, _, rank = heapq.heappop(self._cpu[first])
                self._virtual[first] = virtual
                self._resume(rank, None)
                continue
            time, _, rank, message = heapq.heappop(self._timers)
            self._advance(time, rates)
            if message is _WAKE:
                self._resume(rank, None)
            elif isinstance(message, _Noticed):
                self._resume(rank, message.value)
            elif rank in self._receiving:  # a waiting rank notices it at its next test
                since = self._receiving.pop(rank)
                self._push_timer(since + noticed_after(self.now - since), rank, _Noticed(message))
            else:
                self._mail[rank].append((self.now, message))
        return max(self.finish)

    def _rates(self) -> tuple[float, float]:
        return core_shares(bool(self._cpu[0]), len(self._cpu[1]), self._rank_cores, self._cores, self._root_share,
                           self._capacity)

    def _advance(self, time: float, rates: tuple[float, float]) -> None:
        for k in (0, 1):
            if self._cpu[k]:
                self._virtual[k] += rates[k] * (time - self.now)
        self.now = time

    def _push_timer(self, time: float, rank: int, message: object) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (time, self._seq, rank, message))

    def _resume(self, rank: int, value: object) -> None:
        while True:
            try:
                command = self._procs[rank].send(value)
            except StopIteration:
                self.finish[rank] = self.now
                return
            kind, value = command[0], None
            if kind == "cpu" and command[1] > 0:
                self._seq += 1
                k = int(rank > 0)
                heapq.heappush(self._cpu[k], (self._virtual[k] + command[1], self._seq, rank))
                return
            if kind == "sleep" and command[1] > 0:
                self._push_timer(self.now + command[1], rank, _WAKE)
                return
            if kind == "send":
                self._push_timer(self.now + self._latency, command[1], command[2])
            elif kind == "recv":
                if not self._mail[rank]:
                    self._receiving[rank] = self.now
                    return
                value = self._mail[rank].popleft()[1]
            elif kind == "probe":
                value = self._probe(rank)

    def _probe(self, rank: int) -> list:
        """Messages ``rank``'s ``Iprobe`` loop takes now. Measured with MPICH (ch4): a message that
        arrived while the rank computed is only matched by a probe after one that progressed it,
        so a loop whose first probe fails takes nothing; once one succeeds, the next probes see
        all that had arrived. ``prompt_probe`` models a loop that progresses before probing."""
        seen = self._prompt or any(arrived <= self._probed[rank] for arrived, _ in self._mail[rank])
        self._probed[rank] = self.now
        if not seen:
            return []
        taken, self._mail[rank] = [m for _, m in self._mail[rank]], deque()
        return taken


_WAKE = object()


@dataclass(frozen=True)
class _Noticed:
    """A message a waiting rank has noticed (delivered to its coroutine when this timer fires)."""

    value: object


def noticed_after(waited: float) -> float:
    """When a rank polling like ``_wait`` notices what arrived ``waited`` seconds after it began:
    its first test at or after that moment (tests after sleeps of 10 us, 20 us, ... 0.5 ms, 0.5 ms)."""
    checked, pause = 0.0, WAIT_FIRST
    while checked < waited and pause < WAIT_MAX:
        checked, pause = checked + pause, min(2 * pause, WAIT_MAX)
    return checked if checked >= waited else checked + math.ceil((waited - checked) / WAIT_MAX) * WAIT_MAX


def _batch(machine: _Machine, rank: int, tiles: list[int], costs: Costs, scenario: Scenario) -> Iterator:
    """One ``run_tiles`` call on ``tiles`` (their experiment counts), then the injected delay:
    ``delay`` per slowed tile and ``slowdown - 1`` times the execution (``Straggler.seconds``)."""
    start = machine.now
    for size in call_sizes(tiles, costs.execute.batch):
        yield ("cpu", costs.execute.single(size))
    elapsed = machine.now - start
    yield ("cpu", costs.reconstruct(sum(tiles)))
    hit = 1.0 if rank in scenario.straggler_ranks else scenario.probability
    yield ("sleep", hit * (scenario.delay * len(tiles) + (scenario.slowdown - 1.0) * elapsed))


def call_sizes(tiles: list[int], batch: float) -> list[float]:
    """Experiments per simulator call for one ``run_tiles`` on ``tiles``, packed as
    ``AerRunner.run`` does: each tile cut into pieces of at most ``batch``, consecutive pieces
    sharing a call while their sum stays within ``batch``."""
    calls: list[float] = []
    size = 0.0
    for tile in tiles:
        for piece in TileCost(0.0, 0.0, batch=batch).calls(tile):
            if size and size + piece > batch:
                calls.append(size)
                size = 0.0
            size += piece
    return calls + [size] if size or not calls else calls


def _static(machine: _Machine, rank: int, tiles: list[int], lag: float, costs: Costs, scenario: Scenario) -> Iterator:
    yield ("sleep", lag)
    if tiles:
        yield from _batch(machine, rank, tiles, costs, scenario)


def _worker(machine: _Machine, rank: int, lag: float, costs: Costs, scenario: Scenario) -> Iterator:
    yield ("sleep", lag)
    yield ("send", 0, rank)
    while (n := (yield ("recv",))) is not None:
        yield ("send", 0, rank)
        yield ("cpu", costs.loop)
        yield from _batch(machine, rank, [n], costs, scenario)


def _coordinator(machine: _Machine, tiles: deque, dispatch: float, costs: Costs, scenario: Scenario) -> Iterator:
    active = scenario.ranks - 1
    while active or tiles:
        for source in (yield ("probe",)):
            yield ("sleep", dispatch)
            n = tiles.popleft() if tiles else None
            active -= n is None
            yield ("send", source, n)
        if tiles and (scenario.root_computes or active == 0):
            yield ("cpu", costs.loop)
            yield from _batch(machine, 0, [tiles.popleft()], costs, scenario)
        elif active:
            yield ("sleep", POLL)


def simulate(workload: Workload, costs: Costs, network: Network, scenario: Scenario) -> Replay:
    """The modelled critical path of one steady query (see the module docstring)."""
    p = scenario.ranks
    machine = _Machine(p, scenario.rank_cores, scenario.cores, network.latency, scenario.prompt_probe,
                       scenario.root_share, scenario.capacity)
    crowded = scenario.cores is not None and p * scenario.rank_cores > scenario.cores
    lag = (costs.crowded_lag if crowded and costs.crowded_lag is not None else costs.start_lag) if p > 1 else 0.0
    sync = (costs.crowded_sync if crowded and costs.crowded_sync is not None else costs.sync) if p > 1 else 0.0
    if scenario.schedule == "static" or p == 1:
        first = 0 if scenario.root_computes or p == 1 else 1
        split = split_static(workload.counts(), p - first, workload.align)
        shares = [[]] * first + [[t.stop - t.start for t in share] for share in split]
        procs = [_static(machine, r, shares[r], lag if r else 0.0, costs, scenario) for r in range(p)]
    else:
        chunk = dynamic_chunk(workload.experiments, p, scenario.tiles_per_rank)
        tiles = deque(t.stop - t.start for t in split_chunks(workload.counts(), chunk, workload.align))
        procs = [_coordinator(machine, tiles, 2 * network.latency, costs, scenario)]
        procs += [_worker(machine, r, lag, costs, scenario) for r in range(1, p)]
    compute = machine.run(procs)
    hops = math.ceil(math.log2(p)) if p > 1 else 0
    steps = hops if scenario.reduce == "tree" else p - 1
    return Replay(
        overhead=costs.overhead,
        broadcast=2 * hops * network.latency + hops * workload.param_bytes / network.bandwidth,
        compute=compute,
        barrier=hops * network.latency,
        sync=sync,
        reduce=steps * network.message(workload.buffer_bytes),
        contraction=costs.contraction_row * workload.rows,
    )


# -- calibration from measured runs --------------------------------------------------------------


def fit_network(tables: RunTables, runs: Iterable[str], bandwidth: float = LOCAL_BANDWIDTH) -> Network:
    """Latency from the workers' parameter broadcast (per hop) of ``runs``; ``bandwidth`` assumed."""
    rows = _rows(tables, runs)
    bcast = rows[(rows["phase"] == "broadcast") & (rows["rank"] > 0)]
    if bcast.empty:
        return replace(CLUSTER, bandwidth=bandwidth)
    per_hop = bcast["seconds"] / np.ceil(np.log2(bcast["ranks"])) - bcast["bytes"] / bandwidth
    return Network(latency=max(float(per_hop.median()), 0.0), bandwidth=bandwidth)


def calibrate(tables: RunTables, runs: Iterable[str], cores: float, network: Network,
              walls: Iterable[str] | None = None) -> Costs:
    """Costs from the timing rows of ``runs`` (one workload) measured on hosts of ``cores`` cores,
    as the module docstring says; how a crowded host ran them (root share and capacity,
    ``fit_host``) from the walls of the configurations among ``walls`` (default: ``runs``)."""
    runs = list(runs)
    rows = _rows(tables, runs)
    timeline = _Timeline(rows)
    execute = (rows["phase"] == "execute").to_numpy()
    local = (rows["phase"] == "accumulate").to_numpy()
    loop = (rows["phase"] == "loop").to_numpy()
    final = rows[(rows["phase"] == "contract").to_numpy() & (rows["rank"] == 0).to_numpy()
                 & (rows["n_rows"] > 0).to_numpy()]
    phases = tables.phases[tables.phases["run"].isin(runs)]
    steady = metrics.steady(metrics.query_table(phases))[["run", "query"]]
    breakdown = metrics.phase_breakdown(phases).merge(steady, on=["run", "query"])
    static = breakdown[breakdown["run"].map(tables.runs.set_index("run")["schedule"]) == "static"]
    steady_phases = phases.merge(steady, on=["run", "query"])
    crowded = steady_phases["run"].isin(crowded_runs(tables, runs, cores))
    plain = steady_phases[~crowded] if (~crowded).any() else steady_phases
    base = Costs(
        execute=TileCost(0.0, 0.0), reconstruct=TileCost(0.0, 0.0),
        contraction_row=_median(final["seconds"] / final["n_rows"]),
        start_lag=_start_lag(plain), sync=_sync(plain, network),
        overhead=_median((static if len(static) else breakdown)["other"]),
        capacity=float(cores),
        crowded_lag=_start_lag(steady_phases[crowded]) if crowded.any() else None,
        crowded_sync=_sync(steady_phases[crowded], network) if crowded.any() else None,
    )
    sizes = rows["n_experiments"].to_numpy()

    def at(root_share: float, capacity: float) -> Costs:
        """``base`` with the compute costs the rows give on a host that, crowded, delivered
        ``capacity`` cores and gave rank 0 ``root_share`` (``core_shares``)."""
        core_seconds = timeline.core_seconds(cores, capacity, root_share).to_numpy()
        return replace(
            base, capacity=float(capacity), root_share=float(root_share), loop=_median(pd.Series(core_seconds[loop])),
            execute=fit_tile_cost(pd.Series(sizes[execute]), pd.Series(core_seconds[execute]),
                                  batch=CALL_EXPERIMENTS)[0],
            reconstruct=fit_tile_cost(pd.Series(sizes[local]), pd.Series(core_seconds[local]))[0],
        )

    walls = runs if walls is None else list(walls)
    if not crowded_runs(tables, [*runs, *walls], cores):
        return at(0.0, float(cores))  # nothing ran crowded: neither is measured nor needed
    return fit_host(tables, walls, cores, network, at)


ROOT_SHARES = (0.0, 0.5, 1.0)  # rank 0's share of a crowded host tried by ``fit_host`` (``core_shares``)
EFFICIENCIES = tuple(np.round(np.arange(1.0, 0.4999, -0.05), 3))  # crowded capacity / cores tried by ``fit_host``


def fit_host(tables: RunTables, runs: list[str], cores: float, network: Network, at) -> Costs:
    """The costs ``at(root_share, capacity)`` whose simulation best predicts the median walls of
    the configurations among ``runs`` (least squares of relative errors), over ``ROOT_SHARES``
    and capacities ``EFFICIENCIES x cores``; ties keep the even share and more capacity.

    Both describe a crowded host, and its rows cannot tell them: a row's core-seconds depend on
    how the cores were shared, and crowded cores deliver less than their time says - time
    slicing inflates the work (measured with process CPU times here: 512 experiments took
    26.8-26.9 ms of CPU on one rank alone, 28.8-33.1 ms per rank with 4 ranks on 2 cores), MPI's
    blocking reduce spins, woken ranks wait for a slice. The walls can: costs from a wrong share
    mispredict the other configurations, crowded or not."""
    summary = metrics.run_summary(tables.runs[tables.runs["run"].isin(runs)],
                                  tables.phases[tables.phases["run"].isin(runs)])
    summary = summary.dropna(subset=["wall", "threads"])
    configurations = [(workload_of(group.iloc[0], tables), group.iloc[0], float(group["wall"].median()))
                      for _, group in summary.groupby(CONFIG_KEYS, dropna=False)]
    best, chosen = math.inf, None
    for root_share in ROOT_SHARES:
        for efficiency in EFFICIENCIES:
            costs = at(root_share, efficiency * cores)
            error = sum((simulate(workload, costs, network, scenario_of(first, cores, costs)).wall / wall - 1.0) ** 2
                        for workload, first, wall in configurations)
            if chosen is None or error < best - 1e-12:
                best, chosen = error, costs
    return chosen


def crowded_runs(tables: RunTables, runs: Iterable[str], cores: float) -> list[str]:
    """The ``runs`` whose ranks wanted more cores than their hosts of ``cores`` cores have."""
    meta = tables.runs[tables.runs["run"].isin(list(runs))]
    meta = meta[meta["ranks"].notna() & meta["threads"].notna()]
    per_host = meta["ranks"] / meta["hosts"].fillna(1).clip(lower=1)
    wanted = per_host * meta.apply(rank_cores, axis=1) if len(meta) else per_host
    return meta.loc[wanted > cores + 1e-9, "run"].tolist()


def _rows(tables: RunTables, runs: Iterable[str]) -> pd.DataFrame:
    """Timing rows of ``runs`` with each run's ranks and the cores a computing rank used, plus
    ``loop`` rows: rank 0 of a dynamic run between one of its tiles (its local reconstruct
    end) and its next (execute start), answering requests - CPU work no timing row covers."""
    meta = tables.runs.set_index("run")
    meta = meta.assign(rank_cores=meta.apply(rank_cores, axis=1))[["ranks", "rank_cores"]]
    rows = tables.intervals[tables.intervals["run"].isin(list(runs))]
    dynamic = rows["run"].map(tables.runs.set_index("run")["schedule"]) == "dynamic"
    tiles = rows[dynamic & (rows["rank"] == 0) & (rows["n_experiments"] > 0)].sort_values(["run", "query", "t_start"])
    after = tiles.groupby(["run", "query"]).shift(-1)
    gaps = tiles[(tiles["phase"] == "accumulate") & (after["phase"] == "execute")]
    loop = gaps.assign(phase="loop", t_start=gaps["t_end"], t_end=after.loc[gaps.index, "t_start"],
                       n_experiments=0, n_tiles=1)
    loop = loop.assign(seconds=loop["t_end"] - loop["t_start"])
    rows = pd.concat([rows, loop[loop["seconds"] >= 0]], ignore_index=True)
    return rows.join(meta, on="run")


def rank_cores(run: pd.Series) -> int:
    """Cores one computing rank of ``run`` uses: its Aer threads if its widest template (half
    the qubits plus an ancilla per cut) reaches Aer's statevector parallel threshold, else 1."""
    width = math.ceil(run["qubits"] / 2) + run["cuts"] if pd.notna(run["qubits"]) and pd.notna(run["cuts"]) else 0
    return int(run["threads"]) if width >= AER_PARALLEL_QUBITS and pd.notna(run["threads"]) else 1


class _Timeline:
    """Which ranks of each (run, host) computed when (``CPU_PHASES`` rows): built once, then
    weighed under any host model (``core_seconds``)."""

    def __init__(self, rows: pd.DataFrame):
        self.index = rows.index
        self.groups = []
        cpu = rows[rows["phase"].isin(CPU_PHASES)]
        for _, group in cpu.groupby(["run", "host"]):
            root = (group["rank"] == 0).to_numpy()
            times = np.concatenate([group["t_start"], group["t_end"]])
            steps = np.concatenate([np.ones(len(group)), -np.ones(len(group))])
            order = np.argsort(times, kind="stable")
            computing = np.rint(np.cumsum(steps[order])[:-1]).astype(int)
            rooted = np.rint(np.cumsum((steps * np.concatenate([root, root]))[order])[:-1]) > 0
            states, where = np.unique(np.column_stack([rooted, np.maximum(computing - rooted, 0)]), axis=0,
                                      return_inverse=True)
            times = times[order]
            spans = [np.searchsorted(times, group[column].to_numpy()) for column in ("t_start", "t_end")]
            self.groups.append((group.index, float(group["rank_cores"].iloc[0]), root, np.diff(times), states,
                                where.ravel(), *spans))

    def core_seconds(self, cores: float, capacity: float | None, root_share: float) -> pd.Series:
        result = pd.Series(np.nan, index=self.index)
        for index, used, root, steps, states, where, first, last in self.groups:
            rates = np.array([core_shares(bool(r), int(k), used, cores, root_share, capacity)
                              for r, k in states])[where]
            column = np.where(root, 0, 1)
            integral = np.vstack([np.zeros(2), np.cumsum(rates * steps[:, None], axis=0)])
            result[index] = integral[last, column] - integral[first, column]
        return result


def fit_tile_cost(x: pd.Series, y: pd.Series, by_size: bool = True, batch: float = math.inf) -> tuple[TileCost, float]:
    """The ``TileCost`` through ``(x, y)`` (medians per distinct ``x`` if ``by_size``) and its
    residual: relative least squares, so small tiles weigh as much as big ones; the exponent is
    searched in [1, 1.3] (per-experiment cost growing with the call, e.g. cache misses), the
    call cost kept >= 0 (0 when the sizes cannot tell it). A row of ``x`` experiments is
    ``TileCost.calls``: ceil(x / ``batch``) calls of ``batch``, ..., the remainder, so
    ``y = call x calls + experiment x sum(call sizes ** exponent)``."""
    if x.empty:
        return TileCost(0.0, 0.0, batch=batch), 0.0
    points = y.groupby(x.to_numpy()).median() if by_size else pd.Series(y.to_numpy(), index=x.to_numpy())
    xs, ys = points.index.to_numpy(float), points.to_numpy(float)
    shape = TileCost(0.0, 0.0, batch=batch)
    sizes = [np.asarray(shape.calls(n), float) for n in xs]
    counts = np.array([len(c) for c in sizes], float)
    distinct = np.unique(np.concatenate(sizes)).size  # distinct call sizes: what can tell call from experiment
    best = (math.inf, shape)
    for exponent in np.arange(1.0, 1.3001, 0.01) if distinct > 2 else (1.0,):
        powered = np.array([np.sum(c**exponent) for c in sizes])
        (call, per), *_ = np.linalg.lstsq(np.column_stack([counts / ys, powered / ys]), np.ones(len(xs)), rcond=None)
        if call < 0 or per <= 0 or distinct < 2:
            call, per = 0.0, float(np.sum(powered / ys) / np.sum((powered / ys) ** 2))
        residual = float(np.sum((1 - (call * counts + per * powered) / ys) ** 2))
        if residual < best[0] - 1e-12:
            best = (residual, TileCost(float(call), float(per), float(exponent), float(min(xs.max(), batch)), batch))
    return best[1], best[0]


def _median(values: pd.Series) -> float:
    return float(values.median()) if len(values) else 0.0


def _start_lag(phases: pd.DataFrame) -> float:
    """Median over (query, worker) of the worker's broadcast end minus rank 0's."""
    bcast = phases[phases["phase"] == "broadcast"].set_index(["run", "query"])
    root = bcast[bcast["rank"] == 0]["t_end"]
    workers = bcast[bcast["rank"] > 0]
    return max(_median(workers["t_end"] - root.reindex(workers.index).to_numpy()), 0.0)


def _sync(phases: pd.DataFrame, network: Network) -> float:
    """Median over multi-rank queries of last barrier entry -> rank 0's reduce end, minus messages."""
    multi = phases[phases["ranks"] > 1]
    if multi.empty:
        return 0.0
    last_in = multi[multi["phase"] == "wait"].groupby(["run", "query"])["t_start"].max()
    reduce = multi[(multi["phase"] == "reduce") & (multi["rank"] == 0)].set_index(["run", "query"])
    hops = np.ceil(np.log2(reduce["ranks"]))
    messages = hops * (network.latency + network.message(reduce["bytes"]))
    return max(_median(reduce["t_end"] - last_in.reindex(reduce.index) - messages), 0.0)


# -- validation and projection ------------------------------------------------------------------


def workload_of(summary_row: pd.Series, tables: RunTables) -> Workload:
    """The median steady query of a run (bytes from rank 0's broadcast and reduce rows; the
    circuits: the most any execute row of its workload touched)."""
    rows = tables.intervals[(tables.intervals["run"] == summary_row["run"]) & (tables.intervals["rank"] == 0)]
    nbytes = rows.groupby("phase")["bytes"].median()
    siblings = tables.runs.loc[same_workload(tables.runs, summary_row), "run"]
    execute = tables.intervals[tables.intervals["run"].isin(siblings) & (tables.intervals["phase"] == "execute")]
    return Workload(
        experiments=int(round(summary_row["experiments"])), rows=int(round(summary_row["rows"])),
        param_bytes=int(nbytes.get("broadcast", 0)), buffer_bytes=int(nbytes.get("reduce", 0)),
        align=SAMPLE_BLOCK if summary_row["mode"] == "sampled" else 1, circuits=max(int(execute["n_circuits"].max()), 1),
    )


def scenario_of(summary_row: pd.Series, cores: float | None, costs: Costs | None = None) -> Scenario:
    """How a measured run ran: its ranks, schedule, Aer threads and straggler, on ``cores`` cores
    shared as ``costs`` found (its capacity and root share; None: evenly, at full capacity)."""
    slow = bool(summary_row["straggler"])
    ranks = tuple(int(r) for r in str(summary_row["straggler_ranks"]).split(",") if r.strip())
    return Scenario(
        ranks=int(summary_row["ranks"]), schedule=summary_row["schedule"] or "static",
        rank_cores=rank_cores(summary_row), cores=cores, root_share=costs.root_share if costs else 0.0,
        capacity=costs.capacity if costs else None, straggler_ranks=ranks if slow else (),
        probability=float(summary_row["straggler_probability"]) if slow else 0.0,
        slowdown=float(summary_row["straggler_slowdown"]), delay=float(summary_row["straggler_delay"]),
    )


def validate(tables: RunTables, cores: float) -> pd.DataFrame:
    """Every configuration (ranks, schedule, rows, straggler) predicted from the runs of its
    workload in *other* configurations (costs from the straggler-free ones, root share and
    capacity from the walls of all of them, ``calibrate``), for hosts with ``cores`` cores. ``measured`` is
    the median over the configuration's runs, ``spread`` their max / min - 1 (the noise floor
    where a configuration was run more than once);
    ``in_range``: its batches are no smaller and no larger than the calibration's tiles (the
    model does not extrapolate the fixed cost of a simulator call reliably)."""
    summary = metrics.run_summary(tables.runs, tables.phases).dropna(subset=["wall", "threads"])
    rows = []
    for _, group in summary.groupby(WORKLOAD_KEYS, dropna=False):
        for _, runs in group.groupby(CONFIG_KEYS, dropna=False):
            others = group[~group["run"].isin(runs["run"])]
            basis = others[~others["straggler"]]
            if basis.empty:
                continue
            network = fit_network(tables, basis["run"])
            costs = calibrate(tables, basis["run"], cores, network, walls=others["run"])
            first = runs.iloc[0]
            workload, scenario = workload_of(first, tables), scenario_of(first, cores, costs)
            predicted = simulate(workload, costs, network, scenario).wall
            measured = float(runs["wall"].median())
            calibrated = _rows(tables, basis["run"]).query("phase == 'execute'")["n_experiments"]
            rows.append({
                **{k: first[k] for k in [*WORKLOAD_KEYS, *CONFIG_KEYS[:4]]}, "runs": len(runs),
                "spread": runs["wall"].max() / runs["wall"].min() - 1.0, "basis_runs": len(basis),
                "capacity": costs.capacity, "root_share": costs.root_share, "batch": batch_size(workload, scenario),
                "in_range": calibrated.min() <= batch_size(workload, scenario) <= calibrated.max(),
                "measured": measured, "predicted": predicted, "error": predicted / measured - 1.0,
            })
    columns = [*WORKLOAD_KEYS, *CONFIG_KEYS[:4], "runs", "spread", "basis_runs", "capacity", "root_share", "batch",
               "in_range"]
    return pd.DataFrame(rows, columns=[*columns, "measured", "predicted", "error"])


def batch_size(workload: Workload, scenario: Scenario) -> int:
    """Experiments per simulator call: a rank's static share, or the dynamic tile size."""
    if scenario.schedule == "static" or scenario.ranks == 1:
        return math.ceil(workload.experiments / scenario.ranks)
    return dynamic_chunk(workload.experiments, scenario.ranks, scenario.tiles_per_rank)


def reference_group(summary: pd.DataFrame) -> pd.DataFrame:
    """The workload with the most clean timed runs (ties: more rank counts): the one to project."""
    timed = summary.dropna(subset=["wall", "threads"])
    clean = timed[~timed["straggler"]]
    if clean.empty:
        return clean
    keys = clean.groupby(WORKLOAD_KEYS, dropna=False).agg(runs=("run", "size"), ranks=("ranks", "nunique"))
    best = keys.sort_values(["ranks", "runs"], ascending=False).index[0]
    return timed[same_workload(timed, pd.Series(best, index=WORKLOAD_KEYS))]


def reference_run(summary: pd.DataFrame) -> pd.Series | None:
    """The clean run with the most ranks of ``reference_group``: its query is the one projected."""
    group = reference_group(summary)
    clean = group[~group["straggler"]]
    return None if clean.empty else clean.sort_values("ranks", kind="stable").iloc[-1]


def same_workload(table: pd.DataFrame, workload: pd.Series) -> pd.Series:
    """Rows of ``table`` whose workload columns equal ``workload``'s."""
    return (table[WORKLOAD_KEYS].astype(str) == workload[WORKLOAD_KEYS].astype(str)).all(axis=1)


def project(
    tables: RunTables,
    cores: float,
    ranks: Iterable[int] = PROJECTION_RANKS,
    network: Network = CLUSTER,
    slowdown: float | None = None,
    work_scale: float = 1.0,
) -> pd.DataFrame:
    """Modelled wall time and speed-up at ``ranks`` (one core per rank on ``network``) for the
    reference workload: hpcqnn's schedules x tree/linear reduce, without and with rank 1
    slowed down.

    Calibrated on every clean run of the reference workload (measured on ``cores``-core hosts);
    the query is that of its clean run with the most ranks, with ``work_scale`` times the
    experiments. The straggler's slowdown is the measured runs' (else 4). Speed-up is over the
    modelled 1-rank time.
    """
    summary = metrics.run_summary(tables.runs, tables.phases)
    reference = reference_run(summary)
    if reference is None:
        return pd.DataFrame(columns=["ranks", "schedule", "reduce", "straggler", "wall", "speedup", "efficiency"])
    group = reference_group(summary)
    clean = group[~group["straggler"]]
    costs = calibrate(tables, clean["run"], cores, fit_network(tables, clean["run"]))
    base = workload_of(reference, tables)
    workload = replace(base, experiments=int(round(base.experiments * work_scale)))
    slow = group.loc[group["straggler"], "straggler_slowdown"]
    slowdown = slowdown or (float(slow.median()) if len(slow) else 4.0)
    rows = []
    for p in ranks:
        for schedule in SCHEDULES:
            for reduce in ("tree", "linear"):
                for straggler in (False, True):
                    scenario = Scenario(p, schedule, reduce, straggler_ranks=(1,) if straggler else (),
                                        slowdown=slowdown)
                    rows.append({"ranks": p, "schedule": schedule, "reduce": reduce, "straggler": straggler,
                                 "wall": simulate(workload, costs, network, scenario).wall})
    table = pd.DataFrame(rows)
    table["speedup"] = simulate(workload, costs, network, Scenario(1)).wall / table["wall"]
    table["efficiency"] = table["speedup"] / table["ranks"]
    return table
