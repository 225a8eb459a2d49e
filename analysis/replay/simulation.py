"""Simulation (``simulate``): one steady query replayed on a discrete-event machine.

Ranks are coroutines on a discrete-event machine (``Machine``) with processor
sharing: computing ranks run at the rates of ``core_shares`` (rank 0 at its own, the others at
one common rate; ``cores=None``: dedicated cores, no sharing); sleeping and waiting ranks use none.
A batch runs as its sequence of Aer calls (``call_sizes``: tiles cut at ``CALL_EXPERIMENTS``,
consecutive pieces packed into a call while they fit, as ``hpcqnn.execution.tiles.pack`` does).
Static: each rank runs its ``hpcqnn.execution.tiles.split_static`` share as one batch. Dynamic: rank 0
hands out ``split_chunks`` tiles on request (one request ahead per worker, a Recv + Send of
rank-0 time each) and runs tiles itself between requests, as ``MPIEngine._coordinate`` does;
every tile costs ``loop`` core-seconds on the rank that runs it; a waiting worker notices its
tile at its next poll (``_wait`` sleeps 10 us, doubling to 0.5 ms); rank
0 keeps a receive posted per worker, so it sees a request at its first test after a tile
(``prompt_probe``; a bare ``Iprobe`` loop, as hpcqnn had before, sees it a tile later with MPICH:
``Machine._probe`` models both).
A slowed batch sleeps ``delay`` per tile plus ``slowdown - 1`` times its execution (a straggler
rank's every batch; with ``probability``, its expectation). Then:

``wall = overhead + broadcast + last rank done + barrier + sync + reduce + contraction``

with ``h = ceil(log2 P)`` hops: broadcast ``2h x latency + h x bytes / bandwidth`` (header and
parameters), barrier ``h x latency``, reduce ``h`` (tree) or ``P - 1`` (linear) times
``latency + buffer bytes / bandwidth``.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from hpcqnn.execution.tiles import dynamic_chunk, split_chunks, split_static
from hpcqnn.options import POLL, WAIT_FIRST, WAIT_MAX

from .model import Costs, Network, Replay, Scenario, TileCost, Workload


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


class Machine:
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


def _batch(machine: Machine, rank: int, tiles: list[int], costs: Costs, scenario: Scenario) -> Iterator:
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


def _static(machine: Machine, rank: int, tiles: list[int], lag: float, costs: Costs, scenario: Scenario) -> Iterator:
    yield ("sleep", lag)
    if tiles:
        yield from _batch(machine, rank, tiles, costs, scenario)


def _worker(machine: Machine, rank: int, lag: float, costs: Costs, scenario: Scenario) -> Iterator:
    yield ("sleep", lag)
    yield ("send", 0, rank)
    while (n := (yield ("recv",))) is not None:
        yield ("send", 0, rank)
        yield ("cpu", costs.loop)
        yield from _batch(machine, rank, [n], costs, scenario)


def _coordinator(machine: Machine, tiles: deque, dispatch: float, costs: Costs, scenario: Scenario) -> Iterator:
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
    machine = Machine(p, scenario.rank_cores, scenario.cores, network.latency, scenario.prompt_probe,
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
