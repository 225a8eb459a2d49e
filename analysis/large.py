"""Large-QNN family: table and figure from ``hpcqnn bench --piece-qubits`` JSON reports.

    python -m analysis.large runs/large/q*-r*.json --out runs/large

Writes ``large_qnn.md`` (one row per width, mode and rank count) and ``large_qnn.png``/``.pdf``:
subexperiments, reconstruction time, query time and peak memory per rank against the width,
beside the addon measured here and the anchors of the qTPU artifact logs (DESIGN.md §7).
``jobs/large_qnn.sh`` runs the benchmarks and then this.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .figures import plt, save

#: qTPU artifact logs (10-qubit pieces, 1000 shots): the addon's subexperiments and its
#: reconstruction seconds per width, and qTPU's own classical cost bound.
ADDON_ANCHOR_SUBEXPERIMENTS = {20: 12, 30: 108, 40: 864, 50: 6480}
ADDON_ANCHOR_RECONSTRUCT_S = {20: 0.16, 30: 1.35, 40: 11.0, 50: 83.0}
QTPU_RECONSTRUCT_S = 3.5e-3
QTPU_SUBEXPERIMENTS = (48, 228)


def load_reports(paths: Iterable[Path]) -> pd.DataFrame:
    """One row per benchmark entry (hpcqnn settings and addon references) of every report."""
    rows = []
    for path in paths:
        for entry in json.loads(Path(path).read_text())["results"]:
            phases = entry["phase_seconds_mean"]
            rows.append({
                "qubits": entry["qubits"],
                "pieces": entry.get("pieces", 2),
                "ranks": entry["ranks"],
                "pipeline": entry["pipeline"],
                "subexperiments": entry["subexperiments"],
                "per_partition": entry.get("subexperiments_per_partition"),
                "addon_subexperiments": entry.get("addon_subexperiments"),
                "reconstruct_ms": 1e3 * phases["reconstruct"],
                "query_s": entry["query_seconds_mean"],
                "peak_mib": max(entry.get("peak_memory_mb_per_rank") or [float("nan")]),
            })
    table = pd.DataFrame(rows)
    return table.sort_values(["pipeline", "ranks", "qubits"]).reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| qubits | pieces | pipeline | ranks | subexperiments (per partition) | addon's "
        "| reconstruction ms | query s | peak MiB/rank |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in table.sort_values(["qubits", "pipeline", "ranks"]).itertuples():
        parts = (
            ""
            if r.per_partition is None or r.per_partition != r.per_partition
            else f" ({'+'.join(map(str, r.per_partition))})"
        )
        addon = "" if pd.isna(r.addon_subexperiments) else f"{r.addon_subexperiments:.0f}"
        peak = "" if pd.isna(r.peak_mib) else f"{r.peak_mib:.0f}"
        lines.append(
            f"| {r.qubits} | {r.pieces} | {r.pipeline} | {r.ranks} | {r.subexperiments}{parts} | {addon} | "
            f"{r.reconstruct_ms:.2f} | {r.query_s:.3f} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def figure(table: pd.DataFrame, out: Path) -> list[Path]:
    """Four panels against the width: subexperiments, reconstruction, query time, memory."""
    ours = table[table["pipeline"].str.startswith("hpcqnn")]
    addon = table[table["pipeline"] == "addon reference"]
    one_rank = ours[ours["ranks"] == ours["ranks"].min()]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))

    ax = axes[0]
    exact = one_rank[one_rank["pipeline"] == "hpcqnn exact"]
    ax.plot(exact["qubits"], exact["subexperiments"], "o-", label="hpcqnn")
    ax.plot(exact["qubits"], exact["addon_subexperiments"], "s--", label="addon (its count for the same circuit)")
    ax.plot(*zip(*ADDON_ANCHOR_SUBEXPERIMENTS.items()), "x:", color="grey", label="addon, qTPU logs")
    ax.axhspan(*QTPU_SUBEXPERIMENTS, color="green", alpha=0.12, label="qTPU (48-228)")
    ax.set(yscale="log", xlabel="qubits", ylabel="subexperiments per query", title="Subexperiments")

    ax = axes[1]
    for pipeline, rows in one_rank.groupby("pipeline"):
        ax.plot(rows["qubits"], rows["reconstruct_ms"] / 1e3, "o-", label=pipeline)
    if len(addon):
        ax.plot(addon["qubits"], addon["reconstruct_ms"] / 1e3, "s--", label="addon, measured here")
    ax.plot(*zip(*ADDON_ANCHOR_RECONSTRUCT_S.items()), "x:", color="grey", label="addon, qTPU logs")
    ax.axhline(QTPU_RECONSTRUCT_S, color="green", ls="--", lw=1, label="qTPU bound 3.5 ms")
    ax.set(yscale="log", xlabel="qubits", ylabel="seconds per query", title="Classical reconstruction")

    ax = axes[2]
    for (pipeline, ranks), rows in ours.groupby(["pipeline", "ranks"]):
        ax.plot(
            rows["qubits"], rows["query_s"], "o-" if "exact" in pipeline else "^--", label=f"{pipeline}, {ranks} ranks"
        )
    ax.set(yscale="log", xlabel="qubits", ylabel="seconds per query", title="End-to-end query")

    ax = axes[3]
    for ranks, rows in ours[ours["pipeline"] == "hpcqnn sampled"].groupby("ranks"):
        ax.plot(rows["qubits"], rows["peak_mib"], "o-", label=f"{ranks} ranks")
    ax.set(xlabel="qubits", ylabel="MiB (largest rank)", title="Peak memory per rank", ylim=(0, None))

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out, "large_qnn")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.large", description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="hpcqnn bench --json files")
    parser.add_argument("--out", type=Path, required=True, help="folder for large_qnn.md and the figure")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.reports if not p.is_file()]
    if missing:
        parser.error(f"no such report: {', '.join(missing)}")
    table = load_reports(args.reports)
    text = markdown(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "large_qnn.md").write_text(text)
    paths = figure(table, args.out)
    print(text)
    print("wrote", args.out / "large_qnn.md", *paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
