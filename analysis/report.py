"""``python -m analysis.report RUN_DIR... --out REPORT_DIR``: figures and ``summary.md`` of runs.

RUN_DIR may be a run directory or a folder holding run directories (a ``hpcqnn bench --out``
root, a sweep's ``runs/``). The report holds every table of ``analysis.metrics`` the runs
support, the replay model's validation on the measured rank counts and its projection to 1024
ranks, and the figures (PNG and PDF) the runs support. Unreadable files, and folders holding no run
directory, are listed, not fatal; a RUN_DIR that does not exist, or no run at all, is an error.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from hpcqnn.cli import float_at_least, int_at_least, parse_positive_int_list

from . import figures, metrics, replay
from .figures import label
from .load import RUN_DIR, RunLoadWarning, RunTables, load_runs, on_one_machine

SETTING = ["kind", "dataset", "qubits", "layers", "mode", "cuts", "cutting", "rows", "ranks", "schedule", "straggler"]


def markdown_table(table: pd.DataFrame) -> str:
    """``table`` as a GitHub markdown table (floats to 4 significant digits, NaN blank)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def compact(table: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, str]:
    """Drop the ``keys`` columns that hold one value in every row; a line naming those values."""
    constant = [k for k in keys if k in table and table[k].astype(str).nunique() == 1]
    note = ", ".join(f"{k} = {table[k].iloc[0]}" for k in constant if table[k].iloc[0] != "")
    return table.drop(columns=constant), (f"All rows: {note}.\n\n" if note else "")


def section(title: str, table: pd.DataFrame, text: str = "", keys: list[str] = SETTING) -> str:
    """A markdown section with ``table`` (empty string for an empty table)."""
    if table.empty:
        return ""
    shown, note = compact(table, keys)
    return f"## {title}\n\n{text}{note}{markdown_table(shown)}\n\n"


def ms(series: pd.Series) -> pd.Series:
    return 1e3 * series


def percent(series: pd.Series) -> pd.Series:
    return 100 * series


def gantt_choices(summary: pd.DataFrame, queries: pd.DataFrame) -> list[tuple[str, int, str]]:
    """(run, query, figure name) of the median steady query of one run per (schedule, straggler)
    among the runs with the most ranks."""
    timed = summary.dropna(subset=["wall"])
    if timed.empty:
        return []
    top = timed[timed["ranks"] == timed["ranks"].max()].drop_duplicates(["schedule", "straggler"])
    steady = metrics.steady(queries)
    choices = []
    for _, run in top.iterrows():
        mine = steady[steady["run"] == run["run"]]
        query = int(mine.loc[(mine["wall"] - run["wall"]).abs().idxmin(), "query"])
        choices.append((run["run"], query, f"gantt_{run['schedule']}" + ("_straggler" if run["straggler"] else "")))
    return choices


def no_scaling(summary: pd.DataFrame, no_figure: bool) -> str:
    """The strong-scaling section when no problem was timed at two rank counts: what each was timed at."""
    keys = [*metrics.PROBLEM, *metrics.EXECUTION, "ranks"]
    timed = summary.dropna(subset=["wall"]).drop_duplicates(keys)
    if timed.empty:
        return ""
    return (
        "## Strong scaling\n\nNothing to compare: strong scaling needs a problem (workload, cuts, rows per query) "
        "timed at two or more rank counts with the same schedule and straggler, and each was timed at one:\n\n"
        + "".join(f"- {label(row, keys)}\n" for _, row in timed.iterrows())
        + ("\nWeak scaling (rows per rank fixed) has nothing to compare either, so there is no scaling figure.\n"
           if no_figure else "")
        + "\n"
    )


def mean_std(table: pd.DataFrame, metric: str) -> pd.Series:
    """``metric_mean ± metric_std`` per row, 3 decimals (blank where the mean is NaN)."""
    return pd.Series([
        "" if pd.isna(m) else f"{m:.3f} ± {s:.3f}" for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_std"])
    ], index=table.index, dtype=object)


def seed_section(matrix: pd.DataFrame) -> str:
    """The seed-matrix section: accuracy, robustness and reconstruction share per setting and cut
    count, and per setting whether a cut setting beats 0 cuts by more than the seed spread."""
    if matrix.empty:
        return ""
    shown = matrix[[*metrics.SEED_SETTING, "cuts", "seeds", "ranks"]].assign(
        **{f"{m} (mean ± std)": mean_std(matrix, m) for m in metrics.SEED_METRICS},
        reconstruct_median_pct=percent(matrix["reconstruct_median"]),
        reconstruct_p95_pct=percent(matrix["reconstruct_p95"]), beats_baseline=matrix["beats_baseline"],
    )
    verdicts = []
    for _, group in matrix.groupby(metrics.SEED_SETTING, dropna=False, sort=True):
        name = label(group.iloc[0], metrics.SEED_SETTING)
        if not (group["cuts"] == 0).any():
            verdicts.append(f"- {name}: no 0-cut runs to compare with.\n")
            continue
        better = group[~group["beats_baseline"].isin(["baseline", "no"])]
        verdicts.append(f"- {name}: " + ("; ".join(
            f"cuts = {row['cuts']:.0f} beats cuts = 0 in {row['beats_baseline']}" for _, row in better.iterrows()
        ) or "no cut setting beats 0 cuts by more than the seed spread") + ".\n")
    return section(
        "Seed matrix: accuracy, robustness and reconstruction share vs cuts", shown,
        "Mean ± std (n - 1) over the seeds of each setting. gaussian, fgsm: test accuracy under Gaussian "
        "noise and FGSM, each the mean over its levels (sigmas, epsilons). reconstruct: accumulate + contract "
        "over the query's wall, median and p95 over every query of every seed. beats_baseline: the metrics in "
        "which the cut setting beats the 0-cut run of its setting by more than the seed spread, i.e. "
        "mean - baseline mean > std + baseline std.\n\n" + "".join(verdicts) + "\n",
        keys=[*metrics.SEED_SETTING, "seeds", "ranks"],
    )


def build(
    tables: RunTables, out: Path, cores: float, ranks: Iterable[int], work_scale: float
) -> tuple[Path, pd.DataFrame]:
    """Write the figures and ``summary.md`` into ``out``; the summary's path and the replay validation."""
    out.mkdir(parents=True, exist_ok=True)
    summary = metrics.run_summary(tables.runs, tables.phases)
    means = metrics.mean_breakdown(tables.phases).merge(summary[["run", *SETTING]], on="run")
    strong, weak = metrics.strong_scaling(summary), metrics.weak_scaling(summary)
    sensitivity = metrics.straggler_sensitivity(summary)
    accuracy = metrics.accuracy_table(tables.runs, tables.results)
    robustness = metrics.robustness_table(tables.runs, tables.results)
    matrix = metrics.seed_matrix(tables.runs, tables.results, tables.phases)
    validation = replay.validate(tables, cores)
    projected = replay.project(tables, cores, ranks, work_scale=work_scale)
    reference = replay.reference_run(summary)
    measured = validation if reference is None or validation.empty else validation[
        replay.same_workload(validation, reference) & (validation["rows"] == reference["rows"])
        & ~validation["straggler"].astype(bool)
    ]

    problem = [k for k in SETTING if k not in ("cuts", "ranks")]
    paths = figures.scaling(strong, weak, [*metrics.PROBLEM, *metrics.EXECUTION], out)
    paths += figures.breakdown(means, [k for k in SETTING if k != "cuts"], "cuts", out, "breakdown_cuts")
    paths += figures.breakdown(means, [k for k in SETTING if k != "ranks"], "ranks", out, "breakdown_ranks")
    paths += figures.reconstruction_share(
        summary, [k for k in problem if k not in ("cutting", "rows")] + ["ranks"], out
    )
    for run, query, name in gantt_choices(summary, metrics.query_table(tables.phases)):
        paths += figures.gantt(tables.intervals, run, query, out, name)
    paths += figures.stragglers(sensitivity, out)
    paths += figures.accuracy(accuracy, robustness, out)
    history = metrics.training_history(tables.runs, tables.results)
    paths += figures.training_curves(history, out)
    paths += figures.seed_matrix(matrix, out)
    paths += figures.projection(projected, measured, out)

    text = [(f"# hpcqnn analysis report\n\n{len(tables.runs)} runs; definitions in `analysis/metrics.py` "
             "(wall = critical path over all ranks; phase shares are rank 0's seconds over the wall; "
             "timings are medians over typical queries: steady ones (reusing a cached cut plan) of the run's most "
             "frequent shape, i.e. a training run's training batches).\n\n")]
    text.append(section("Runs", summary[["run", *SETTING, "device", "all_queries", "complete"]], keys=[]))
    timing = summary.dropna(subset=["wall"]).assign(
        wall_ms=lambda t: ms(t["wall"]), p95_ms=lambda t: ms(t["wall_p95"]),
        reconstruct_median_pct=lambda t: percent(t["reconstruct_median"]),
        reconstruct_p95_pct=lambda t: percent(t["reconstruct_p95"]),
    )
    text.append(
        section(
            "Query timing",
            timing[
                [
                    "run",
                    "queries",
                    "wall_ms",
                    "p95_ms",
                    "experiments",
                    "rows",
                    "imbalance",
                    "reconstruct_median_pct",
                    "reconstruct_p95_pct",
                ]
            ],
            keys=[],
        )
    )
    shares = means[["run"]].assign(
        wall_ms=ms(means["wall"]), **{f"{p} %": percent(means[f"share_{p}"]) for p in metrics.SHARES}
    )
    text.append(section("Phase breakdown (mean typical query, % of wall, rank 0)", shares, keys=[]))
    by_cuts = timing[timing["cutting"].astype(bool)].groupby(["kind", "cuts", "ranks", "schedule"], dropna=False)[
        ["reconstruct_median_pct", "reconstruct_p95_pct"]].median().reset_index()
    text.append(section(
        "Reconstruction share vs cuts", by_cuts,
        f"The paper measured {100 * metrics.PAPER_RECONSTRUCT_SHARE['median']:.0f} % (median) and "
        f"{100 * metrics.PAPER_RECONSTRUCT_SHARE['p95']:.0f} % (p95) at 3 cuts.\n\n", keys=["kind"],
    ))
    waits = metrics.rank_waits(tables.phases)
    waits = waits[["run", "rank"]].assign(
        wait_median_ms=ms(waits["wait_median"]), wait_mean_ms=ms(waits["wait_mean"]), wait_max_ms=ms(waits["wait_max"]),
        wait_share_pct=percent(waits["wait_share_median"]),
    )
    text.append(section("Barrier wait per rank", waits, keys=[]))
    delay = metrics.delays(tables.phases)
    delay = delay.assign(excess_ms=ms(delay["excess"])).drop(columns="excess")
    text.append(section("Injected vs real straggler delay", delay, keys=[]))
    text.append(section("Strong scaling", strong.assign(wall_ms=ms(strong["wall"])).drop(columns="wall"),
                        keys=[*metrics.PROBLEM, *metrics.EXECUTION]) or no_scaling(summary, weak.empty))
    text.append(
        section(
            "Weak scaling (rows per rank fixed)",
            weak.assign(wall_ms=ms(weak["wall"])).drop(columns="wall"),
            keys=[*metrics.PROBLEM, *metrics.EXECUTION],
        )
    )
    overhead = metrics.cut_overhead(summary)
    text.append(section("Cut overhead vs the uncut baseline", overhead.assign(wall_ms=ms(overhead["wall"]),
                        baseline_ms=ms(overhead["baseline_wall"])).drop(columns=["wall", "baseline_wall"]),
                        keys=[*metrics.WORKLOAD, "rows", "ranks", *metrics.EXECUTION]))
    text.append(section("Subexperiments vs cuts", metrics.subexperiments_vs_cuts(summary), keys=metrics.WORKLOAD))
    text.append(section("Straggler sensitivity (static vs dynamic)", sensitivity.assign(
        wall_clean_ms=ms(sensitivity["wall_clean"]), wall_straggler_ms=ms(sensitivity["wall_straggler"])).drop(
        columns=["wall_clean", "wall_straggler"]), keys=[*metrics.PROBLEM, "ranks"]))
    text.append(section("Accuracy", accuracy, "setting: the training settings in which a run differs from the runs of "
                        "its dataset.\n\n" if (accuracy["setting"] != "").any() else "",
                        keys=["dataset", "mode", "ranks", "epochs", "setting"]))
    if not robustness.empty:
        pivot = robustness.pivot_table(
            index=["run", "cuts", "cutting", "mode"], columns=["attack", "strength"], values="accuracy"
        )
        pivot.columns = [f"{a} {s:g}" for a, s in pivot.columns]
        text.append(section("Robustness (test accuracy)", pivot.reset_index(), keys=["mode"]))
    text.append(seed_section(matrix))
    if not history.empty:
        per_run = history.groupby(["run", "name", "qubits", "cuts", "ranks"], sort=False).agg(
            epochs=("epoch", "max"), epoch_s_median=("epoch_seconds", "median"),
            final_test_accuracy=("test_accuracy", "last"), best_test_accuracy=("test_accuracy", "max"),
        ).reset_index()
        text.append(section("Training (time per epoch, accuracy)", per_run, keys=[]))
    if not validation.empty:
        worst = validation["error"].abs().max()
        inside = validation.loc[validation["in_range"].astype(bool), "error"].abs().max()
        text.append(section(
            "Replay model: validation on this host", validation.assign(
                measured_ms=ms(validation["measured"]), predicted_ms=ms(validation["predicted"]),
                error_pct=percent(validation["error"])).drop(columns=["measured", "predicted", "error"]),
            "Each configuration predicted from the runs of its workload in the *other* configurations "
            "(leave one configuration out: costs from their straggler-free runs; from their walls, `capacity`, the "
            f"cores the {cores}-core host delivered when ranks outnumbered its cores, and `root_share`: 0 = the "
            "crowded cores shared evenly, 1 = rank 0 kept a core of its own; model in `analysis/replay/`); "
            "`spread` = max / min - 1 of the configuration's repeated runs (the noise floor); `in_range`: its "
            "simulator calls (`batch` experiments) lie within the calibrated tile sizes. "
            f"Largest |error|: {100 * inside:.1f} % in range, {100 * worst:.1f} % in all.\n\n", keys=[],
        ))
    if not projected.empty:
        pivot = projected.pivot_table(index="ranks", columns=["schedule", "reduce", "straggler"], values="speedup")
        pivot.columns = [f"{s} {r}" + (" straggler" if g else "") for s, r, g in pivot.columns]
        text.append(section(
            "Replay model: projected speed-up (one core per rank, HPC interconnect)", pivot.reset_index(),
            f"Query of {reference['run']} ({label(reference, [*replay.WORKLOAD_KEYS, 'rows'])}, "
            f"{reference['experiments'] * work_scale:.0f} experiments), "
            f"calibrated on every straggler-free run of its workload; {replay.CLUSTER}; speed-up over the modelled "
            "1-rank time; straggler: rank 1 slowed down as measured.\n\n", keys=[],
        ))
    text.append("## Figures\n\n" + "".join(f"![{p.stem}]({p.name})\n\n" for p in paths if p.suffix == ".png"))
    if tables.skipped:
        text.append("## Skipped files\n\n" + "".join(f"- {s}\n" for s in tables.skipped) + "\n")
    summary_path = out / "summary.md"
    summary_path.write_text("".join(text))
    return summary_path, validation


def validation_table(validation: pd.DataFrame) -> str:
    """The replay validation as printed: measured vs predicted wall per configuration."""
    shown = validation.assign(
        measured_ms=ms(validation["measured"]), predicted_ms=ms(validation["predicted"]),
        error_pct=percent(validation["error"]), spread_pct=percent(validation["spread"]),
    )
    keys = [
        "cuts",
        "ranks",
        "hosts",
        "schedule",
        "rows",
        "straggler",
        "runs",
        "spread_pct",
        "capacity",
        "root_share",
        "in_range",
        "measured_ms",
        "predicted_ms",
        "error_pct",
    ]
    keys = [k for k in keys if k in shown]
    table, note = compact(shown[keys], ["cuts", "hosts"])
    worst = validation["error"].abs().max()
    return (f"Replay model validation (each configuration predicted from the others' runs): {note.strip()}\n"
            f"{table.to_string(index=False, float_format=lambda v: f'{v:.3g}')}\nlargest |error| {100 * worst:.1f} %")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, or folders holding them")
    parser.add_argument("--out", type=Path, required=True, help="report directory (figures and summary.md)")
    parser.add_argument("--cores", type=int_at_least(1), default=len(os.sched_getaffinity(0)),
                        help="cores per host where the runs were measured (default: this host's)")
    parser.add_argument("--one-machine", action="store_true",
                        help="the runs' hosts shared one machine's --cores cores (e.g. the network-namespace nodes "
                             "of slurm/local_cluster.sh): the replay shares them among all of a run's ranks")
    parser.add_argument("--projection-ranks", type=parse_positive_int_list, default=list(replay.PROJECTION_RANKS),
                        help="rank counts of the replay projection, e.g. 1,8,64 (default 1,2,4,...,1024)")
    parser.add_argument("--work-scale", type=float_at_least(0, strict=True), default=1.0,
                        help="multiply the projected query's experiments (default 1)")
    return parser


def fail(message: object) -> int:
    """Print ``message`` as the command's one-line error; the exit status of a usage error."""
    print(f"analysis.report: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        return fail(f"--out {args.out} is a file: give a directory for the figures and summary.md")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunLoadWarning)  # listed below and in summary.md
            tables = load_runs(args.runs)
    except FileNotFoundError as exc:
        return fail(exc)
    if args.one_machine:
        tables = on_one_machine(tables)
    if tables.runs.empty:
        why = "".join(f"; {message}" for message in tables.skipped)  # e.g. a run whose only log is damaged
        return fail(f"no run found in {', '.join(map(str, args.runs))} ({RUN_DIR}){why}")
    for message in tables.skipped:
        print(f"skipped: {message}")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        path, validation = build(tables, args.out, args.cores, args.projection_ranks, args.work_scale)
    except OSError as exc:
        return fail(f"cannot write the report in --out {args.out}: {exc}")
    if not validation.empty:
        print(validation_table(validation))
    print(f"wrote {path} and {len(list(args.out.glob('*.png')))} figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
