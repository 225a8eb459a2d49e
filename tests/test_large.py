"""The large QNN family: 20-80 qubits in 10-qubit pieces, checked against Aer's matrix product
state simulator of the uncut circuit (exact) and within reported errors (sampled)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qiskit.quantum_info import SparsePauliOp
from qiskit_addon_cutting import generate_cutting_experiments, partition_problem
from qiskit_aer.primitives import EstimatorV2 as AerEstimator

from analysis import large
from hpcqnn import DistributedEstimator, cli
from hpcqnn.tools.bench import addon_subexperiments, bench_models
from hpcqnn.training.circuits import cut_qnn
from tolerances import EXACT_ATOL


def family(qubits: int):
    return cut_qnn(qubits, cuts=1, layers=2, pieces=qubits // 10)


def observables(n: int) -> list[SparsePauliOp]:
    """Local and long-range terms: Z...Z of the family is ~0 at these widths."""
    return [
        family(n).observable,
        SparsePauliOp.from_sparse_list([("Z", [0], 1.0), ("ZZ", [9, 10], 0.7), ("Z", [n - 1], -0.5)], n),
        SparsePauliOp.from_sparse_list([("XX", [n // 2 - 1, n // 2], 0.8), ("ZIZ", [3, 4, 5], 0.3)], n),
    ]


def mps_values(circuit, observables, rows) -> np.ndarray:
    estimator = AerEstimator(options={"backend_options": {"method": "matrix_product_state"}})
    return estimator.run([(circuit, observables, rows[:, None, :])], precision=0).result()[0].data.evs


@pytest.mark.parametrize("qubits,subexperiments", [(20, 4 + 4), (40, 4 + 16 + 16 + 4), (80, 4 + 6 * 16 + 4)])
def test_exact_matches_matrix_product_state(qubits: int, subexperiments: int):
    model = family(qubits)
    rows = np.random.default_rng(qubits).uniform(-np.pi, np.pi, (3, model.circuit.num_parameters))
    result = DistributedEstimator(partition_labels=model.partition_labels).run(
        [(model.circuit, observables(qubits), rows[:, None, :])]
    ).result()[0]
    expected = mps_values(model.circuit, observables(qubits), rows)
    assert np.max(np.abs(expected[:, 1:])) > 0.05  # the check is not of zeros against zeros
    np.testing.assert_allclose(result.data.evs, expected, rtol=0, atol=EXACT_ATOL)
    assert result.metadata["num_partitions"] == qubits // 10
    assert result.metadata["num_subexperiments"] == subexperiments
    ends, middle = [4], [16] * (qubits // 10 - 2)
    assert result.metadata["subexperiments_per_partition"] == ends + middle + ends


def test_sampled_40_qubits_within_errors():
    model = family(40)
    rows = np.random.default_rng(1).uniform(-np.pi, np.pi, (3, model.circuit.num_parameters))
    estimator = DistributedEstimator(partition_labels=model.partition_labels, shots=2000, seed=4)
    result = estimator.run([(model.circuit, observables(40), rows[:, None, :])]).result()[0]
    expected = mps_values(model.circuit, observables(40), rows)
    assert np.all(result.data.stds > 0)
    assert np.all(np.abs(result.data.evs - expected) <= 5 * result.data.stds), (
        result.data.evs - expected
    ) / result.data.stds


@pytest.mark.parametrize("qubits,count", [(20, 12), (30, 108)])
def test_addon_subexperiment_count(qubits: int, count: int):
    """The count the benchmark reports for the addon is what the addon generates (and the
    12 / 108 of the qTPU artifact logs)."""
    model = family(qubits)
    problem = partition_problem(model.circuit, model.partition_labels, model.observable.paulis)
    generated, _ = generate_cutting_experiments(problem.subcircuits, problem.subobservables, np.inf)
    assert sum(len(experiments) for experiments in generated.values()) == count == addon_subexperiments(model)


def test_bench_of_the_family_and_its_figure(tmp_path):
    """``hpcqnn bench --piece-qubits`` reports per-partition counts, the addon's count and peak
    memory; ``analysis.large`` turns the report into a table and a non-empty figure."""
    report = tmp_path / "bench.json"
    args = ["bench", "--qubits", "20,30", "--piece-qubits", "10", "--cuts", "1", "--layers", "2", "--queries", "2",
            "--shots", "200", "--reference-max-qubits", "20", "--json", str(report)]
    assert cli.main(args) == 0
    results = json.loads(report.read_text())["results"]
    ours = {(e["qubits"], e["pipeline"]): e for e in results}
    assert sorted(ours) == [(20, "addon reference"), (20, "hpcqnn exact"), (20, "hpcqnn sampled"),
                            (30, "hpcqnn exact"), (30, "hpcqnn sampled")]
    for width, parts, addon in ((20, [4, 4], 12), (30, [4, 16, 4], 108)):
        entry = ours[width, "hpcqnn sampled"]
        assert entry["subexperiments_per_partition"] == parts and entry["addon_subexperiments"] == addon
        assert len(entry["peak_memory_mb_per_rank"]) == 1 and entry["peak_memory_mb_per_rank"][0] > 0
    assert ours[20, "addon reference"]["subexperiments"] == 12
    out = tmp_path / "figures"
    assert large.main([str(report), "--out", str(out)]) == 0
    assert "| 30 | 3 | hpcqnn exact | 1 | 24 (4+16+4) | 108 |" in (out / "large_qnn.md").read_text()
    assert all((out / f"large_qnn.{ext}").stat().st_size > 1000 for ext in ("png", "pdf"))


def test_bench_settings_name_the_layers_their_model_has():
    """A cut count above ``--layers`` gets one layer per cut; the setting (and so every run
    directory's config) records the layers the model really has."""
    built = bench_models([6], [0, 2, 4], None, 3)
    assert [s["layers"] for s, _ in built] == [3, 3, 4]
    assert [len(model.weights) for _, model in built] == [3 * 6 * 2, 3 * 6 * 2, 4 * 6 * 2]
