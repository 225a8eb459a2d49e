"""Validation (``validate``) and projection (``project``) of the replay model.

**Validation** (``validate``): every measured configuration is predicted from a calibration on
the runs of the same workload in the *other* configurations - costs from the straggler-free
ones, root share and capacity from the walls of all of them - and compared with the median of
its runs; configurations whose simulator calls are smaller or larger than any calibrated one are
marked (``in_range``): the fixed cost of a call is only known from small tiles.

**Projection** (``project``): the reference workload (``reference_group``: the one with the most
clean runs; its query that of ``reference_run``) calibrated on all its clean runs and simulated
at ``PROJECTION_RANKS`` on an HPC interconnect, for hpcqnn's schedules and reduces, without and
with a straggler.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

import pandas as pd

from hpcqnn.execution.tiles import dynamic_chunk
from hpcqnn.options import SCHEDULES

from .. import metrics
from ..load import RunTables
from .calibration import (
    calibrate,
    fit_network,
    same_workload,
    scenario_of,
    timing_rows,
    workload_of,
)
from .model import CLUSTER, CONFIG_KEYS, WORKLOAD_KEYS, Network, Scenario, Workload
from .simulation import simulate

PROJECTION_RANKS = tuple(2**k for k in range(11))


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
            network = fit_network(tables, basis["run"], cores=cores)
            costs = calibrate(tables, basis["run"], cores, network, walls=others["run"])
            first = runs.iloc[0]
            workload, scenario = workload_of(first, tables), scenario_of(first, cores, costs)
            predicted = simulate(workload, costs, network, scenario).wall
            measured = float(runs["wall"].median())
            calibrated = timing_rows(tables, basis["run"]).query("phase == 'execute'")["n_experiments"]
            rows.append({
                **{k: first[k] for k in [*WORKLOAD_KEYS, *CONFIG_KEYS[:4]]}, "hosts": first["hosts"], "runs": len(runs),
                "spread": runs["wall"].max() / runs["wall"].min() - 1.0, "basis_runs": len(basis),
                "capacity": costs.capacity, "root_share": costs.root_share, "batch": batch_size(workload, scenario),
                "in_range": calibrated.min() <= batch_size(workload, scenario) <= calibrated.max(),
                "measured": measured, "predicted": predicted, "error": predicted / measured - 1.0,
            })
    columns = [*WORKLOAD_KEYS, *CONFIG_KEYS[:4], "hosts", "runs", "spread", "basis_runs", "capacity", "root_share",
               "batch", "in_range"]
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
    costs = calibrate(tables, clean["run"], cores, fit_network(tables, clean["run"], cores=cores))
    base = workload_of(reference, tables)
    workload = replace(base, experiments=round(base.experiments * work_scale))
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
