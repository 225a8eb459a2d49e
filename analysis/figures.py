"""Report figures (matplotlib, Agg backend), each written as NAME.png and NAME.pdf.

Every function takes tables of ``analysis.metrics`` / ``analysis.replay`` and an output folder
and returns the paths it wrote: none when the tables hold nothing to draw (e.g. scaling needs a
problem measured at two rank counts).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from .metrics import BREAKDOWN, PAPER_RECONSTRUCT_SHARE, SEED_METRICS, SEED_SETTING

matplotlib.use("Agg")  # files only; after importing pyplot, use() switches its backend

COLORS = {
    "partition": "#8c564b", "generate": "#e377c2", "broadcast": "#17becf", "execute": "#1f77b4",
    "straggle": "#d62728", "accumulate": "#ff7f0e", "contract": "#ffbb78", "wait": "#c7c7c7",
    "reduce": "#2ca02c", "other": "#7f7f7f",
}


def save(fig: plt.Figure, out: Path, name: str) -> list[Path]:
    """Write ``fig`` as PNG and PDF into ``out`` and close it."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def count(value: float, noun: str) -> str:
    """``value`` ``noun``s, e.g. ``1 cut``, ``3 cuts``."""
    return f"{value:.0f} {noun}" + ("" if value == 1 else "s")


def label(row: pd.Series, columns: list[str]) -> str:
    """A short legend label from a row's workload/execution columns."""
    parts = {
        "kind": lambda v: str(v), "dataset": lambda v: "" if v in ("bench", None) else str(v),
        "qubits": lambda v: f"{v:.0f}q", "cuts": lambda v: count(v, "cut"), "rows": lambda v: count(v, "row"),
        "mode": str, "ranks": lambda v: count(v, "rank"), "schedule": str, "epochs": lambda v: count(v, "epoch"),
        "setting": str, "cutting": lambda v: "" if v else "uncut", "straggler": lambda v: "straggler" if v else "",
    }
    return " ".join(t for c in columns if c in parts and pd.notna(row.get(c)) and (t := parts[c](row[c])))


def groups(table: pd.DataFrame, keys: list[str], x: str) -> Iterator[tuple[str, pd.DataFrame]]:
    """(label, rows sorted by ``x``) of every group of ``keys`` with two or more ``x`` values."""
    for _, group in table.groupby(keys, dropna=False, sort=True):
        if group[x].nunique() > 1:
            yield label(group.iloc[0], keys), group.sort_values(x)


def scaling(strong: pd.DataFrame, weak: pd.DataFrame, keys: list[str], out: Path) -> list[Path]:
    """Speed-up and parallel efficiency vs ranks: strong scaling solid, weak scaling dashed."""
    if strong.empty and weak.empty:
        return []
    fig, (ax_s, ax_e) = plt.subplots(1, 2, figsize=(10, 4))
    for table, y, style, kind in ((strong, "speedup", "-o", "strong"), (weak, "scaled_speedup", "--s", "weak")):
        for name, group in groups(table, [k for k in keys if k != "rows" or kind == "strong"], "ranks"):
            line = ax_s.plot(group["ranks"], group[y], style, label=f"{kind}: {name}")[0]
            ax_e.plot(group["ranks"], group["efficiency"], style, color=line.get_color())
    top = max(strong["ranks"].max() if len(strong) else 1, weak["ranks"].max() if len(weak) else 1)
    ideal = np.unique(np.r_[2.0 ** np.arange(int(np.log2(top)) + 1), top, np.linspace(1, top, 64)])
    ax_s.plot(ideal, ideal, ":", color="gray", label="ideal")  # a curve on the log-2 rank axis: every point drawn
    ax_e.axhline(1.0, ls=":", color="gray")
    for ax, name in ((ax_s, "speed-up"), (ax_e, "parallel efficiency")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("MPI ranks")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    efficiencies = pd.concat([strong["efficiency"], weak["efficiency"]]).dropna()
    ax_e.set_ylim(
        0, max(1.2, 1.1 * efficiencies.max()) if len(efficiencies) else 1.2
    )  # superlinear points stay in view
    ax_s.legend(fontsize=7)
    fig.suptitle("Scaling of one estimator query (critical path, median typical query)")
    return save(fig, out, "scaling")


def breakdown(means: pd.DataFrame, keys: list[str], x: str, out: Path, name: str) -> list[Path]:
    """Stacked phase shares of the mean typical query vs ``x``, one panel per group of ``keys``."""
    panels = list(groups(means, keys, x))
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    columns = [f"share_{p}" for p in BREAKDOWN] + ["wall"]
    for ax, (title, runs) in zip(axes[0], panels):
        group = runs.groupby(x)[columns].mean().reset_index()  # repeated runs: their mean
        positions = np.arange(len(group))
        bottom = np.zeros(len(group))
        for phase in BREAKDOWN:
            values = group[f"share_{phase}"].to_numpy()
            ax.bar(positions, values, bottom=bottom, color=COLORS[phase], label=phase)
            bottom += values
        for pos, wall in zip(positions, group["wall"]):
            ax.text(pos, 1.01, f"{1e3 * wall:.0f} ms", ha="center", fontsize=7)
        ax.set_xticks(positions, [f"{v:g}" for v in group[x]])
        ax.set_xlabel(x)
        ax.set_ylim(0, 1.1)
        ax.set_title(title, fontsize=8)
    axes[0][0].set_ylabel("share of query wall time (rank 0)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(f"Phase breakdown vs {x} (mean typical query over runs; labels: wall time)")
    return save(fig, out, name)


def reconstruction_share(summary: pd.DataFrame, keys: list[str], out: Path) -> list[Path]:
    """Median (marker) and p95 (bar top) reconstruction share vs cuts, beside the paper's 53 %."""
    cut = summary.dropna(subset=["reconstruct_median", "cuts"])
    cut = cut[cut["cutting"].astype(bool)]
    if cut.empty:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for _, runs in cut.groupby(keys, dropna=False):
        share_range(ax, runs.groupby("cuts")[["reconstruct_median", "reconstruct_p95"]].median().reset_index(),
                    label(runs.iloc[0], keys))
    share_axes(ax, cut["cuts"])
    ax.set_title("Reconstruction share: median (marker) to p95 (bar)")
    return save(fig, out, "reconstruction_share")


def share_range(ax: plt.Axes, table: pd.DataFrame, name: str) -> None:
    """A line of ``table``'s ``reconstruct_median`` (marker) to ``reconstruct_p95`` (bar top) in % vs cuts."""
    table = table.sort_values("cuts")
    median, p95 = 100 * table["reconstruct_median"], 100 * table["reconstruct_p95"]
    ax.errorbar(table["cuts"], median, yerr=[np.zeros(len(table)), p95 - median], fmt="-o", capsize=3, label=name)


def share_axes(ax: plt.Axes, cuts: pd.Series) -> None:
    """The paper's reconstruction shares, a log axis of % vs ``cuts``, grid and legend."""
    for (key, value), style in zip(PAPER_RECONSTRUCT_SHARE.items(), ("--", ":")):
        ax.axhline(100 * value, ls=style, color="crimson", label=f"paper, 3 cuts ({key}): {100 * value:.0f} %")
    ax.set_yscale("log")
    ax.set_xlabel("cuts")
    ax.set_ylabel("reconstruction share of query time (%)")
    ax.set_xticks(sorted(cuts.unique()))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def seed_matrix(table: pd.DataFrame, out: Path) -> list[Path]:
    """A seed matrix (``analysis.metrics.seed_matrix``): per setting, clean, Gaussian-noise and FGSM
    test accuracy (mean over levels), mean ± std over seeds vs cuts; last panel, the reconstruction
    share (median to p95 over the queries of every seed) vs cuts."""
    if table.empty:
        return []
    settings = [group for _, group in table.groupby(SEED_SETTING, dropna=False, sort=True)]
    fig, axes = plt.subplots(1, len(settings) + 1, figsize=(4.5 * (len(settings) + 1), 4), squeeze=False)
    names = ("clean", "Gaussian noise (mean over sigmas)", "FGSM (mean over epsilons)")
    for ax, group in zip(axes[0], settings):
        group = group.sort_values("cuts")
        for metric, name, shift in zip(SEED_METRICS, names, (-0.06, 0.0, 0.06)):  # side by side: bars stay apart
            ax.errorbar(group["cuts"] + shift, group[f"{metric}_mean"], yerr=group[f"{metric}_std"], fmt="-o",
                        capsize=3, label=name)
        ax.set_xticks(group["cuts"])
        ax.set_xlabel("cuts")
        ax.grid(alpha=0.3)
        seeds = "-".join(map(str, dict.fromkeys((group["seeds"].min(), group["seeds"].max()))))
        ax.set_title(f"{label(group.iloc[0], SEED_SETTING)}, {seeds} seeds", fontsize=8)
    axes[0][0].set_ylabel("test accuracy (mean ± std over seeds)")
    axes[0][0].legend(fontsize=7)
    for group in settings:
        share_range(axes[0][-1], group, label(group.iloc[0], SEED_SETTING))
    share_axes(axes[0][-1], table["cuts"])
    axes[0][-1].set_title("Reconstruction share: median (marker) to p95 (bar)", fontsize=8)
    fig.suptitle("Seed matrix vs cuts (a cut setting beats 0 cuts where its bar lies wholly above the 0-cut bar)",
                 fontsize=10)
    return save(fig, out, "seed_matrix")


def gantt(intervals: pd.DataFrame, run: str, query: int, out: Path, name: str) -> list[Path]:
    """Per-rank timeline of one query: execution, local reconstruction, final contraction,
    straggler delay, waiting and reduce (milliseconds from the query's start)."""
    rows = intervals[(intervals["run"] == run) & (intervals["query"] == query)]
    if rows.empty:
        return []
    start = rows["t_start"].min()
    ranks = sorted(rows["rank"].unique())
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(ranks) + 1.5))
    handles = []
    for kind, color in COLORS.items():
        chosen = rows[rows["phase"] == kind]
        if chosen.empty:
            continue
        for rank, mine in chosen.groupby("rank"):
            spans = list(zip(1e3 * (mine["t_start"] - start), 1e3 * mine["seconds"]))
            ax.broken_barh(spans, (rank - 0.4, 0.8), facecolors=color, edgecolor="white", linewidth=0.3)
        handles.append(Patch(color=color, label=kind))
    ax.set_yticks(ranks, [f"rank {r}" for r in ranks])
    ax.invert_yaxis()
    ax.set_xlabel("ms since the query started (blank: untimed, e.g. rank 0 handing out tiles)")
    ax.legend(handles=handles, fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    ax.set_title(f"{run}, query {query}", fontsize=9)
    return save(fig, out, name)


def stragglers(sensitivity: pd.DataFrame, out: Path) -> list[Path]:
    """Wall time without and with the injected straggler, per schedule."""
    table = sensitivity.dropna(subset=["wall_clean"])
    if table.empty:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    names = [label(r, ["cuts", "rows", "ranks", "schedule"]) for _, r in table.iterrows()]
    positions = np.arange(len(table))
    ax.bar(positions - 0.2, 1e3 * table["wall_clean"], 0.4, label="no straggler", color="#1f77b4")
    ax.bar(positions + 0.2, 1e3 * table["wall_straggler"], 0.4, label="straggler", color="#d62728")
    for pos, (_, row) in zip(positions, table.iterrows()):
        ax.text(
            pos + 0.2, 1e3 * row["wall_straggler"], f"x{row['sensitivity']:.2f}", ha="center", va="bottom", fontsize=8
        )
    ax.set_xticks(positions, names, fontsize=8)
    ax.set_ylabel("median query wall time (ms)")
    ax.legend(fontsize=8)
    slow = table.iloc[0]
    ax.set_title(f"Straggler: rank(s) {slow['straggler_ranks']} x{slow['straggler_slowdown']:g} slower", fontsize=9)
    return save(fig, out, "stragglers")


def accuracy(accuracy_table: pd.DataFrame, robustness: pd.DataFrame, out: Path) -> list[Path]:
    """Test accuracy vs Gaussian sigma and FGSM epsilon (strength 0: clean), one line per training
    setting (the mean of its runs); an uncut baseline in the colour of its cut setting."""
    if robustness.empty:
        return []
    keys = ["dataset", "cuts", "mode", "epochs", "setting"]
    table = robustness.merge(accuracy_table[["run", "dataset", "epochs", "setting", "test_accuracy"]], on="run")
    shown = ["dataset", "cuts", "mode", *(c for c in ("epochs", "setting") if table[c].nunique() > 1)]
    colors = {key: f"C{k}" for k, key in enumerate(table.groupby(keys).groups)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, attack, xlabel in zip(axes, ("gaussian", "fgsm"), ("Gaussian noise sigma", "FGSM epsilon")):
        for (*key, cutting), group in table[table["attack"] == attack].groupby([*keys, "cutting"]):
            points = group.groupby("strength")["accuracy"].mean()
            points = pd.concat([pd.Series({0.0: group.drop_duplicates("run")["test_accuracy"].mean()}), points])
            ax.plot(points.index, points.to_numpy(), "-o" if cutting else ":x", color=colors[tuple(key)],
                    ms=5 if cutting else 9, zorder=2 if cutting else 3,
                    label=label(group.iloc[0], shown) + ("" if cutting else ", uncut baseline"))
        ax.set_xlabel(xlabel + " (standardized features)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    entries = {name: line for ax in axes for line, name in zip(*ax.get_legend_handles_labels())}
    axes[1].legend(entries.values(), entries.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Robustness per training setting (mean over its runs)")
    return save(fig, out, "accuracy_robustness")


def training_curves(history: pd.DataFrame, out: Path) -> list[Path]:
    """Loss and test accuracy per epoch, one line per train run (``metrics.training_history``)."""
    if history.empty:
        return []
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for _, group in history.groupby("run", sort=False):
        first = group.iloc[0]
        name = f"{first['name']} ({first['qubits']:.0f} qubits, {first['ranks']:.0f} ranks)"
        line = ax_loss.plot(group["epoch"], group["loss"], "-o", ms=4, label=name)[0]
        ax_acc.plot(group["epoch"], group["test_accuracy"], "-o", ms=4, color=line.get_color(), label=name)
        ax_acc.plot(group["epoch"], group["train_accuracy"], ":", color=line.get_color())
    ax_loss.set_ylabel("training loss (binary cross-entropy)")
    ax_acc.set_ylabel("accuracy (test solid, train dotted)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    fig.suptitle("Training curves")
    return save(fig, out, "training_curves")


def projection(projected: pd.DataFrame, measured: pd.DataFrame, out: Path) -> list[Path]:
    """Modelled speed-up at 1..1024 ranks beside the measured and modelled workstation points.

    ``measured``: ranks, measured and predicted wall of the reference workload's clean runs."""
    if projected.empty:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, straggler in zip(axes, (False, True)):
        for (schedule, reduce), group in projected[projected["straggler"] == straggler].groupby(["schedule", "reduce"]):
            ax.plot(group["ranks"], group["speedup"], "-" if reduce == "tree" else ":", marker=".",
                    label=f"model, cluster: {schedule}, {reduce} reduce")
        ranks = projected["ranks"]
        ax.plot([1, ranks.max()], [1, ranks.max()], color="gray", lw=0.8, label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("MPI ranks")
        ax.grid(alpha=0.3, which="both")
        ax.set_title("rank 1 slowed down" if straggler else "no straggler", fontsize=9)
    serial = measured[measured["ranks"] == 1][["measured", "predicted"]].median()  # one rank runs statically
    for (schedule, group), marker in zip(measured.groupby("schedule"), "^vs"):
        if serial.notna().all():
            group = pd.concat([measured[measured["ranks"] == 1], group[group["ranks"] > 1]])
            group = group.groupby("ranks")[["measured", "predicted"]].median()
            axes[0].plot(group.index, serial["measured"] / group["measured"], "k" + marker, ms=8,
                         label=f"measured here: {schedule}")
            axes[0].plot(
                group.index,
                serial["predicted"] / group["predicted"],
                marker,
                mfc="none",
                mec="crimson",
                ms=11,
                label=f"model of this host: {schedule}",
            )
    axes[0].set_ylabel("speed-up over 1 rank")
    for ax in axes:
        ax.legend(fontsize=6)
    fig.suptitle("Replay model: projected speed-up of one query")
    return save(fig, out, "projection")
