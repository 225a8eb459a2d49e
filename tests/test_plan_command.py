"""``hpcqnn plan``: the printed cut plan is the estimator's, the memory estimate adds up by hand,
the predicted times are sane, and bad input fails as ``hpcqnn train`` fails."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpcqnn import cli
from hpcqnn.estimator import DistributedEstimator
from hpcqnn.run.config import load_config
from hpcqnn.tools.planner import recorded_plan
from hpcqnn.training.loop import build_qnn

#: Small training queries: the plan does not depend on the batch, the measurement does.
SMALL = ["--set", "data.max_train=8", "--set", "training.batch_size=2"]


def run_plan(tmp_path, capsys, config: str, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "plan.json"
    assert cli.main(["plan", config, *SMALL, *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


@pytest.mark.parametrize("config", ["jobs/mnist_cut3.toml", "jobs/digits64.toml"])
def test_printed_plan_is_the_estimators_program(tmp_path, capsys, config):
    report, text = run_plan(tmp_path, capsys, config)
    qnn = build_qnn(load_config(config))
    rows = np.zeros((1, qnn.circuit.num_parameters))
    program = DistributedEstimator(partition_labels=qnn.partition_labels, device="CPU").program(
        (qnn.circuit, qnn.observable, rows)
    )
    plan = report["plan"]
    assert report["program"] == repr(program)
    assert plan["cuts"] == program.plan.num_cuts
    assert plan["gamma"] == pytest.approx(program.plan.gamma)
    assert plan["subexperiments"] == program.plan.num_subexperiments
    assert [p["qubits"] for p in plan["partitions"]] == [list(p.qubits) for p in program.plan.partitions]
    assert [p["subexperiments"] for p in plan["partitions"]] == [
        p.num_subexperiments for p in program.plan.partitions
    ]
    assert all(p["coherent"] for p in plan["partitions"])  # exact mode runs cut partitions coherently
    assert [p["simulated_qubits"] for p in plan["partitions"]] == [
        p.coherent.num_qubits for p in program.plan.partitions
    ]
    # a training run records the same plan in results.json (analysis reads the widest circuit from it)
    assert json.loads(json.dumps(recorded_plan(load_config(config)))) == plan
    assert f"cuts: {program.plan.num_cuts};" in text
    for part in program.plan.partitions:
        assert f"  {part.label}: qubits " in text
        assert f"{part.num_subexperiments} subexperiments, coherent, {part.coherent.num_qubits} simulated" in text


def test_memory_estimate_by_hand(tmp_path, capsys):
    """mnist_cut3 on 2 examples: 8 qubits in two halves of 4 joined by 3 CX cuts, 3 RY layers
    (24 weights, 12 per half) and 8 input angles; parity readout (one local Pauli per half)."""
    report, _ = run_plan(tmp_path, capsys, "jobs/mnist_cut3.toml")
    memory = report["memory"]
    rows = 2 * (1 + 2 * 24)  # every example: unshifted, then +- pi/2 on each weight
    distinct = 2 * (1 + 2 * 12)  # per half: shifts of the other half's weights repeat its rows
    width = 4 + 2 * 3  # a half's qubits and two control qubits per cut (coherent circuit)
    assert memory["widest_qubits"] == width
    assert memory["statevector_bytes"] == 16 * 2**width
    assert memory["param_bytes"] == rows * (8 + 24) * 8
    assert memory["buffer_bytes"] == 2 * 4**3 * distinct * 1 * 8  # halves x subexperiments x rows x Paulis
    # both halves' rows fit one Aer call (256 experiments); each returns its 10-qubit statevector
    assert memory["call_experiments"] == 2 * distinct
    assert memory["call_output_bytes"] == 2 * distinct * 16 * 2**width
    assert memory["total_bytes"] == sum(memory[k] for k in
                                        ("statevector_bytes", "call_output_bytes", "buffer_bytes", "param_bytes"))
    assert report["measurement"]["rows"] == rows
    assert report["training"] == {"examples": 8, "batch_size": 2, "queries_per_epoch": 4}


def test_predicted_times(tmp_path, capsys):
    report, text = run_plan(tmp_path, capsys, "jobs/mnist_cut3.toml", "--ranks", "1,2")
    one, two = report["predictions"]
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert 0 < two["query_seconds"] <= one["query_seconds"]
    assert 0 < two["epoch_seconds"] <= one["epoch_seconds"]
    assert one["epoch_seconds"] == pytest.approx(4 * one["call_seconds"])
    # calibrated on one real query of median wall per shape: one rank replays the measured query
    measured = report["measurement"]
    assert one["query_seconds"] == pytest.approx(measured["query_seconds"], rel=0.05)
    # the critical path from the timing rows lies inside the estimator.run call
    assert 0 < measured["query_seconds"] <= measured["call_seconds"]
    # the call adds what comes before the critical path, at every rank count
    assert one["call_seconds"] - one["query_seconds"] == pytest.approx(
        measured["call_seconds"] - measured["query_seconds"]) == two["call_seconds"] - two["query_seconds"]
    assert measured["rank_cores"] == 1  # 10-qubit circuits: Aer runs them on one thread
    assert "predicted by analysis.replay" in text and "calibrated on this host" in text


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "model.no_such_key=1"], "no_such_key"),
        (["--set", 'model.builder="no_such_pkg.models:qnn"'], "model.builder"),
    ],
)
def test_bad_config_fails_as_train_does(tmp_path, capsys, extra, message):
    assert cli.main(["plan", "jobs/mnist_cut3.toml", *extra]) == 2
    planned = capsys.readouterr()
    assert cli.main(["train", "jobs/mnist_cut3.toml", *extra, "--out", str(tmp_path / "run")]) == 2
    trained = capsys.readouterr()
    assert planned.out == ""
    assert planned.err.count("\n") == 1 and message in planned.err
    assert planned.err == trained.err


@pytest.mark.parametrize("ranks", ["0", "1,0", "two", "-1"])
def test_bad_ranks(capsys, ranks):
    assert cli.main(["plan", "jobs/mnist_cut3.toml", f"--ranks={ranks}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpcqnn: error: --ranks:") and err.count("\n") == 1
