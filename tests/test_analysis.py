"""analysis/: tables, metrics, figures, report and the replay model.

Real runs are made here once (``hpcqnn bench`` and ``hpcqnn train`` under mpiexec, a 1-rank
bench in this process); synthetic run directories with known timings are written with
``hpcqnn.run.timelog.HDF5TimingLog``; damaged and killed runs load with the damage reported.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import figures, metrics, replay, report, sweep
from analysis.load import RunLoadWarning, find_run_dirs, load_runs
from analysis.replay import calibration, simulation
from bounded import clean_environment, mpi_command, run_bounded
from hpcqnn import cli
from hpcqnn.options import POLL
from hpcqnn.run.timelog import HDF5TimingLog, rank_file, read_timing
from hpcqnn.run.timing import PHASES, PhaseRow

ROOT = Path(__file__).resolve().parents[1]
BENCH = ("bench", "--qubits", "6", "--rows", "8", "--queries", "4", "--modes", "exact", "--reference-queries", "0")
FIGURES = (
    "scaling",
    "breakdown_cuts",
    "breakdown_ranks",
    "reconstruction_share",
    "gantt_static",
    "gantt_static_straggler",
    "stragglers",
    "accuracy_robustness",
    "training_curves",
    "projection",
)


def mpirun(ranks: int, *args: object) -> None:
    """``hpcqnn ARGS`` under ``mpiexec -n ranks``; fail the test on error or after 180 s."""
    code, output = run_bounded(
        mpi_command(ranks, "-m", "hpcqnn.cli", *args), 180, clean_environment(), merge_output=True
    )
    assert code == 0, output


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """Six real runs: bench at 2 ranks (cuts 0..2) and 1 rank (cuts 2), with a straggler, and training."""
    root = tmp_path_factory.mktemp("runs")
    mpirun(2, *BENCH, "--cuts", "0..2", "--out", root / "bench-r2")
    straggler = ("--straggler-ranks", "1", "--straggler-slowdown", "3")
    mpirun(2, *BENCH, "--cuts", "2", *straggler, "--out", root / "bench-r2-straggler")
    assert cli.main([*BENCH, "--cuts", "2", "--out", str(root / "bench-r1")]) == 0  # one rank, in this process
    mpirun(2, "train", ROOT / "jobs" / "iris_quick.toml", "--out", root / "train",
           "--set", "training.epochs=1", "--set", "data.max_train=24", "--set", "evaluation.gaussian_draws=1")
    return root


# -- real runs -----------------------------------------------------------------------------------


@pytest.mark.mpi
def test_tables_hold_every_timing_row(real):
    tables = load_runs([real])
    runs = tables.runs.set_index("run")
    assert sorted(runs.index) == ["bench-r1/cuts2-exact", "bench-r2-straggler/cuts2-exact", "bench-r2/cuts0-exact",
                                  "bench-r2/cuts1-exact", "bench-r2/cuts2-exact", "train"]
    assert runs["ranks"].to_dict() == {r: 1 if r.startswith("bench-r1") else 2 for r in runs.index}
    assert (runs["ranks_read"] == runs["ranks"]).all() and runs["complete"].all() and not tables.skipped
    assert runs.loc["bench-r2/cuts1-exact", ["kind", "cuts", "mode", "schedule"]].tolist() == [
        "bench",
        1,
        "exact",
        "static",
    ]
    assert runs.loc["train", ["kind", "name", "cuts", "qubits"]].tolist() == ["train", "iris_quick", 1, 4]
    # the widest simulated circuit, from the plan results.json records: a 2-qubit half + 2 control qubits
    assert runs.loc["train", "width"] == 4 and runs.loc[runs["kind"] == "bench", "width"].isna().all()
    assert runs["straggler"].to_dict() == {r: "straggler" in r for r in runs.index}

    for run, meta in runs.iterrows():
        for rank in range(meta["ranks"]):
            raw, _ = read_timing(rank_file(meta["path"], rank))
            mine = tables.intervals[(tables.intervals["run"] == run) & (tables.intervals["rank"] == rank)]
            assert len(mine) == len(raw) > 0
            np.testing.assert_array_equal(mine["t_end"] - mine["t_start"], mine["seconds"])
    assert not tables.phases.duplicated(["run", "rank", "query", "phase"]).any()
    bench = tables.phases[tables.phases["kind"] == "bench"]
    for (run, rank), rows in bench.groupby(["run", "rank"]):
        assert sorted(rows["query"].unique()) == [0, 1, 2, 3]  # --queries 4
        for query, phases in rows.groupby("query"):
            expected = {"broadcast", "execute", "accumulate", "wait", "reduce"} | ({"contract"} if rank == 0 else set())
            if rank == 0 and query == 0:
                expected |= {"partition", "generate"}
            assert expected <= set(phases["phase"]), (run, rank, query)
    straggle = tables.phases[tables.phases["phase"] == "straggle"]
    assert set(straggle["run"]) == {"bench-r2-straggler/cuts2-exact"} and set(straggle["rank"]) == {1}


@pytest.mark.mpi
def test_training_history_per_epoch(real):
    tables = load_runs([real])
    history = metrics.training_history(tables.runs, tables.results)
    result = tables.results["train"]
    assert history["run"].tolist() == ["train"] * len(result["history"]) == ["train"]
    assert history["epoch_seconds"].iloc[0] == pytest.approx(result["history"][0]["seconds"])
    assert history["test_accuracy"].iloc[-1] == result["history"][-1]["test_accuracy"]


@pytest.mark.mpi
def test_shares_from_raw_rows_match_results_json(real):
    tables = load_runs([real])
    shares = metrics.share_summary(tables.phases).set_index(["run", "phase"])
    recorded = tables.results["train"]["query_phases"]
    for phase in (*PHASES, "reconstruct"):
        for stat in ("median", "p95"):
            expected = recorded[f"phase_share_{stat}"][phase]
            assert shares.loc[("train", phase), stat] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    walls = metrics.query_table(tables.phases).groupby("run")["wall"]
    assert walls.median()["train"] == pytest.approx(recorded["query_seconds_median"], rel=1e-9)
    assert metrics.reconstruction_share(tables.phases).set_index("run").loc["train", "median"] == pytest.approx(
        recorded["phase_share_median"]["reconstruct"], rel=1e-9)

    # bench: the same rank-0 phase seconds; its share divides by the Python-side wall of each run() call
    breakdown = metrics.phase_breakdown(tables.phases).groupby("run").mean(numeric_only=True)
    for run in ("bench-r2/cuts1-exact", "bench-r2/cuts2-exact", "bench-r1/cuts2-exact"):
        result = tables.results[run]
        for phase in PHASES:
            assert breakdown.loc[run, phase] == pytest.approx(result["phase_seconds_mean"][phase], rel=1e-9, abs=1e-15)
        assert breakdown.loc[run, "wall"] <= result["query_seconds_mean"]
        ours = breakdown.loc[run, "reconstruct"] / breakdown.loc[run, "wall"]
        theirs = ours * breakdown.loc[run, "wall"] / result["query_seconds_mean"]
        assert theirs == pytest.approx(result["reconstruct_share"], rel=1e-9)


@pytest.mark.mpi
def test_report_writes_every_figure_and_table(real, tmp_path):
    out = tmp_path / "report"
    assert report.main([str(real), "--out", str(out), "--projection-ranks", "1,2,8,64"]) == 0
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    for title in (
        "## Query timing",
        "## Reconstruction share vs cuts",
        "## Barrier wait per rank",
        "## Injected vs real straggler delay",
        "## Strong scaling",
        "## Cut overhead",
        "## Subexperiments vs cuts",
        "## Straggler sensitivity",
        "## Accuracy",
        "## Robustness",
        "## Replay model: validation",
        "## Replay model: projected speed-up",
    ):
        assert title in summary, title
    assert "![projection](projection.png)" in summary and "## Skipped files" not in summary


@pytest.mark.mpi
def test_damaged_and_missing_files_are_skipped_by_name(real, tmp_path):
    runs = {}
    for damage in ("truncated", "garbage", "missing"):
        runs[damage] = tmp_path / damage
        shutil.copytree(real / "bench-r2" / "cuts2-exact", runs[damage])
    victim = Path("timing") / "rank-00001.h5"
    data = (runs["truncated"] / victim).read_bytes()
    (runs["truncated"] / victim).write_bytes(data[: len(data) // 2])
    (runs["garbage"] / victim).write_bytes(os.urandom(4096))
    (runs["missing"] / victim).unlink()
    (runs["missing"] / "results.json").write_text("{not json")

    with pytest.warns(RunLoadWarning) as caught:
        tables = load_runs(runs.values())
    assert [str(w.message) for w in caught] == list(tables.skipped) and len(tables.skipped) == 4
    for damage, path in runs.items():
        assert any(str(path / victim) in s for s in tables.skipped), damage
    assert any("truncated" in s for s in tables.skipped) and any("results.json" in s for s in tables.skipped)
    assert (tables.runs["ranks_read"] == 1).all() and (tables.runs["ranks"] == 2).all()
    assert set(tables.intervals["rank"]) == {0} and tables.intervals.groupby("run")["query"].nunique().eq(4).all()


def test_killed_run_loads_its_finished_queries(tmp_path):
    """A process killed without closing its SWMR log (os._exit) leaves readable rows."""
    script = (
        "import os, sys\n"
        "from hpcqnn.run.timelog import HDF5TimingLog\n"
        "from hpcqnn.run.timing import PhaseRow\n"
        "log = HDF5TimingLog(sys.argv[1], {'rank': 0, 'size': 1, 'schedule': 'static', 'threads': 1})\n"
        "log.write([PhaseRow(0, 'execute', 1.0, 2.0, n_experiments=4)])\n"
        "log.write([PhaseRow(1, 'execute', 3.0, 3.5, n_experiments=4)])\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(rank_file(tmp_path, 0))], check=True, timeout=60)
    tables = load_runs([tmp_path])
    assert not tables.skipped and tables.runs["complete"].tolist() == [False]
    assert metrics.query_table(tables.phases)["wall"].tolist() == [1.0, 0.5]


# -- synthetic runs with known timings -------------------------------------------------------------


def write_synthetic_run(path: Path, ranks: int, rows: int) -> None:
    """Three queries (the first builds the plan): every rank broadcasts 10 ms, executes
    ``base x (1 + 0.1 rank)`` with ``base = 50 ms x rows / ranks``, waits for the slowest, reduces
    10 ms; rank 0 then contracts 20 ms. Wall of a steady query: 40 ms + base x (1 + 0.1 (ranks - 1))."""
    base = 0.05 * rows / ranks
    config = json.dumps({"qubits": 6, "cuts": 3, "mode": "exact", "rows": rows, "layers": 3, "straggler": None})
    slowest = base * (1 + 0.1 * (ranks - 1))
    for rank in range(ranks):
        log = HDF5TimingLog(
            rank_file(path, rank),
            {
                "rank": rank,
                "size": ranks,
                "hostname": "synthetic",
                "device": "CPU",
                "schedule": "static",
                "threads": 1,
                "config": config,
            },
        )
        t = 1000.0
        for query in range(3):
            out = []
            if query == 0 and rank == 0:
                out += [PhaseRow(query, "partition", t, t + 0.05), PhaseRow(query, "generate", t + 0.05, t + 0.06)]
            t += 0.06 if query == 0 else 0.0
            busy = base * (1 + 0.1 * rank)
            out += [
                PhaseRow(query, "broadcast", t, t + 0.01, n_rows=rows, bytes=8 * rows),
                PhaseRow(query, "execute", t + 0.01, t + 0.01 + busy, n_experiments=100 * rows // ranks),
                PhaseRow(query, "wait", t + 0.01 + busy, t + 0.01 + slowest),
                PhaseRow(query, "reduce", t + 0.01 + slowest, t + 0.02 + slowest, bytes=800),
            ]
            if rank == 0:
                out.append(PhaseRow(query, "contract", t + 0.02 + slowest, t + 0.04 + slowest, n_rows=rows))
            log.write(out)
            t += 1.0
        log.close()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    for ranks, rows in ((1, 16), (2, 16), (4, 16), (1, 4), (2, 8)):
        write_synthetic_run(root / f"r{ranks}-rows{rows}", ranks, rows)
    tables = load_runs([root])
    return tables, metrics.run_summary(tables.runs, tables.phases).set_index("run")


def test_synthetic_walls_breakdown_and_shares(synthetic):
    tables, summary = synthetic
    wall = {"r1-rows16": 0.84, "r2-rows16": 0.48, "r4-rows16": 0.30, "r1-rows4": 0.24, "r2-rows8": 0.26}
    assert summary["wall"].to_dict() == pytest.approx(wall)
    breakdown = metrics.phase_breakdown(tables.phases).set_index(["run", "query"])
    steady = breakdown.loc[("r4-rows16", 1)]
    expected = {"broadcast": 0.01, "execute": 0.2, "wait": 0.06, "reduce": 0.01, "contract": 0.02, "reconstruct": 0.02,
                "other": 0.0, "wall": 0.3}
    assert {k: steady[k] for k in expected} == pytest.approx(expected, abs=1e-9)
    assert (
        breakdown.loc[("r4-rows16", 0), "partition"] == pytest.approx(0.05) and breakdown.loc[("r4-rows16", 0), "setup"]
    )
    # the setup query is longer; median and p95 over [a, b, b] with a < b are both b
    shares = metrics.reconstruction_share(tables.phases).set_index("run")
    for run, w in wall.items():
        assert shares.loc[run, ["median", "p95"]].tolist() == pytest.approx([0.02 / w, 0.02 / w])
    means = metrics.mean_breakdown(tables.phases).set_index("run")
    assert means.loc["r4-rows16", [f"share_{p}" for p in metrics.BREAKDOWN]].sum() == pytest.approx(1.0)
    assert means.loc["r2-rows16", "share_execute"] == pytest.approx(0.4 / 0.48)
    waits = metrics.rank_waits(tables.phases).set_index(["run", "rank"])["wait_median"]
    assert [waits[("r4-rows16", r)] for r in range(4)] == pytest.approx([0.06, 0.04, 0.02, 0.0], abs=1e-9)
    imbalance = metrics.load_imbalance(tables.phases).set_index(["run", "query"])["imbalance"]
    assert imbalance[("r4-rows16", 2)] == pytest.approx(0.26 / 0.23)


def test_synthetic_strong_and_weak_scaling(synthetic):
    _, summary = synthetic
    strong = metrics.strong_scaling(summary.reset_index())
    strong = strong[strong["rows"] == 16].set_index("ranks")
    assert (strong["base_ranks"] == 1).all()
    assert strong["speedup"].to_dict() == pytest.approx({1: 1.0, 2: 0.84 / 0.48, 4: 0.84 / 0.30})
    assert strong["efficiency"].to_dict() == pytest.approx({1: 1.0, 2: 0.875, 4: 0.7})
    weak = metrics.weak_scaling(summary.reset_index()).set_index("ranks")
    assert weak["rows"].to_dict() == {1: 4, 2: 8, 4: 16}
    base = 400 / 0.24  # experiments per second at 1 rank
    assert weak["scaled_speedup"].to_dict() == pytest.approx({1: 1.0, 2: 800 / 0.26 / base, 4: 1600 / 0.30 / base})
    assert weak["efficiency"].to_dict() == pytest.approx({1: 1.0, 2: 0.24 / 0.26, 4: 0.24 / 0.30})


def test_report_says_when_no_scaling_can_be_compared(tmp_path):
    """1 rank at 4 rows, 2 ranks at 16 rows: neither the same rows nor the same rows per rank."""
    write_synthetic_run(tmp_path / "runs" / "r1", 1, 4)
    write_synthetic_run(tmp_path / "runs" / "r2", 2, 16)
    tables = load_runs([tmp_path / "runs"])
    summary = metrics.run_summary(tables.runs, tables.phases)
    assert metrics.strong_scaling(summary).empty and metrics.weak_scaling(summary).empty
    out = tmp_path / "report"
    assert report.main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    text = (out / "summary.md").read_text()
    assert "## Strong scaling\n\nNothing to compare: " in text and "so there is no scaling figure" in text
    assert "- bench 6q exact 3 cuts 4 rows static 1 rank\n- bench 6q exact 3 cuts 16 rows static 2 ranks\n" in text
    assert not (out / "scaling.png").exists() and "| speedup |" not in text


def test_find_run_dirs_and_labels(synthetic, tmp_path):
    tables, _ = synthetic
    assert sorted(tables.runs["run"]) == ["r1-rows16", "r1-rows4", "r2-rows16", "r2-rows8", "r4-rows16"]
    for name in ("a/x", "b/x"):
        write_synthetic_run(tmp_path / name, 1, 4)
    assert find_run_dirs([tmp_path / "a" / "x"]) == [tmp_path / "a" / "x"]
    assert sorted(load_runs([tmp_path]).runs["run"]) == ["a/x", "b/x"]


def train_config(dataset: str, epochs: int, cuts: int = 3, cutting: bool = True, learning_rate: float = 0.1) -> dict:
    """The resolved config of an ``hpcqnn train`` run, as its results.json records it."""
    return {
        "run": {"name": f"{dataset}_cut{cuts}", "seed": 2026},
        "data": {"dataset": dataset, "features": 4, "max_train": 0},
        "model": {"layers": 3, "cuts": cuts},
        "execution": {"cutting": cutting, "mode": "exact", "schedule": "static"},
        "training": {"epochs": epochs, "batch_size": 16, "learning_rate": learning_rate},
    }


def write_train_result(path: Path, config: dict, ranks: int, test_accuracy: float,
                       robustness: dict | None = None) -> None:
    """The results.json of a finished train run: by default under noise and attack it loses 0.05 and 0.1."""
    path.mkdir(parents=True)
    robustness = robustness or {
        "gaussian": [{"sigma": 0.1, "accuracy_mean": test_accuracy - 0.05, "accuracy_std": 0.0}],
        "fgsm": [{"epsilon": 0.1, "accuracy": test_accuracy - 0.1}],
    }
    final = {"train_accuracy": 0.9, "test_accuracy": test_accuracy}
    history = [{}] * config["training"]["epochs"]
    result = {"config": config, "ranks": ranks, "final": final, "history": history, "robustness": robustness}
    (path / "results.json").write_text(json.dumps(result))


def test_accuracy_figure_has_a_line_per_training_setting(tmp_path, monkeypatch):
    runs = {  # run: (config, ranks, test accuracy)
        "iris-e1": (train_config("iris", 1), 1, 0.65),
        "iris-e1-r2": (train_config("iris", 1), 2, 0.75),
        "iris-e8": (train_config("iris", 8), 1, 1.0),
        "iris-lr": (train_config("iris", 1, learning_rate=0.05), 1, 0.7),
        "iris-cut1": (train_config("iris", 1, cuts=1), 1, 0.8),
        "iris-uncut1": (train_config("iris", 1, 1, False), 1, 0.8),
        "digits": (train_config("digits", 1), 1, 0.9),
    }
    for run, (config, ranks, test_accuracy) in runs.items():
        write_train_result(tmp_path / "runs" / run, config, ranks, test_accuracy)
    with pytest.warns(RunLoadWarning, match="timing: missing"):
        tables = load_runs([tmp_path / "runs"])
    accuracy = metrics.accuracy_table(tables.runs, tables.results).set_index("run")
    settings = accuracy["setting"]  # what differs from the runs of the same dataset
    assert settings["digits"] == "" and settings["iris-lr"] == "learning_rate=0.05"
    assert (settings.drop(["digits", "iris-lr"]) == "learning_rate=0.1").all()
    figures_drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out, name: figures_drawn.append(fig) or [])
    figures.accuracy(accuracy.reset_index(), metrics.robustness_table(tables.runs, tables.results), tmp_path)
    gaussian, fgsm = figures_drawn[0].axes
    lines = {line.get_label(): line for line in gaussian.get_lines()}
    clean = {name: line.get_ydata()[0] for name, line in lines.items()}
    assert clean == pytest.approx({
        "digits 3 cuts exact 1 epoch": 0.9, "iris 3 cuts exact 1 epoch learning_rate=0.05": 0.7,
        "iris 3 cuts exact 1 epoch learning_rate=0.1": 0.7,  # 0.65 and 0.75: the same setting at 1 and 2 ranks
        "iris 3 cuts exact 8 epochs learning_rate=0.1": 1.0, "iris 1 cut exact 1 epoch learning_rate=0.1": 0.8,
        "iris 1 cut exact 1 epoch learning_rate=0.1, uncut baseline": 0.8,
    })
    assert [lines[name].get_ydata()[1] for name in clean] == pytest.approx([v - 0.05 for v in clean.values()])
    baseline = "iris 1 cut exact 1 epoch learning_rate=0.1"
    assert lines[baseline].get_color() == lines[baseline + ", uncut baseline"].get_color()
    assert len({line.get_color() for line in lines.values()}) == 5
    assert [t.get_text() for t in fgsm.get_legend().get_texts()] == list(lines)


def write_seed_run(path: Path, dataset: str, cuts: int, seed: int, accuracies: tuple[float, float, float],
                   shares: list[float]) -> None:
    """A finished 1-rank sampled train run: ``accuracies`` = (test, Gaussian, FGSM), the Gaussian one
    the mean of two levels at +-0.05; one 1-s query per reconstruction share in ``shares``
    (accumulate and contract half of it each, execute the rest)."""
    config = train_config(dataset, 1, cuts)
    config["run"]["seed"], config["execution"]["mode"] = seed, "sampled"
    test, gaussian, fgsm = accuracies
    robustness = {"gaussian": [{"sigma": s, "accuracy_mean": gaussian + d, "accuracy_std": 0.0}
                               for s, d in ((0.1, 0.05), (0.2, -0.05))],
                  "fgsm": [{"epsilon": 0.1, "accuracy": fgsm}]}
    write_train_result(path, config, 1, test, robustness)
    attributes = {"rank": 0, "size": 1, "hostname": "synthetic", "device": "CPU", "schedule": "static", "threads": 1}
    log = HDF5TimingLog(rank_file(path, 0), {**attributes, "config": json.dumps(config)})
    for query, share in enumerate(shares):
        t, half = 1000.0 + 10 * query, share / 2
        log.write([PhaseRow(query, "execute", t, t + 1 - share, n_experiments=64, n_tiles=1),
                   PhaseRow(query, "accumulate", t + 1 - share, t + 1 - half, n_experiments=64, n_tiles=1),
                   PhaseRow(query, "contract", t + 1 - half, t + 1)])
    log.close()


#: (dataset, cuts) -> per seed: (test, Gaussian, FGSM accuracy) and the reconstruction shares of its queries
SEED_MATRIX = {
    ("iris", 0): {1: ((0.6, 0.6, 0.4), [0.01]), 2: ((0.7, 0.6, 0.5), [0.01]), 3: ((0.8, 0.6, 0.6), [0.01])},
    ("iris", 1): {1: ((0.9, 0.5, 0.4), [0.1, 0.2]), 2: ((0.95, 0.6, 0.5), [0.3]), 3: ((1.0, 0.7, 0.6), [0.4, 0.5])},
    ("iris", 2): {1: ((0.75, 0.9, 0.3), [0.2]), 2: ((0.85, 0.9, 0.4), [0.2]), 3: ((0.95, 0.9, 0.5), [0.2])},
    ("iris", 3): {1: ((1.0, 1.0, 1.0), [0.5])},  # one seed: not a setting of the matrix
    ("digits", 0): {1: ((0.8, 0.8, 0.8), [0.02]), 2: ((0.9, 0.9, 0.9), [0.02])},
    ("digits", 1): {1: ((0.85, 0.85, 0.85), [0.1]), 2: ((0.95, 0.95, 0.95), [0.1])},
}


def test_seed_matrix_table_verdicts_and_figure(tmp_path):
    for (dataset, cuts), seeds in SEED_MATRIX.items():
        for seed, (accuracies, shares) in seeds.items():
            write_seed_run(tmp_path / "runs" / f"{dataset}_cut{cuts}_s{seed}", dataset, cuts, seed, accuracies, shares)
    tables = load_runs([tmp_path / "runs"])
    matrix = metrics.seed_matrix(tables.runs, tables.results, tables.phases).set_index(["dataset", "cuts"])
    assert sorted(matrix.index) == [("digits", 0), ("digits", 1), ("iris", 0), ("iris", 1), ("iris", 2)]
    assert matrix["seeds"].to_dict() == {("iris", 0): 3, ("iris", 1): 3, ("iris", 2): 3, ("digits", 0): 2,
                                         ("digits", 1): 2}
    assert (matrix["mode"] == "sampled").all() and (matrix["ranks"] == "1").all() and (matrix["setting"] == "").all()
    # by hand: [0.9, 0.95, 1.0] -> 0.95, sqrt((0.05^2 + 0 + 0.05^2) / 2) = 0.05; [0.6, 0.7, 0.8] -> 0.7, 0.1
    iris1, iris0 = matrix.loc[("iris", 1)], matrix.loc[("iris", 0)]
    assert [iris1["test_accuracy_mean"], iris1["test_accuracy_std"]] == pytest.approx([0.95, 0.05])
    assert [iris0["test_accuracy_mean"], iris0["test_accuracy_std"]] == pytest.approx([0.7, 0.1])
    assert [iris1["gaussian_mean"], iris1["gaussian_std"]] == pytest.approx([0.6, 0.1])  # levels 0.55/0.65, ...
    assert [iris0["gaussian_mean"], iris0["gaussian_std"]] == pytest.approx([0.6, 0.0], abs=1e-12)
    assert matrix.loc[("digits", 1), ["fgsm_mean", "fgsm_std"]].tolist() == pytest.approx([0.9, math.sqrt(0.005)])
    # shares of all queries of the three seeds: [0.1, 0.2, 0.3, 0.4, 0.5]: median 0.3, p95 0.4 + 0.8 x 0.1
    assert [iris1["reconstruct_median"], iris1["reconstruct_p95"]] == pytest.approx([0.3, 0.48])
    assert [iris0["reconstruct_median"], iris0["reconstruct_p95"]] == pytest.approx([0.01, 0.01])
    # iris, 1 cut: test +0.25 > 0.05 + 0.1 beats, Gaussian +0 does not, FGSM +0 does not;
    # 2 cuts: test +0.15 < 0.1 + 0.1 does not (a higher mean within the spread), Gaussian +0.3 > 0 + 0 beats
    assert matrix["beats_baseline"].to_dict() == {
        ("iris", 0): "baseline", ("iris", 1): "test_accuracy", ("iris", 2): "gaussian",
        ("digits", 0): "baseline", ("digits", 1): "no",
    }

    out = tmp_path / "report"
    assert report.main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    for ext in ("png", "pdf"):
        assert (out / f"seed_matrix.{ext}").stat().st_size > 0
    text = (out / "summary.md").read_text()
    assert "## Seed matrix: accuracy, robustness and reconstruction share vs cuts" in text
    assert "- digits sampled 1 epoch: no cut setting beats 0 cuts by more than the seed spread.\n" in text
    assert ("- iris sampled 1 epoch: cuts = 1 beats cuts = 0 in test_accuracy; cuts = 2 beats cuts = 0 in "
            "gaussian.\n") in text
    assert "| iris | 1 | 3 | 0.950 ± 0.050 | 0.600 ± 0.100 | 0.500 ± 0.100 | 30 | 48 | test_accuracy |" in text
    assert "![seed_matrix](seed_matrix.png)" in text


def test_seed_matrix_needs_several_seeds(tmp_path):
    """One seed per setting (or no finished train run): no seed-matrix table, section or figure."""
    for cuts in (0, 1):
        write_seed_run(tmp_path / "runs" / f"cut{cuts}", "iris", cuts, 7, (0.8, 0.7, 0.6), [0.1])
    tables = load_runs([tmp_path / "runs"])
    assert metrics.seed_matrix(tables.runs, tables.results, tables.phases).empty
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    assert "## Seed matrix" not in (tmp_path / "report" / "summary.md").read_text()
    assert not (tmp_path / "report" / "seed_matrix.png").exists()
    write_synthetic_run(tmp_path / "bench", 1, 4)  # bench runs only
    bench = load_runs([tmp_path / "bench"])
    assert metrics.seed_matrix(bench.runs, bench.results, bench.phases).empty


def test_report_names_missing_paths_and_folders_without_runs(tmp_path, capsys):
    run, empty, out = tmp_path / "run", tmp_path / "empty", tmp_path / "report"
    write_synthetic_run(run, 1, 4)
    empty.mkdir()
    assert report.main([str(run), str(tmp_path / "typo"), "--out", str(out)]) == 2  # before any work
    assert capsys.readouterr().err == f"analysis.report: error: no such file or directory: {tmp_path / 'typo'}\n"
    assert not out.exists()
    for nothing in ([run / "timing"], [empty]):  # exist, but hold no run
        assert report.main([*map(str, nothing), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"analysis.report: error: no run found in {nothing[0]} (") and err.count("\n") == 1
        assert "results.json" in err and "timing/rank-" in err and not out.exists()
    assert report.main([str(run), str(empty), "--out", str(out)]) == 0
    assert f"skipped: {empty}: no run directory in it" in capsys.readouterr().out
    assert f"- {empty}: no run directory in it" in (out / "summary.md").read_text()
    with pytest.warns(RunLoadWarning, match="no run directory"):
        assert find_run_dirs([run, empty]) == [run]
    (tmp_path / "afile").write_text("x")
    assert report.main([str(run), "--out", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err == (
        f"analysis.report: error: --out {tmp_path / 'afile'} is a file: "
        "give a directory for the figures and summary.md\n"
    )


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (["--cores", "0"], "argument --cores: expected an integer >= 1, got 0"),
        (["--projection-ranks", "0"], "argument --projection-ranks: expected integers >= 1, got '0'"),
        (["--work-scale", "-1"], "argument --work-scale: expected a finite number > 0, got -1"),
    ],
)
def test_report_refuses_bad_arguments_by_name(argument, message, tmp_path, capsys):
    write_synthetic_run(tmp_path / "run", 1, 4)
    with pytest.raises(SystemExit) as exit_:
        report.main([str(tmp_path / "run"), "--out", str(tmp_path / "report"), *argument])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_report_names_an_out_it_cannot_write_and_a_run_whose_only_log_is_damaged(tmp_path, capsys):
    run = tmp_path / "run"
    write_synthetic_run(run, 1, 4)
    assert report.main([str(run), "--out", "/proc/hpcqnn-report"]) == 2
    assert capsys.readouterr().err.startswith("analysis.report: error: cannot write the report in --out /proc/")
    rank_file(run, 0).write_bytes(b"damaged")
    assert report.main([str(run), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert f"{rank_file(run, 0)}: unreadable (OSError" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (["--ranks", "0"], "argument --ranks: expected integers >= 1, got '0'"),
        (["--train-cuts", "9"], "argument --train-cuts: no job jobs/iris_cut9.toml; there are iris_cut0.toml"),
        (["--slowdown", "0.5"], "argument --slowdown: expected a finite number >= 1, got 0.5"),
        (["--out", "AFILE"], "is a file: give a directory for the sweep's runs and report"),
    ],
)
def test_sweep_checks_every_argument_before_any_work(argument, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(sweep, "run_step", lambda *a, **k: pytest.fail("a step ran"))
    out = str(tmp_path / "sweep")
    with pytest.raises(SystemExit) as exit_:
        sweep.main(["--out", out, *[str(tmp_path / "afile") if a == "AFILE" else a for a in argument]])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_report_of_a_run_without_timing_logs(tmp_path):
    """A finished run whose timing/ is gone still reports its accuracy."""
    run = tmp_path / "train"
    run.mkdir()
    final = {"train_accuracy": 0.5, "test_accuracy": 0.75}
    robustness = {"gaussian": [{"sigma": 0.1, "accuracy_mean": 0.7, "accuracy_std": 0.0}],
                  "fgsm": [{"epsilon": 0.1, "accuracy": 0.6}]}
    result = {"config": train_config("iris", 1), "ranks": 1, "final": final, "history": [{}], "robustness": robustness}
    (run / "results.json").write_text(json.dumps(result))
    assert report.main([str(run), "--out", str(tmp_path / "report")]) == 0
    assert "| train | iris_cut3 | 3 | True | 0.5 | 0.75 |" in (tmp_path / "report" / "summary.md").read_text()


ANALYSIS_MODULES = ("analysis.report", "analysis.sweep", "analysis.large", "analysis.load", "analysis.metrics",
                    "analysis.figures", "analysis.replay")
HEAVY = ("qiskit", "qiskit_aer", "qiskit_addon_cutting", "mpi4py")


def test_analysis_loads_neither_qiskit_nor_mpi():
    """Analysing run directories needs neither Qiskit, Aer, the cutting addon nor MPI: importing
    every analysis module (those named, and any other found in the package) in a fresh
    interpreter loads none of them."""
    script = (
        "import importlib, pkgutil, sys\n"
        "import analysis\n"
        f"names = {ANALYSIS_MODULES!r} + tuple(m.name for m in pkgutil.walk_packages(analysis.__path__, 'analysis.'))\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


# -- the replay model ------------------------------------------------------------------------------


COSTS = replay.Costs(
    execute=replay.TileCost(0.0, 1e-3), reconstruct=replay.TileCost(0.0, 0.0), contraction_row=0.0,
    start_lag=0.0, sync=0.0, overhead=0.0, capacity=1.0,
)
NETWORK = replay.Network(latency=0.0, bandwidth=1e12)
WORK = replay.Workload(experiments=100, rows=1, param_bytes=0, buffer_bytes=0)


def test_replay_static_processor_sharing_and_stragglers():
    def wall(**scenario) -> float:
        return replay.simulate(WORK, COSTS, NETWORK, replay.Scenario(**scenario)).wall

    assert wall(ranks=1) == pytest.approx(0.1)
    assert wall(ranks=2) == pytest.approx(0.05)  # a core each
    assert wall(ranks=4, cores=2.0) == pytest.approx(0.05)  # 4 ranks share 2 cores
    assert wall(ranks=2, straggler_ranks=(1,), slowdown=3.0) == pytest.approx(0.05 + 2 * 0.05)
    # sharing one core, both ranks execute for 100 ms; the straggler then sleeps 2 x 100 ms
    assert wall(ranks=2, cores=1.0, straggler_ranks=(1,), slowdown=3.0) == pytest.approx(0.1 + 0.2)
    static = wall(ranks=4, straggler_ranks=(1,), slowdown=4.0)
    assert static == pytest.approx(0.025 * 4)
    assert wall(ranks=4, schedule="dynamic", straggler_ranks=(1,), slowdown=4.0) < static
    assert wall(ranks=4, schedule="dynamic") < wall(ranks=4, schedule="dynamic", prompt_probe=False)
    heavy = replace(WORK, param_bytes=1024, buffer_bytes=1 << 20)
    linear = replay.simulate(heavy, COSTS, replay.CLUSTER, replay.Scenario(64, reduce="linear"))
    tree = replay.simulate(heavy, COSTS, replay.CLUSTER, replay.Scenario(64, reduce="tree"))
    assert linear.reduce == pytest.approx(63 / 6 * tree.reduce)


def test_polling_notices_late_and_tile_costs_fit():
    assert simulation.noticed_after(0.0) == 0.0
    assert simulation.noticed_after(1e-3) == pytest.approx(1.13e-3)  # tests at 10, 30, 70, ... 630, 1130 us
    assert simulation.noticed_after(1e-2) == pytest.approx(1.013e-2)  # then every 0.5 ms
    sizes = np.array([4, 64, 128, 512, 1024, 2048] * 3)
    cost, residual = calibration.fit_tile_cost(pd.Series(sizes), pd.Series(5e-4 + 6e-5 * sizes.astype(float)))
    assert (cost.call, cost.experiment, cost.exponent) == pytest.approx(
        (5e-4, 6e-5, 1.0), rel=1e-6
    ) and residual < 1e-20
    assert cost(4096) == pytest.approx(5e-4 + 6e-5 * 4096)  # beyond the fitted sizes: linear


def test_tile_costs_follow_aer_call_batching():
    # hpcqnn.execution.simulator.AerRunner.run runs n experiments as ceil(n / 256) Aer calls
    cost = replay.TileCost(1e-3, 1e-5, 1.1, batch=256)
    assert cost.calls(600) == [256, 256, 88] and cost.calls(512) == [256, 256] and cost.calls(40) == [40]
    assert cost(600) == pytest.approx(3e-3 + 1e-5 * (2 * 256**1.1 + 88**1.1))
    # a static share's tiles are cut at 256 and consecutive pieces packed while they fit, as AerRunner.run does
    assert simulation.call_sizes([300, 100, 200], 256) == [256, 44 + 100, 200]
    assert simulation.call_sizes([40], math.inf) == [40]
    # rows of whole batches and of small tiles recover the per-call cost
    sizes = pd.Series([2, 16, 64, 512, 600, 2048] * 2)
    rows = pd.Series([cost(n) for n in sizes])
    fitted, residual = calibration.fit_tile_cost(sizes, rows, batch=256)
    assert (fitted.call, fitted.experiment, fitted.exponent) == pytest.approx((1e-3, 1e-5, 1.1), rel=1e-6)
    assert residual < 1e-20 and fitted.fitted_up_to == 256 and fitted(4096) == pytest.approx(16 * cost(256))
    # a batch is simulated as its sequence of calls: 600 experiments on one rank = 3 calls
    costs = replace(COSTS, execute=cost)
    wall = replay.simulate(replace(WORK, experiments=600), costs, NETWORK, replay.Scenario(1)).wall
    assert wall == pytest.approx(cost(600))


# -- the replay model on a crowded host: sharing, per-tile loop, crowded sync ------------------------


def write_timed_run(path: Path, ranks: int, schedule: str, rows_of) -> None:
    """A run of three queries (query 0 builds the plan) whose rank rows are ``rows_of(query,
    rank, t)`` for a query starting at ``t`` (every query starts 1 s after the previous)."""
    config = json.dumps({"qubits": 6, "cuts": 3, "mode": "exact", "rows": 4, "layers": 3, "straggler": None})
    for rank in range(ranks):
        attributes = {"rank": rank, "size": ranks, "hostname": "synthetic", "device": "CPU", "schedule": schedule,
                      "threads": 1, "config": config}
        log = HDF5TimingLog(rank_file(path, rank), attributes)
        for query in range(3):
            t = 1000.0 + query
            setup = [PhaseRow(query, "partition", t - 0.01, t - 0.005)] if query == 0 and rank == 0 else []
            log.write(setup + rows_of(query, rank, t))
        log.close()


def static_rows(ends: list[float], lags: list[float], sync: float, n: int = 512):
    """Rows of a static query: rank r's parameters arrive ``lags[r]`` after rank 0's, it executes
    ``n`` experiments from then until ``ends[r]`` (seconds after the query start), enters the
    barrier, and every rank's reduce ends ``sync`` after the last entry."""

    def rows_of(query: int, rank: int, t: float) -> list[PhaseRow]:
        start, end, last = t + 0.001 + lags[rank], t + ends[rank], t + max(ends)
        return [
            PhaseRow(query, "broadcast", t, t + 0.001 + lags[rank], n_rows=4, bytes=256),
            PhaseRow(query, "execute", start, end, n_experiments=n, n_tiles=1),
            PhaseRow(query, "wait", end, last),
            PhaseRow(query, "reduce", last, last + sync, bytes=1024),
        ]

    return rows_of


def test_core_shares_even_and_root():
    assert simulation.core_shares(True, 1, 1, 2.0) == (1.0, 1.0)  # they fit: a core each
    assert simulation.core_shares(True, 3, 1, 2.0) == (0.5, 0.5)  # root share 0: even
    assert simulation.core_shares(True, 3, 1, None) == (1.0, 1.0)  # no shared host
    assert simulation.core_shares(True, 3, 1, 2.0, 1.0) == pytest.approx((1.0, 1 / 3))  # rank 0 alone on a core
    assert simulation.core_shares(True, 3, 1, 2.0, 0.5) == pytest.approx((0.75, 5 / 12))  # halfway
    assert simulation.core_shares(False, 3, 1, 2.0, 1.0) == pytest.approx((0.0, 2 / 3))  # rank 0 idle: all theirs
    assert simulation.core_shares(True, 3, 1, 1.0, 1.0) == pytest.approx((0.25, 0.25))  # one core: no core to keep
    # crowded cores deliver capacity / cores of a core; rank 0's own core is not time-sliced
    assert simulation.core_shares(True, 3, 1, 2.0, 0.0, capacity=1.6) == pytest.approx((0.4, 0.4))
    assert simulation.core_shares(True, 3, 1, 2.0, 1.0, capacity=1.6) == pytest.approx((1.0, 0.8 / 3))
    assert simulation.core_shares(True, 1, 1, 2.0, 1.0, capacity=1.6) == (1.0, 1.0)  # not crowded: unaffected


def test_machine_runs_root_alone_on_its_core():
    def proc(seconds):
        yield ("cpu", seconds)

    def finish(root_share: float) -> list[float]:
        machine = simulation.Machine(4, 1, 2.0, 0.0, True, root_share)
        machine.run([proc(0.03) for _ in range(4)])
        return machine.finish

    assert finish(0.0) == pytest.approx([0.06] * 4)
    # rank 0 has a core: done at 30 ms; the others got 10 ms each on the other core by then and
    # run the remaining 20 ms at 2/3 of a core
    assert finish(1.0) == pytest.approx([0.03, 0.06, 0.06, 0.06])
    # a dynamic query: rank 0 runs about as many tiles as the three others together
    work = replay.Workload(experiments=640, rows=1, param_bytes=0, buffer_bytes=0)
    dynamic = {s: replay.simulate(work, COSTS, NETWORK, replay.Scenario(4, "dynamic", cores=2.0, root_share=s)).compute
               for s in (0.0, 1.0)}
    assert dynamic[1.0] == pytest.approx(dynamic[0.0], rel=0.05) and dynamic[1.0] >= 0.32


@pytest.mark.parametrize("root_share, root_rate", [(1.0, 1.0), (0.5, 0.75)])
def test_calibration_finds_the_root_share_and_the_true_tile_cost(tmp_path, root_share, root_rate):
    """512 experiments cost 51.2 ms of a core: alone, and on a 2-core host where 4 ranks ran as
    Linux runs them: rank 0 at ``root_rate`` cores (1: alone on a core), the others sharing the
    rest until it is done, then both cores (they end at 2 x 51.2 ms either way)."""
    cost = 0.0512
    write_timed_run(tmp_path / "r1", 1, "static", static_rows([0.001 + cost], [0.0], 0.0))
    write_timed_run(tmp_path / "r4", 4, "static", static_rows([0.001 + cost / root_rate] + [0.001 + 2 * cost] * 3,
                                                              [0.0] * 4, 0.002))
    tables = load_runs([tmp_path])
    rows = calibration.timing_rows(tables, tables.runs["run"])
    execute = rows["phase"] == "execute"
    timeline = calibration.Timeline(rows)
    for share in calibration.ROOT_SHARES:  # only the true share gives every row the same cost
        seconds = timeline.core_seconds(2.0, 2.0, share)[execute]
        assert (seconds.max() / seconds.min() < 1 + 1e-9) == (share == root_share)
    # the costs from a wrong share mispredict the 1-rank wall: the walls find the true one
    costs = replay.calibrate(tables, tables.runs["run"], 2.0, NETWORK)
    assert (costs.root_share, costs.capacity) == (root_share, 2.0)
    assert costs.execute(512) == pytest.approx(cost, rel=1e-6)


def test_crowded_hosts_have_their_own_start_lag_and_sync(tmp_path):
    # 2 ranks on 2 cores: 1 ms lag, 1 ms sync; 4 ranks on 2 cores: 3 ms lag, 4 ms sync
    write_timed_run(tmp_path / "r2", 2, "static", static_rows([0.021, 0.022], [0.0, 0.001], 0.001))
    crowded = static_rows([0.021, 0.06, 0.06, 0.06], [0.0, 0.003, 0.003, 0.003], 0.004)
    write_timed_run(tmp_path / "r4", 4, "static", crowded)
    tables = load_runs([tmp_path])
    assert calibration.crowded_runs(tables, tables.runs["run"], 2.0) == ["r4"]
    costs = replay.calibrate(tables, tables.runs["run"], 2.0, NETWORK)
    assert (costs.start_lag, costs.sync) == pytest.approx((0.001, 0.001), rel=1e-4)  # minus 1 KB at 1 TB/s
    assert (costs.crowded_lag, costs.crowded_sync) == pytest.approx((0.003, 0.004), rel=1e-4)
    work = replace(WORK, experiments=400)
    plain = replace(COSTS, start_lag=0.001, sync=0.001, crowded_lag=0.003, crowded_sync=0.004)
    assert replay.simulate(work, plain, NETWORK, replay.Scenario(2, cores=2.0)).sync == pytest.approx(0.001)
    assert replay.simulate(work, plain, NETWORK, replay.Scenario(4, cores=2.0)).sync == pytest.approx(0.004)
    assert replay.simulate(work, plain, NETWORK, replay.Scenario(4)).sync == pytest.approx(0.001)  # a core per rank


def test_dynamic_loop_costs_core_time_per_tile(tmp_path):
    """Rank 0 spends 0.1 ms between its tiles (answering requests): calibrated, then charged per tile."""

    def rows_of(query: int, rank: int, t: float) -> list[PhaseRow]:
        out, now = [PhaseRow(query, "broadcast", t, t + 0.001, n_rows=4, bytes=256)], t + 0.001
        for _ in range(4):
            out += [PhaseRow(query, "execute", now, now + 0.002, n_experiments=8, n_tiles=1),
                    PhaseRow(query, "accumulate", now + 0.002, now + 0.00201, n_experiments=8, n_tiles=1)]
            now += 0.00201 + (1e-4 if rank == 0 else 5e-4)  # a worker's gaps include waiting: not measured
        return out + [PhaseRow(query, "wait", now, t + 0.011),
                      PhaseRow(query, "reduce", t + 0.011, t + 0.012, bytes=64)]

    write_timed_run(tmp_path / "dyn", 2, "dynamic", rows_of)
    tables = load_runs([tmp_path])
    loop = calibration.timing_rows(tables, tables.runs["run"]).query("phase == 'loop'")
    assert len(loop) == 3 * 3 and (loop["rank"] == 0).all()  # three gaps per query on rank 0
    costs = replay.calibrate(tables, tables.runs["run"], 2.0, NETWORK)
    assert costs.loop == pytest.approx(1e-4)
    # 10 tiles of 32 experiments (32 ms); rank 0 runs 6 of them (the worker's first request
    # arrives while rank 0 runs its first tile), so 1 ms of loop per tile ends the query 6 ms later
    work, scenario = replace(WORK, experiments=320), replay.Scenario(2, "dynamic", tiles_per_rank=5)
    base = replay.simulate(work, COSTS, NETWORK, scenario).compute
    looped = replay.simulate(work, replace(COSTS, loop=1e-3), NETWORK, scenario).compute
    assert base == pytest.approx(6 * 0.032, abs=POLL) and looped - base == pytest.approx(6e-3)


def test_sweep_runs_a_loaded_step_again_and_keeps_the_quietest(tmp_path, monkeypatch):
    loads = iter([0.9, 0.5, 0.7])  # every attempt loaded: the second is kept

    def fake_run(step):
        other = next(loads)
        (tmp_path / "runs" / step.name).mkdir(parents=True)
        (tmp_path / "runs" / step.name / "load").write_text(str(other))
        return {"step": step.name, "ranks": step.ranks, "seconds": 1.0, "other_cores": other}

    monkeypatch.setattr(sweep, "_run_once", fake_run)
    step = sweep.Step("bench-x", 2, ())
    record = sweep.run_step(step, tmp_path / "runs", retries=2)
    assert record["other_cores"] == 0.5 and record["attempts"] == 3
    assert (tmp_path / "runs" / "bench-x" / "load").read_text() == "0.5"
    assert sorted(p.name for p in (tmp_path / "loaded").iterdir()) == ["bench-x-0", "bench-x-2"]
    assert sweep.run_step(step, tmp_path / "runs", retries=2) is None  # exists: skipped
    loads = iter([0.05])
    assert sweep.run_step(sweep.Step("bench-y", 2, ()), tmp_path / "runs", retries=2)["attempts"] == 1  # quiet at once


def test_crowded_capacity_is_fitted_to_the_walls_of_crowded_runs(tmp_path, monkeypatch):
    """4 ranks run 512 experiments each (51.2 ms of a core) on 2 cores in 128 ms: evenly shared,
    the host delivered 1.6 cores, not 2 - the capacity under which the model gives that wall."""
    monkeypatch.setattr(calibration, "ROOT_SHARES", (0.0,))  # (rank 0 alone on a core at 1.5 cores gives it too)
    write_timed_run(tmp_path / "r4", 4, "static", static_rows([0.128] * 4, [0.0] * 4, 0.0))
    write_timed_run(tmp_path / "r2", 2, "static", static_rows([0.0522] * 2, [0.0] * 2, 0.0))
    tables = load_runs([tmp_path])

    def at(root_share: float, capacity: float) -> replay.Costs:
        return replace(COSTS, execute=replay.TileCost(0.0, 1e-4), capacity=capacity, root_share=root_share)

    assert calibration.fit_host(tables, ["r2", "r4"], 2.0, NETWORK, at).capacity == pytest.approx(1.6)
    assert (
        calibration.fit_host(tables, ["r2"], 2.0, NETWORK, at).capacity == 2.0
    )  # nothing crowded: ties keep all cores


def test_ideal_scaling_line_is_y_equals_x_at_every_rank(monkeypatch, tmp_path):
    """On the log-2 rank axis the ideal speed-up is a curve: drawn point by point it reads 2 at
    2 ranks (two end points joined by a straight segment read 2.5)."""
    captured = []
    monkeypatch.setattr(figures, "save", lambda fig, out, name: captured.append(fig) or [])
    strong = pd.DataFrame({"ranks": [1, 2, 4], "speedup": [1.0, 1.8, 3.1], "efficiency": [1.0, 0.9, 0.78],
                           "qubits": [8, 8, 8], "cuts": [3, 3, 3]})
    weak = strong.iloc[0:0].rename(columns={"speedup": "scaled_speedup"})
    figures.scaling(strong, weak, ["qubits", "cuts"], tmp_path)
    (ideal,) = [line for line in captured[0].axes[0].get_lines() if line.get_label() == "ideal"]
    x, y = np.asarray(ideal.get_xdata(), float), np.asarray(ideal.get_ydata(), float)
    assert 2.0 in x and np.array_equal(x, y) and len(x) > 10
