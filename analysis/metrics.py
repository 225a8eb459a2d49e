"""Derived numbers from the tables of ``analysis.load``: pure functions, tables in, tables out.

Definitions used throughout:

- **Wall time** of a query (its critical path): ``max t_end - min t_start`` over every rank's rows.
- **Phase breakdown**: rank 0's seconds per phase (rank 0 broadcasts, runs its tiles, waits,
  receives the reduce and contracts) plus ``other`` = wall - their sum (untimed work between
  phases). **Shares** divide by the wall. Rank 0 opens and closes every query, so the shares
  equal hpcqnn's own ``query_phases`` in ``results.json``; the reconstruction share (the paper's
  53 % median / 58 % p95 at 3 cuts) is the ``reconstruct`` share: ``accumulate`` (tiles' outputs
  into estimates, on every rank) plus ``contract`` (rank 0's final contraction).
- **Steady queries** reuse a cached cut plan (no ``partition``/``generate`` rows). A run's
  **typical** queries are its steady queries of its most frequent shape (row count; ties: the
  most rows): a training run's training queries, without its evaluation queries and the short
  last batch of an epoch. Timing comparisons across runs use the median wall over them (over
  all queries if a run has no steady one).
- **Busy** seconds of a rank: ``execute + straggle``; **load imbalance** = max / mean busy over
  the ranks of a query.
- Scaling: **speed-up** = wall at the fewest ranks measured / wall; **efficiency** = speed-up x
  fewest ranks / ranks; a 1-rank run is the base of every schedule (one rank runs statically).
  Weak scaling keeps parameter rows per rank fixed: **scaled speed-up** = throughput / base
  throughput (experiments per second), **efficiency** = that x base ranks / ranks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hpcqnn.run.timing import PHASES, RECONSTRUCTION_PHASES

BREAKDOWN = (*PHASES, "other")  # the parts of a query's wall time
SHARES = (*BREAKDOWN, "reconstruct")  # reported figures: the parts and reconstruct = accumulate + contract
WORKLOAD = ["kind", "dataset", "qubits", "layers", "mode"]
PROBLEM = [*WORKLOAD, "cuts", "cutting", "rows"]
EXECUTION = [
    "schedule",
    "straggler",
    "straggler_ranks",
    "straggler_probability",
    "straggler_slowdown",
    "straggler_delay",
]
PAPER_RECONSTRUCT_SHARE = {"median": 0.53, "p95": 0.58}  # arXiv 2602.16233, 3 cuts
#: Config entries of a train run that leave what it learns unchanged (how and where it ran, its
#: name, where its data files lie, its evaluation), and those ``accuracy_table`` has columns for.
#: The seed is a setting: runs of different seeds are separate lines, not averaged.
NOT_TRAINING = ("run.name", "data.path", "execution.device", "execution.schedule", "execution.threads",
                "execution.root_computes", "execution.straggler_", "evaluation.")
SETTING_COLUMNS = ("data.dataset", "model.cuts", "execution.cutting", "execution.mode", "training.epochs")


def query_table(phases: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, query): start, end, wall, setup (plan built), experiments, rows, ranks."""
    grouped = phases.groupby(["run", "query"], sort=True)
    table = grouped.agg(
        t_start=("t_start", "min"), t_end=("t_end", "max"), rows=("n_rows", "max"), ranks_seen=("rank", "nunique")
    )
    table["wall"] = table["t_end"] - table["t_start"]
    table["setup"] = phases["phase"].isin(["partition", "generate"]).groupby([phases["run"], phases["query"]]).any()
    execute = phases[phases["phase"] == "execute"].groupby(["run", "query"])["n_experiments"].sum()
    table["experiments"] = execute.reindex(table.index, fill_value=0)
    return table.reset_index()


def phase_breakdown(phases: pd.DataFrame) -> pd.DataFrame:
    """Rank 0's seconds per phase of every query, ``other`` and the wall (see module docstring)."""
    queries = query_table(phases).set_index(["run", "query"])
    root = phases[phases["rank"] == 0].pivot_table(
        index=["run", "query"], columns="phase", values="seconds", aggfunc="sum", fill_value=0.0
    )
    table = root.reindex(columns=list(PHASES), fill_value=0.0).reindex(queries.index).dropna(how="all")
    table["other"] = queries["wall"] - table[list(PHASES)].sum(axis=1)
    table["reconstruct"] = table[list(RECONSTRUCTION_PHASES)].sum(axis=1)
    table[["wall", "setup"]] = queries[["wall", "setup"]]
    return table.reset_index()


def phase_shares(phases: pd.DataFrame) -> pd.DataFrame:
    """The phase breakdown of every query as fractions of its wall time."""
    table = phase_breakdown(phases)
    table[list(SHARES)] = table[list(SHARES)].div(table["wall"].where(table["wall"] > 0), axis=0)
    return table


def steady(queries: pd.DataFrame) -> pd.DataFrame:
    """The steady rows of a per-query table (all of a run's rows if it has no steady query)."""
    has_steady = queries.groupby("run")["setup"].transform(lambda s: (~s).any())
    return queries[~queries["setup"] | ~has_steady]


def typical(queries: pd.DataFrame) -> pd.DataFrame:
    """The typical rows of a per-query table (see the module docstring): the steady queries whose
    row count is the run's most frequent one among them (ties: the most rows)."""
    chosen = steady(queries)
    counts = chosen.groupby(["run", "rows"]).size().rename("count").reset_index()
    counts = counts.sort_values(["run", "count", "rows"], ascending=[True, False, False], kind="stable")
    shape = counts.drop_duplicates("run").set_index("run")["rows"]
    return chosen[chosen["rows"].to_numpy() == chosen["run"].map(shape).to_numpy()]


def mean_breakdown(phases: pd.DataFrame) -> pd.DataFrame:
    """Per run: mean seconds per phase (and ``other``, ``reconstruct``, ``wall``) over typical
    queries, and each one's share of the mean wall as ``share_<phase>`` (the shares of the phases
    and ``other`` sum to 1)."""
    chosen = typical(query_table(phases))[["run", "query"]]
    means = phase_breakdown(phases).merge(chosen, on=["run", "query"]).groupby("run")[[*SHARES, "wall"]].mean()
    shares = means[list(SHARES)].div(means["wall"], axis=0).add_prefix("share_")
    return pd.concat([means, shares], axis=1).reset_index()


def p95(values: pd.Series) -> float:
    """The 95th percentile (linear interpolation, as ``numpy.percentile``)."""
    return values.quantile(0.95)


def share_summary(phases: pd.DataFrame) -> pd.DataFrame:
    """Per run and phase: median and 95th percentile of the share over all queries."""
    long = phase_shares(phases).melt(
        id_vars=["run", "query"], value_vars=list(SHARES), var_name="phase", value_name="share"
    )
    summary = long.groupby(["run", "phase"], sort=False)["share"].agg(median="median", p95=p95, queries="size")
    return summary.reset_index()


def reconstruction_share(phases: pd.DataFrame) -> pd.DataFrame:
    """Per run: median and p95 share of ``reconstruct`` (accumulate + contract) in the query wall time."""
    summary = share_summary(phases)
    return summary[summary["phase"] == "reconstruct"].drop(columns="phase").reset_index(drop=True)


def rank_waits(phases: pd.DataFrame) -> pd.DataFrame:
    """Per (run, rank): barrier wait seconds per query (median, mean, max) and median share of the wall."""
    table = (
        phases.assign(wait=phases["seconds"].where(phases["phase"] == "wait", 0.0))
        .groupby(["run", "query", "rank"])["wait"].sum().reset_index()
        .merge(query_table(phases)[["run", "query", "wall"]], on=["run", "query"])
    )
    table["share"] = table["wait"] / table["wall"]
    return (
        table.groupby(["run", "rank"])
        .agg(wait_median=("wait", "median"), wait_mean=("wait", "mean"), wait_max=("wait", "max"),
             wait_share_median=("share", "median"))
        .reset_index()
    )


def load_imbalance(phases: pd.DataFrame) -> pd.DataFrame:
    """Per (run, query): max and mean busy seconds over ranks and their ratio (1 = balanced)."""
    busy = (
        phases.assign(busy=phases["seconds"].where(phases["phase"].isin(["execute", "straggle"]), 0.0))
        .groupby(["run", "query", "rank"])["busy"].sum()
        .groupby(["run", "query"]).agg(busy_max="max", busy_mean="mean")
    )
    busy["imbalance"] = busy["busy_max"] / busy["busy_mean"].where(busy["busy_mean"] > 0)
    return busy.reset_index()


def delays(phases: pd.DataFrame) -> pd.DataFrame:
    """Per (run, rank): injected straggler delay vs the seconds really spent in ``straggle``."""
    straggle = phases[phases["phase"] == "straggle"]
    table = straggle.groupby(["run", "rank"]).agg(
        queries=("query", "nunique"), batches=("intervals", "sum"), injected=("injected_delay", "sum"),
        slept=("seconds", "sum"),
    )
    table["excess"] = table["slept"] - table["injected"]
    return table.reset_index()


def run_summary(runs: pd.DataFrame, phases: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its metadata plus medians over its queries (the input of the cross-run tables).

    ``wall``/``wall_p95``/``experiments``/``rows``/``imbalance``/``injected`` are medians over
    typical queries (``typical``); ``reconstruct_median``/``reconstruct_p95`` are over all queries (as in
    results.json); ``subexperiments`` is the largest plan generated.
    """
    queries = query_table(phases)
    imbalance = load_imbalance(phases).set_index(["run", "query"])["imbalance"]
    injected = phases.groupby(["run", "query"])["injected_delay"].sum().rename("injected")
    timed = typical(queries).join(imbalance, on=["run", "query"]).join(injected, on=["run", "query"])
    per_run = timed.groupby("run").agg(
        queries=("query", "size"), wall=("wall", "median"), wall_p95=("wall", p95),
        experiments=("experiments", "median"), rows=("rows", "median"),
        imbalance=("imbalance", "median"), injected=("injected", "median"),
    )
    per_run["all_queries"] = queries.groupby("run").size()
    shares = reconstruction_share(phases).set_index("run")
    per_run["reconstruct_median"], per_run["reconstruct_p95"] = shares["median"], shares["p95"]
    generate = phases[(phases["phase"] == "generate") & (phases["rank"] == 0)]
    per_run["subexperiments"] = generate.groupby("run")["n_circuits"].max()
    return runs.merge(per_run.reset_index(), on="run", how="left")


def strong_scaling(summary: pd.DataFrame) -> pd.DataFrame:
    """Speed-up and efficiency vs ranks for every problem measured at two or more rank counts."""
    keys = [*PROBLEM, *EXECUTION]
    table = _per_ranks(_serial_for_every_schedule(summary), keys)
    table["base_ranks"] = table.groupby(keys, dropna=False)["ranks"].transform("min")
    base_wall = table.groupby(keys, dropna=False)["wall"].transform("first")
    table["speedup"] = base_wall / table["wall"]
    table["efficiency"] = table["speedup"] * table["base_ranks"] / table["ranks"]
    counts = table.groupby(keys, dropna=False)["ranks"].transform("size")
    return table[counts > 1].reset_index(drop=True)


def weak_scaling(summary: pd.DataFrame) -> pd.DataFrame:
    """Scaled speed-up and efficiency where parameter rows per rank stay those of the fewest ranks."""
    keys = [*WORKLOAD, "cuts", "cutting", *EXECUTION]
    table = _per_ranks(_serial_for_every_schedule(summary), [*keys, "rows"])
    table = table.sort_values([*keys, "ranks", "rows"], kind="stable")
    first = table.groupby(keys, dropna=False)[["ranks", "rows", "wall", "experiments"]].transform("first")
    table = table[np.isclose(table["rows"] / table["ranks"], first["rows"] / first["ranks"])]
    first = first.loc[table.index]
    throughput = table["experiments"] / table["wall"]
    table = table.assign(
        base_ranks=first["ranks"], throughput=throughput,
        scaled_speedup=throughput / (first["experiments"] / first["wall"]),
    )
    table["efficiency"] = table["scaled_speedup"] * table["base_ranks"] / table["ranks"]
    counts = table.groupby(keys, dropna=False)["ranks"].transform("nunique")
    return table[counts > 1].reset_index(drop=True)


def _serial_for_every_schedule(summary: pd.DataFrame) -> pd.DataFrame:
    """1-rank runs stand for every schedule: hpcqnn runs a single rank statically."""
    serial = summary[summary["ranks"] == 1]
    copies = [serial.assign(schedule=s) for s in summary["schedule"].dropna().unique()]
    return pd.concat([summary[summary["ranks"] != 1], *copies], ignore_index=True)


def _per_ranks(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Median wall and experiments per (keys, ranks) over runs with timing, sorted by ranks."""
    timed = summary.dropna(subset=["wall"])
    return (
        timed.groupby([*keys, "ranks"], dropna=False)
        .agg(runs=("run", "size"), wall=("wall", "median"), experiments=("experiments", "median"))
        .reset_index()
        .sort_values([*keys, "ranks"], kind="stable")
        .reset_index(drop=True)
    )


def cut_overhead(summary: pd.DataFrame) -> pd.DataFrame:
    """Wall time of each cut setting over its baseline: the same circuit uncut (``cutting=false``)
    if measured, else the 0-cut run of the same workload, ranks and execution."""
    keys = [*WORKLOAD, "rows", "ranks", *EXECUTION]
    timed = summary.dropna(subset=["wall"])
    rows = []
    for _, group in timed.groupby(keys, dropna=False):
        cut = group["cutting"].astype(bool)
        uncut = group[~cut].groupby("cuts")["wall"].median()
        zero = group[cut & (group["cuts"] == 0)]["wall"].median()
        for _, run in group[cut].iterrows():
            baseline, kind = (uncut[run["cuts"]], "uncut") if run["cuts"] in uncut.index else (zero, "0 cuts")
            rows.append({
                **run[[*keys, "run", "cuts", "subexperiments", "wall"]], "baseline": kind, "baseline_wall": baseline,
                "overhead": run["wall"] / baseline,
            })
    columns = [*keys, "run", "cuts", "subexperiments", "wall", "baseline", "baseline_wall", "overhead"]
    table = pd.DataFrame(rows, columns=columns)
    return table.dropna(subset=["overhead"]).sort_values([*keys, "cuts"], kind="stable").reset_index(drop=True)


def subexperiments_vs_cuts(summary: pd.DataFrame) -> pd.DataFrame:
    """Subexperiments of the cut plan and (subexperiment, row) experiments per query and per row."""
    timed = summary.dropna(subset=["wall"]).assign(per_row=lambda t: t["experiments"] / t["rows"])
    table = timed.groupby([*WORKLOAD, "cutting", "cuts"], dropna=False).agg(
        subexperiments=("subexperiments", "max"), experiments=("experiments", "median"),
        experiments_per_row=("per_row", "median"),
    )
    return table.reset_index()


def straggler_sensitivity(summary: pd.DataFrame) -> pd.DataFrame:
    """Per problem, ranks and schedule: wall time with an injected straggler over the wall without."""
    keys = [*PROBLEM, "ranks", "schedule"]
    timed = summary.dropna(subset=["wall"])
    clean = timed[~timed["straggler"]].groupby(keys, dropna=False)["wall"].median().rename("wall_clean")
    slow = timed[timed["straggler"]].groupby([*keys, *EXECUTION[2:]], dropna=False).agg(
        wall_straggler=("wall", "median"), injected=("injected", "median")
    )
    table = slow.reset_index().merge(clean.reset_index(), on=keys, how="left")
    table["sensitivity"] = table["wall_straggler"] / table["wall_clean"]
    return table.sort_values([*PROBLEM, "ranks", "schedule"], kind="stable").reset_index(drop=True)


def accuracy_table(runs: pd.DataFrame, results: dict[str, dict], across: tuple[str, ...] = ()) -> pd.DataFrame:
    """Final train/test accuracy of every finished train run, with its cut setting, mode and epochs;
    ``setting``: the other training settings in which it differs from train runs of its dataset,
    less the config entries named in ``across`` (e.g. ``run.seed`` to group the seeds of a setting)."""
    columns = ["run", "name", "dataset", "cuts", "cutting", "mode", "ranks"]
    train = dict(_train_runs(runs, results))
    settings = {
        run: {k: v for k, v in _training_setting(results[run].get("config", {})).items() if k not in across}
        for run in train
    }
    rows = []
    for run, meta in train.items():
        peers = [settings[r] for r, m in train.items() if m["dataset"] == meta["dataset"]]
        mine = settings[run]
        differ = [k for k in sorted(mine) if any(k in p and p[k] != mine[k] for p in peers)]
        rows.append(
            {
                **meta[columns],
                "epochs": len(results[run].get("history", [])),
                "setting": ", ".join(f"{k.rsplit('.', 1)[1]}={mine[k]}" for k in differ),
                "train_accuracy": results[run]["final"]["train_accuracy"],
                "test_accuracy": results[run]["final"]["test_accuracy"],
            }
        )
    return pd.DataFrame(rows, columns=[*columns, "epochs", "setting", "train_accuracy", "test_accuracy"])


def training_history(runs: pd.DataFrame, results: dict[str, dict]) -> pd.DataFrame:
    """Per finished train run and epoch: loss, train and test accuracy, and the epoch's seconds
    (``results.json`` history; its ``seconds`` are cumulative)."""
    rows = []
    for run, meta in _train_runs(runs, results):
        previous = 0.0
        for number, entry in enumerate(results[run].get("history", []), start=1):
            seconds = entry.get("seconds", math.nan)
            rows.append({"run": run, "name": meta["name"], "qubits": meta["qubits"], "cuts": meta["cuts"],
                         "ranks": meta["ranks"], "epoch": entry.get("epoch", number),
                         "loss": entry.get("loss", math.nan), "train_accuracy": entry.get("train_accuracy", math.nan),
                         "test_accuracy": entry.get("test_accuracy", math.nan), "epoch_seconds": seconds - previous})
            previous = seconds
    columns = ["run", "name", "qubits", "cuts", "ranks", "epoch", "loss", "train_accuracy", "test_accuracy",
               "epoch_seconds"]
    return pd.DataFrame(rows, columns=columns)


def _training_setting(config: dict) -> dict[str, object]:
    """``section.key`` -> value of every entry of a train run's config that shapes what it learns
    (shots only when sampled), less those of ``SETTING_COLUMNS``."""
    flat = {f"{section}.{key}": value for section, entries in config.items() for key, value in entries.items()}
    sampled = flat.get("execution.mode") == "sampled"
    return {
        k: v for k, v in flat.items()
        if not k.startswith(NOT_TRAINING) and k not in SETTING_COLUMNS
        and (sampled or k not in ("execution.shots", "execution.shot_allocation"))
    }


def robustness_table(runs: pd.DataFrame, results: dict[str, dict]) -> pd.DataFrame:
    """Test accuracy under Gaussian noise (strength = sigma) and FGSM (strength = epsilon), long form."""
    columns = ["run", "name", "cuts", "cutting", "mode"]
    rows = []
    for run, meta in _train_runs(runs, results):
        robustness = results[run].get("robustness", {})
        rows += [
            {**meta[columns], "attack": "gaussian", "strength": g["sigma"], "accuracy": g["accuracy_mean"],
             "accuracy_std": g["accuracy_std"]}
            for g in robustness.get("gaussian", [])
        ]
        rows += [
            {
                **meta[columns],
                "attack": "fgsm",
                "strength": f["epsilon"],
                "accuracy": f["accuracy"],
                "accuracy_std": 0.0,
            }
            for f in robustness.get("fgsm", [])
        ]
    return pd.DataFrame(rows, columns=[*columns, "attack", "strength", "accuracy", "accuracy_std"])


#: The per-run numbers averaged over seeds: clean test accuracy, and test accuracy under Gaussian
#: noise and under FGSM, each the mean over its levels (sigmas, epsilons).
SEED_METRICS = ("test_accuracy", "gaussian", "fgsm")
#: What a setting of a seed matrix is, besides its cut count (``setting``: see ``accuracy_table``).
SEED_SETTING = ["dataset", "mode", "cutting", "epochs", "setting"]


def seed_runs(runs: pd.DataFrame, results: dict[str, dict]) -> pd.DataFrame:
    """One row per finished train run: its setting without the seed (``SEED_SETTING``, cuts), its
    seed and ``SEED_METRICS``."""
    table = accuracy_table(runs, results, across=("run.seed",))
    table["seed"] = [results[run].get("config", {}).get("run", {}).get("seed") for run in table["run"]]
    robustness = robustness_table(runs, results).groupby(["run", "attack"])["accuracy"].mean().unstack()
    return table.join(robustness.reindex(columns=list(SEED_METRICS[1:])), on="run")


def seed_matrix(runs: pd.DataFrame, results: dict[str, dict], phases: pd.DataFrame) -> pd.DataFrame:
    """Per setting and cut count trained with two or more seeds: ``SEED_METRICS`` as mean and std
    (n - 1) over the seeds (a seed run more than once, e.g. at other rank counts, counts once with
    the mean of its runs), the ranks, the reconstruction share's median and p95 over every query of
    the setting's runs, and ``beats_baseline`` (see ``beats_baseline``). Empty without such settings."""
    per_run = seed_runs(runs, results)
    keys = [*SEED_SETTING, "cuts"]
    per_seed = per_run.groupby([*keys, "seed"], dropna=False)[list(SEED_METRICS)].mean().groupby(keys, dropna=False)
    stats = per_seed.agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "seeds", per_seed.size())
    stats.insert(1, "ranks", per_run.groupby(keys, dropna=False)["ranks"].agg(
        lambda r: ",".join(map(str, sorted(set(r))))))
    shares = phase_shares(phases)[["run", "reconstruct"]].merge(per_run[["run", *keys]], on="run")
    stats = stats.join(shares.groupby(keys, dropna=False)["reconstruct"].agg(reconstruct_median="median",
                                                                              reconstruct_p95=p95))
    table = stats[stats["seeds"] >= 2].reset_index()
    return table.assign(beats_baseline=beats_baseline(table))


def beats_baseline(table: pd.DataFrame) -> pd.Series:
    """Per row of ``seed_matrix``: the ``SEED_METRICS`` in which its cut setting beats the 0-cut run
    of its setting by more than the seed spread, ``mean - baseline mean > std + baseline std``,
    comma-separated, or ``no``; ``baseline`` on the 0-cut row, empty where there is none."""
    verdicts = pd.Series("", index=table.index, dtype=object)
    for _, group in table.groupby(SEED_SETTING, dropna=False):
        base = group[group["cuts"] == 0]
        if base.empty:
            continue
        verdicts[base.index] = "baseline"
        for index, row in group[group["cuts"] != 0].iterrows():
            better = [m for m in SEED_METRICS if row[f"{m}_mean"] - base[f"{m}_mean"].iloc[0]
                      > row[f"{m}_std"] + base[f"{m}_std"].iloc[0]]
            verdicts[index] = ", ".join(better) or "no"
    return verdicts


def _train_runs(runs: pd.DataFrame, results: dict[str, dict]):
    """(run, metadata row) of train runs whose results.json holds final accuracies."""
    for _, meta in runs[runs["kind"] == "train"].iterrows():
        if "final" in results.get(meta["run"], {}):
            yield meta["run"], meta
