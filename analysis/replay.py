"""Replay model: a steady query's critical path at any rank count, from measured costs.

**Calibration** (``calibrate``) from the timing rows of runs of one workload (same circuits):

- ``execute`` rows give a ``TileCost`` in *core-seconds*: a row of ``n`` experiments is
  ``ceil(n / CALL_EXPERIMENTS)`` Aer calls of 256, ..., the remainder (``AerRunner.run``), each
  ``call + experiment x m ** exponent``, fitted (relative least squares) through the median per
  distinct row size ``n``. Core-seconds
  weight each moment of a row by the cores its rank had then: a computing rank uses ``c`` cores
  (``rank_cores``: its Aer threads if the widest subexperiment template reaches Aer's statevector
  parallel threshold of 14 qubits, else 1 - Aer runs narrower circuits on one thread), and when
  the ``k`` ranks computing at that moment on a host want more than its capacity ``C``, each gets
  ``c x C / (k x c)``. This is how oversubscription (4 ranks on 2 cores) is modelled; sleeping
  and waiting ranks use no core. ``fit_capacity`` picks ``C`` in [1, cores]: hardware threads
  sharing a core, or other load on the host, make it smaller than the core count.
- local ``reconstruct`` rows (those with experiments) give the same kind of cost; rank 0's final
  contraction gives seconds per parameter row.
- ``start_lag``: a worker's parameter broadcast ends this long after rank 0's (header polling).
- ``sync``: from the last rank entering the barrier to the end of rank 0's reduce, minus the
  modelled messages (the polling granularity of ``_wait`` and rank skew).
- ``overhead``: rank 0's untimed seconds per query (wall minus its phases), static runs.
- ``fit_network``: the message latency is the median per-hop duration of the workers' parameter
  broadcast; bandwidth is assumed (shared memory or the interconnect, see ``CLUSTER``).

**Simulation** (``simulate``): ranks are coroutines on a discrete-event machine with processor
sharing: every computing rank runs at ``c x min(1, cores / (computing ranks x c))`` cores
(``cores=None``: dedicated cores, no sharing); sleeping and waiting ranks use none.
A batch runs as its sequence of Aer calls (``call_sizes``: tiles cut at ``CALL_EXPERIMENTS``,
consecutive pieces packed into a call while they fit, as ``AerRunner.run`` does).
Static: each rank runs its ``hpcqnn.tiles.split_static`` share as one batch. Dynamic: rank 0
hands out ``split_chunks`` tiles on request (one request ahead per worker, a Recv + Send of
rank-0 time each) and runs tiles itself between requests, as ``MPIEngine._coordinate`` does; a
waiting worker notices its tile at its next poll (``_wait`` sleeps 10 us, doubling to 0.5 ms); rank
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
the straggler-free runs of the same workload in the *other* configurations (the host's capacity
fitted too), and compared with the median of its runs; configurations whose simulator calls are
smaller or larger than any calibrated one are marked (``in_range``): the fixed cost of a call is
only known from small tiles.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from hpcqnn.measurement import SAMPLE_BLOCK
from hpcqnn.simulator import CALL_EXPERIMENTS
from hpcqnn.tiles import dynamic_chunk, split_chunks, split_static

from . import metrics
from .load import RunTables

CPU_PHASES = ("execute", "reconstruct")
AER_PARALLEL_QUBITS = 14  # Aer's default statevector_parallel_threshold
POLL = 2e-4  # seconds rank 0 sleeps between request checks when it has no tile to run
WAIT_FIRST, WAIT_MAX = 1e-5, 5e-4  # ``hpcqnn.distributed._wait``: test, sleep, double the sleep up to 0.5 ms
WORKLOAD_KEYS = ["kind", "dataset", "qubits", "layers", "cuts", "cutting", "mode"]
CONFIG_KEYS = ["ranks", "schedule", "rows", "straggler", "straggler_ranks", "straggler_probability", "straggler_slowdown",
               "straggler_delay"]
PROJECTION_RANKS = tuple(2**k for k in range(11))
#: (schedule, name, prompt_probe) of the projection: hpcqnn's static and dynamic schedules.
PROJECTED_SCHEDULES = (("static", "static", True), ("dynamic", "dynamic", True))


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
    ``hpcqnn.simulator.AerRunner.run`` does with ``CALL_EXPERIMENTS``; ``inf``: one call): each
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
    capacity: float  # effective cores of the measured host


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
    straggler_ranks: tuple[int, ...] = ()
    probability: float = 0.0  # chance that a tile is slowed (modelled by its expectation)
    slowdown: float = 1.0
    delay: float = 0.0  # seconds per slowed tile
    root_computes: bool = True
    tiles_per_rank: int = 16  # hpcqnn.distributed.MPIEngine's default
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


class _Machine:
    """Rank coroutines on shared cores (processor sharing, virtual time) with message passing.

    A coroutine yields ``("cpu", core_seconds)``, ``("sleep", seconds)``, ``("send", rank, msg)``,
    ``("recv",)`` (resumes with the next message) or ``("probe",)`` (resumes with the queued
    messages it sees, see ``_probe``). All computing ranks run at the same rate, so one virtual
    clock orders their ends.
    """

    def __init__(self, ranks: int, rank_cores: int, cores: float | None, latency: float, prompt_probe: bool):
        self.now = 0.0
        self.finish = [0.0] * ranks
        self._rank_cores, self._cores, self._latency, self._prompt = rank_cores, cores, latency, prompt_probe
        self._probed = [0.0] * ranks
        self._virtual = 0.0
        self._cpu: list[tuple[float, int, int]] = []  # (virtual end, seq, rank)
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
        while self._cpu or self._timers:
            rate = self._rate()
            t_cpu = self.now + (self._cpu[0][0] - self._virtual) / rate if self._cpu else math.inf
            t_timer = self._timers[0][0] if self._timers else math.inf
            if t_cpu <= t_timer:
                virtual, _, rank = heapq.heappop(self._cpu)
                self.now, self._virtual = t_cpu, virtual
                self._resume(rank, None)
                continue
            time, _, rank, message = heapq.heappop(self._timers)
            self._virtual += rate * (time - self.now) if self._cpu else 0.0
            self.now = time
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

    def _rate(self) -> float:
        wanted = len(self._cpu) * self._rank_cores
        return self._rank_cores * (1.0 if self._cores is None or not wanted else min(1.0, self._cores / wanted))

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
                heapq.heappush(self._cpu, (self._virtual + command[1], self._seq, rank))
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
            yield from _batch(machine, 0, [tiles.popleft()], costs, scenario)
        elif active:
            yield ("sleep", POLL)


def simulate(workload: Workload, costs: Costs, network: Network, scenario: Scenario) -> Replay:
    """The modelled critical path of one steady query (see the module docstring)."""
    p = scenario.ranks
    machine = _Machine(p, scenario.rank_cores, scenario.cores, network.latency, scenario.prompt_probe)
    lag = costs.start_lag if p > 1 else 0.0
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
        sync=costs.sync if p > 1 else 0.0,
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


def calibrate(tables: RunTables, runs: Iterable[str], cores: float, network: Network) -> Costs:
    """Costs from the timing rows of ``runs`` (one workload) measured on hosts of ``cores`` cores."""
    runs = list(runs)
    rows = _rows(tables, runs)
    capacity = fit_capacity(rows, cores)
    rows = rows.assign(core_seconds=_core_seconds(rows, capacity))
    execute = rows[rows["phase"] == "execute"]
    reconstruct = rows["phase"] == "reconstruct"
    local = rows[reconstruct & (rows["n_experiments"] > 0)]
    final = rows[reconstruct & (rows["n_experiments"] == 0) & (rows["rank"] == 0) & (rows["n_rows"] > 0)]
    phases = tables.phases[tables.phases["run"].isin(runs)]
    steady = metrics.steady(metrics.query_table(phases))[["run", "query"]]
    breakdown = metrics.phase_breakdown(phases).merge(steady, on=["run", "query"])
    static = breakdown[breakdown["run"].map(tables.runs.set_index("run")["schedule"]) == "static"]
    return Costs(
        execute=fit_tile_cost(execute["n_experiments"], execute["core_seconds"], batch=CALL_EXPERIMENTS)[0],
        reconstruct=fit_tile_cost(local["n_experiments"], local["core_seconds"])[0],
        contraction_row=_median(final["seconds"] / final["n_rows"]),
        start_lag=_start_lag(phases.merge(steady, on=["run", "query"])),
        sync=_sync(phases.merge(steady, on=["run", "query"]), network),
        overhead=_median((static if len(static) else breakdown)["other"]),
        capacity=capacity,
    )


def fit_capacity(rows: pd.DataFrame, cores: float, step: float = 0.05) -> float:
    """The host's effective cores in [1, ``cores``]: the capacity under which the execute rows'
    core-seconds are best explained by one ``TileCost``, whatever the number of ranks computing
    beside them (residual of ``fit_tile_cost`` over per-(run, tile size) medians). Below
    ``cores`` when hardware threads share a core or other work loads the host."""
    execute = rows["phase"] == "execute"
    keys = [rows.loc[execute, "run"], rows.loc[execute, "n_experiments"]]
    best, chosen = math.inf, float(cores)
    for capacity in np.arange(cores, 1.0 - 1e-9, -step):  # from ``cores`` down: ties keep more cores
        medians = _core_seconds(rows, capacity)[execute].groupby(keys).median()
        sizes = medians.index.get_level_values(1).to_series(index=medians.index)
        residual = fit_tile_cost(sizes, medians, by_size=False, batch=CALL_EXPERIMENTS)[1]
        if residual < best - 1e-12:
            best, chosen = residual, float(capacity)
    return chosen


def _rows(tables: RunTables, runs: Iterable[str]) -> pd.DataFrame:
    """Timing rows of ``runs`` with each run's ranks and the cores a computing rank used."""
    meta = tables.runs.set_index("run")
    meta = meta.assign(rank_cores=meta.apply(rank_cores, axis=1))[["ranks", "rank_cores"]]
    rows = tables.intervals[tables.intervals["run"].isin(list(runs))]
    return rows.join(meta, on="run")


def rank_cores(run: pd.Series) -> int:
    """Cores one computing rank of ``run`` uses: its Aer threads if its widest template (half
    the qubits plus an ancilla per cut) reaches Aer's statevector parallel threshold, else 1."""
    width = math.ceil(run["qubits"] / 2) + run["cuts"] if pd.notna(run["qubits"]) and pd.notna(run["cuts"]) else 0
    return int(run["threads"]) if width >= AER_PARALLEL_QUBITS and pd.notna(run["threads"]) else 1


def _core_seconds(rows: pd.DataFrame, cores: float) -> pd.Series:
    """Core-seconds of every ``execute``/``reconstruct`` row: its duration weighted by the cores
    its rank had at each moment, given how many ranks of its host were computing then."""
    result = pd.Series(np.nan, index=rows.index)
    cpu = rows[rows["phase"].isin(CPU_PHASES)]
    for _, group in cpu.groupby(["run", "host"]):
        used = float(group["rank_cores"].iloc[0])
        times = np.concatenate([group["t_start"], group["t_end"]])
        steps = np.concatenate([np.ones(len(group)), -np.ones(len(group))])
        order = np.argsort(times, kind="stable")
        times, computing = times[order], np.cumsum(steps[order])[:-1]
        rate = used * np.minimum(1.0, cores / (np.maximum(computing, 1) * used))
        integral = np.concatenate([[0.0], np.cumsum(rate * np.diff(times))])
        result[group.index] = np.interp(group["t_end"], times, integral) - np.interp(group["t_start"], times, integral)
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


def scenario_of(summary_row: pd.Series, cores: float | None) -> Scenario:
    """How a measured run ran: its ranks, schedule, Aer threads and straggler, on ``cores`` cores."""
    slow = bool(summary_row["straggler"])
    ranks = tuple(int(r) for r in str(summary_row["straggler_ranks"]).split(",") if r.strip())
    return Scenario(
        ranks=int(summary_row["ranks"]), schedule=summary_row["schedule"] or "static",
        rank_cores=rank_cores(summary_row), cores=cores, straggler_ranks=ranks if slow else (),
        probability=float(summary_row["straggler_probability"]) if slow else 0.0,
        slowdown=float(summary_row["straggler_slowdown"]), delay=float(summary_row["straggler_delay"]),
    )


def validate(tables: RunTables, cores: float) -> pd.DataFrame:
    """Every configuration (ranks, schedule, rows, straggler) predicted from the straggler-free
    runs of its workload in *other* configurations, on the capacity fitted for hosts with
    ``cores`` cores. ``measured`` is the median over the configuration's runs, ``spread`` their
    max / min - 1 (the noise floor where a configuration was run more than once);
    ``in_range``: its batches are no smaller and no larger than the calibration's tiles (the
    model does not extrapolate the fixed cost of a simulator call reliably)."""
    summary = metrics.run_summary(tables.runs, tables.phases).dropna(subset=["wall", "threads"])
    rows = []
    for _, group in summary.groupby(WORKLOAD_KEYS, dropna=False):
        for _, runs in group.groupby(CONFIG_KEYS, dropna=False):
            basis = group[~group["straggler"] & ~group["run"].isin(runs["run"])]
            if basis.empty:
                continue
            network = fit_network(tables, basis["run"])
            costs = calibrate(tables, basis["run"], cores, network)
            first = runs.iloc[0]
            workload, scenario = workload_of(first, tables), scenario_of(first, costs.capacity)
            predicted = simulate(workload, costs, network, scenario).wall
            measured = float(runs["wall"].median())
            calibrated = _rows(tables, basis["run"]).query("phase == 'execute'")["n_experiments"]
            rows.append({
                **{k: first[k] for k in [*WORKLOAD_KEYS, *CONFIG_KEYS[:4]]}, "runs": len(runs),
                "spread": runs["wall"].max() / runs["wall"].min() - 1.0, "basis_runs": len(basis),
                "capacity": costs.capacity, "batch": batch_size(workload, scenario),
                "in_range": calibrated.min() <= batch_size(workload, scenario) <= calibrated.max(),
                "measured": measured, "predicted": predicted, "error": predicted / measured - 1.0,
            })
    columns = [*WORKLOAD_KEYS, *CONFIG_KEYS[:4], "runs", "spread", "basis_runs", "capacity", "batch", "in_range"]
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
    reference workload: ``PROJECTED_SCHEDULES`` x tree/linear reduce, without and with rank 1
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
        for schedule, name, prompt in PROJECTED_SCHEDULES:
            for reduce in ("tree", "linear"):
                for straggler in (False, True):
                    scenario = Scenario(p, schedule, reduce, straggler_ranks=(1,) if straggler else (),
                                        slowdown=slowdown, prompt_probe=prompt)
                    rows.append({"ranks": p, "schedule": name, "reduce": reduce, "straggler": straggler,
                                 "wall": simulate(workload, costs, network, scenario).wall})
    table = pd.DataFrame(rows)
    table["speedup"] = simulate(workload, costs, network, Scenario(1)).wall / table["wall"]
    table["efficiency"] = table["speedup"] / table["ranks"]
    return table
