"""Calibration (``calibrate``): the model's inputs from the timing rows of measured runs of one
workload (same circuits) - ``Costs``, a ``Network`` (``fit_network``), and each run's query and
configuration (``workload_of``, ``scenario_of``).

- ``execute`` rows give a ``TileCost`` in *core-seconds*: a row of ``n`` experiments in ``t``
  tiles is the simulator calls the replay runs for them (``row_calls``: the tiles cut at
  ``CALL_EXPERIMENTS`` and packed, ``simulation.call_sizes``, as ``hpcqnn.execution`` does), each
  ``call + experiment x m ** exponent``, fitted (relative least squares, ``fit_calls``) through
  the median per distinct row, so the fit and the replay count the same calls. Core-seconds
  weight each moment of a row by the cores its rank had
  then (``core_shares``): a computing rank uses ``c`` cores (``rank_cores``: its Aer threads if
  the widest circuit it simulates reaches Aer's statevector parallel threshold of 14 qubits,
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
- ``accumulate`` rows give the same kind of cost; rank 0's final contraction over the typical
  queries (``metrics.typical``: a training run's training queries) gives seconds per parameter row.
- ``loop``: core-seconds of the dynamic schedule's loop per tile (testing and answering requests,
  bookkeeping): rank 0's median gap between one of its tiles and the next (``timing_rows``).
- ``start_lag``: a worker's parameter broadcast ends this long after rank 0's (header polling).
- ``sync``: from the last rank entering the barrier to the end of rank 0's reduce, minus the
  modelled messages (the polling granularity of ``_wait`` and rank skew).
  ``start_lag`` and ``sync`` are calibrated apart on crowded runs (``crowded_lag``,
  ``crowded_sync``: ranks wake into busy cores there) and on the others.
- ``overhead``: rank 0's untimed seconds per typical query (wall minus its phases), static runs.
- ``fit_network``: the message latency is the median per-hop duration of the workers' parameter
  broadcast (of uncrowded runs where there are any); bandwidth is assumed (shared memory or the
  interconnect, see ``CLUSTER``).

Where some of the runs are crowded and some not, the per-query costs (Aer calls, accumulate,
loop, contraction, overhead) come from the uncrowded runs' rows alone, weighed under the host
model that the rows of all of them found: a model of time slicing explains crowded rows only
roughly, and would carry its error into the costs of every configuration.

The same calibration serves ``python -m analysis.report`` (runs loaded from their directories)
and ``hpcqnn plan`` (the queries it times, as the tables of one 1-rank run: ``load.tables_of``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from hpcqnn.options import CALL_EXPERIMENTS, SAMPLE_BLOCK

from .. import metrics
from ..load import RunTables
from .model import (
    CLUSTER,
    CONFIG_KEYS,
    WORKLOAD_KEYS,
    Costs,
    Network,
    Scenario,
    TileCost,
    Workload,
)
from .simulation import call_sizes, core_shares, simulate

CPU_PHASES = ("execute", "accumulate", "loop")  # "loop": rank 0 between its dynamic tiles (``timing_rows``)
AER_PARALLEL_QUBITS = 14  # Aer's default statevector_parallel_threshold
#: Assumed intra-node bandwidth when fitting a workstation's latency.
LOCAL_BANDWIDTH = 5e9


def fit_network(tables: RunTables, runs: Iterable[str], bandwidth: float = LOCAL_BANDWIDTH,
                cores: float | None = None) -> Network:
    """Latency from the workers' parameter broadcast (per hop) of ``runs``; ``bandwidth`` assumed.
    Given the hosts' ``cores``, only runs whose ranks fit them count where there are such: on a
    crowded host a broadcast also waits for the receiving rank to be scheduled."""
    runs = list(runs)
    if cores is not None:
        crowd = crowded_runs(tables, runs, cores)
        runs = [r for r in runs if r not in crowd] or runs
    rows = timing_rows(tables, runs)
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
    rows = timing_rows(tables, runs)
    timeline = Timeline(rows)
    execute = (rows["phase"] == "execute").to_numpy()
    local = (rows["phase"] == "accumulate").to_numpy()
    loop = (rows["phase"] == "loop").to_numpy()
    final = rows[(rows["phase"] == "contract").to_numpy() & (rows["rank"] == 0).to_numpy()
                 & (rows["n_rows"] > 0).to_numpy()]
    phases = tables.phases[tables.phases["run"].isin(runs)]
    queries = metrics.query_table(phases)
    steady = metrics.steady(queries)[["run", "query"]]
    chosen = metrics.typical(queries)[["run", "query"]]
    crowd = crowded_runs(tables, runs, cores)
    uncrowded = [r for r in runs if r not in crowd] or runs  # what the per-query costs come from
    breakdown = metrics.phase_breakdown(phases).merge(chosen, on=["run", "query"])
    breakdown = breakdown[breakdown["run"].isin(uncrowded)]
    static = breakdown[breakdown["run"].map(tables.runs.set_index("run")["schedule"]) == "static"]
    final = final.merge(chosen, on=["run", "query"])
    final = final[final["run"].isin(uncrowded)]
    steady_phases = phases.merge(steady, on=["run", "query"])
    crowded = steady_phases["run"].isin(crowd)
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
    calls = [row_calls(n, t, CALL_EXPERIMENTS) for n, t in zip(sizes[execute], rows["n_tiles"].to_numpy()[execute])]

    def at(root_share: float, capacity: float, only: np.ndarray | None = None) -> Costs:
        """``base`` with the compute costs the rows (``only`` those) give on a host that, crowded,
        delivered ``capacity`` cores and gave rank 0 ``root_share`` (``core_shares``)."""
        core_seconds = timeline.core_seconds(cores, capacity, root_share).to_numpy()
        mine = np.ones(len(rows), bool) if only is None else only
        return replace(
            base, capacity=float(capacity), root_share=float(root_share),
            loop=_median(pd.Series(core_seconds[loop & mine])),
            execute=fit_calls([c for c, m in zip(calls, mine[execute]) if m], core_seconds[execute & mine],
                              batch=CALL_EXPERIMENTS)[0],
            reconstruct=fit_tile_cost(pd.Series(sizes[local & mine]), pd.Series(core_seconds[local & mine]))[0],
        )

    walls = runs if walls is None else list(walls)
    if not crowded_runs(tables, [*runs, *walls], cores):
        return at(0.0, float(cores))  # nothing ran crowded: neither is measured nor needed
    host = fit_host(tables, walls, cores, network, at)
    if len(uncrowded) == len(runs):
        return host
    # the host as the rows of every run found it; the costs from the uncrowded runs' rows alone,
    # which that host model does not distort
    return at(host.root_share, host.capacity, rows["run"].isin(uncrowded).to_numpy())


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
    per_host = meta["ranks"] / meta["machines"].fillna(1).clip(lower=1)
    wanted = per_host * meta.apply(rank_cores, axis=1) if len(meta) else per_host
    return meta.loc[wanted > cores + 1e-9, "run"].tolist()


def timing_rows(tables: RunTables, runs: Iterable[str]) -> pd.DataFrame:
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
    """Cores one computing rank of ``run`` uses: its Aer threads if its widest circuit
    (``widest_circuit``) reaches Aer's statevector parallel threshold, else 1."""
    return int(run["threads"]) if widest_circuit(run) >= AER_PARALLEL_QUBITS and pd.notna(run["threads"]) else 1


def widest_circuit(run: pd.Series) -> float:
    """Qubits of the widest circuit ``run`` simulated: the ``width`` its results recorded (the cut
    plan), else that of the built-in family's coherent circuits: the widest of ``pieces`` pieces
    plus two control qubits per cut on each of its (at most two) boundaries; 0 if unknown."""
    if pd.notna(run.get("width", np.nan)):
        return float(run["width"])
    if pd.isna(run.get("qubits", np.nan)) or pd.isna(run.get("cuts", np.nan)):
        return 0.0
    pieces = max(int(run["pieces"]) if pd.notna(run.get("pieces", np.nan)) else 2, 2)
    return math.ceil(run["qubits"] / pieces) + 2 * run["cuts"] * min(pieces - 1, 2)


class Timeline:
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


def row_calls(experiments: float, tiles: float, batch: float) -> list[float]:
    """The simulator calls of an execute row of ``experiments`` in ``tiles`` tiles (taken as
    equal): each tile cut into pieces of at most ``batch``, packed as ``simulation.call_sizes``
    packs a batch of tiles for the replay."""
    count = max(int(tiles), 1)
    share, extra = divmod(int(experiments), count)
    return call_sizes([share + (t < extra) for t in range(count)], batch)


def fit_tile_cost(x: pd.Series, y: pd.Series, by_size: bool = True, batch: float = math.inf) -> tuple[TileCost, float]:
    """``fit_calls`` for rows of ``x`` experiments run as ``TileCost.calls``: ceil(x / ``batch``)
    calls of ``batch``, ..., the remainder."""
    shape = TileCost(0.0, 0.0, batch=batch)
    return fit_calls([shape.calls(n) for n in x.to_numpy(float)], y.to_numpy(float), by_size, batch)


def fit_calls(calls: Sequence[Sequence[float]], seconds: Sequence[float] | np.ndarray, by_size: bool = True,
              batch: float = math.inf) -> tuple[TileCost, float]:
    """The ``TileCost`` of rows that ran the simulator calls ``calls`` (experiments per call) in
    ``seconds``, and its residual: ``seconds = call x len(calls) + experiment x sum(m ** exponent)``
    through the median of each distinct row (``by_size``; else every row), by relative least
    squares, so small rows weigh as much as big ones. The exponent is searched in [1, 1.3]
    (per-experiment cost growing with the call, e.g. cache misses) where more than two call
    sizes occur; the call cost is kept >= 0 (0 where the rows cannot tell it: fewer than two
    call sizes, or a negative fit under noise). Beyond the largest call fitted the cost grows
    linearly (``TileCost.fitted_up_to``)."""
    if not len(calls):
        return TileCost(0.0, 0.0, batch=batch), 0.0
    grouped: dict[tuple[float, ...], list[float]] = {}
    for i, (c, y) in enumerate(zip(calls, np.asarray(seconds, float))):
        grouped.setdefault(tuple(float(m) for m in c) if by_size else (i, *c), []).append(float(y))
    sizes = [np.asarray(key if by_size else key[1:], float) for key in grouped]
    ys = np.array([np.median(ys) for ys in grouped.values()])
    counts = np.array([len(c) for c in sizes], float)
    distinct = np.unique(np.concatenate(sizes)).size  # distinct call sizes: what can tell call from experiment
    best = (math.inf, TileCost(0.0, 0.0, batch=batch))
    for exponent in np.arange(1.0, 1.3001, 0.01) if distinct > 2 else (1.0,):
        powered = np.array([np.sum(c**exponent) for c in sizes])
        (call, per), *_ = np.linalg.lstsq(np.column_stack([counts / ys, powered / ys]), np.ones(len(ys)), rcond=None)
        if call < 0 or per <= 0 or distinct < 2:
            call, per = 0.0, float(np.sum(powered / ys) / np.sum((powered / ys) ** 2))
        residual = float(np.sum((1 - (call * counts + per * powered) / ys) ** 2))
        if residual < best[0] - 1e-12:
            largest = float(max(c.max() for c in sizes))
            best = (residual, TileCost(float(call), float(per), float(exponent), min(largest, batch), batch))
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


def workload_of(summary_row: pd.Series, tables: RunTables) -> Workload:
    """The median steady query of a run (bytes from rank 0's broadcast and reduce rows; the
    circuits: the most any execute row of its workload touched)."""
    rows = tables.intervals[(tables.intervals["run"] == summary_row["run"]) & (tables.intervals["rank"] == 0)]
    nbytes = rows.groupby("phase")["bytes"].median()
    siblings = tables.runs.loc[same_workload(tables.runs, summary_row), "run"]
    execute = tables.intervals[tables.intervals["run"].isin(siblings) & (tables.intervals["phase"] == "execute")]
    return Workload(
        experiments=round(float(summary_row["experiments"])),
        rows=round(float(summary_row["rows"])),
        param_bytes=int(nbytes.get("broadcast", 0)),
        buffer_bytes=int(nbytes.get("reduce", 0)),
        align=SAMPLE_BLOCK if summary_row["mode"] == "sampled" else 1,
        circuits=max(int(execute["n_circuits"].max()), 1),
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


def same_workload(table: pd.DataFrame, workload: pd.Series) -> pd.Series:
    """Rows of ``table`` whose workload columns equal ``workload``'s."""
    return (table[WORKLOAD_KEYS].astype(str) == workload[WORKLOAD_KEYS].astype(str)).all(axis=1)

