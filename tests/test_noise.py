"""Noise: cut subexperiments on noisy simulators and fake devices, exact and sampled, and on a
user's SamplerV2. References: the noiseless estimator (an empty noise model), Aer's density
matrix of the uncut circuit with a noiseless crossing gate (CX-only noise leaves the cut's local
channels noiseless, so the two agree exactly), the analytic depolarizing factor of a known
circuit, and qiskit-addon-cutting's own pipeline on the same noisy AerSimulator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.circuit.library import UnitaryGate
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_addon_cutting import generate_cutting_experiments, partition_problem, reconstruct_expectation_values
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error, pauli_error
from qiskit_aer.primitives import SamplerV2
from qiskit_ibm_runtime.fake_provider import FakeManilaV2

from hpcqnn import DistributedEstimator, cli
from hpcqnn.cutting.noisy import read_through
from hpcqnn.errors import ConfigError, ExecutionConfigError
from hpcqnn.noise import depolarizing_model
from hpcqnn.run.config import config_differences, dump_config, parse_config
from tolerances import EXACT_ATOL

BASIS = ["rz", "sx", "x", "cx"]
SIGMAS = 5  # agreement within this many combined standard errors


def cx_noise(p: float) -> NoiseModel:
    model = NoiseModel(basis_gates=BASIS)
    model.add_all_qubit_quantum_error(depolarizing_error(p, 2), ["cx"])
    return model


def chain() -> tuple[QuantumCircuit, str, SparsePauliOp]:
    """Six qubits in three pieces, two CX cuts, trainable rotations everywhere."""
    theta = ParameterVector("t", 12)
    qc = QuantumCircuit(6)
    for q in range(6):
        qc.ry(theta[q], q)
    qc.cx(0, 1)
    qc.cx(2, 3)
    qc.cx(4, 5)
    qc.cx(1, 2)  # cut
    for q in range(6):
        qc.rx(theta[6 + q], q)
    qc.cx(3, 4)  # cut
    qc.cx(5, 4)
    qc.cx(0, 1)
    return qc, "AABBCC", SparsePauliOp(["ZZZZZZ", "XIIYIZ", "IIZZII"], [1.0, 0.5, -0.25])


def uncut_reference(circuit: QuantumCircuit, labels: str, observable: SparsePauliOp, model: NoiseModel) -> float:
    """Aer's density-matrix value of the bound ``circuit`` with ``model``, every gate between
    differently labelled qubits noiseless (a ``unitary`` no noise model names)."""
    reference = QuantumCircuit(circuit.num_qubits)
    for inst in circuit.data:
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        if len({labels[q] for q in qubits}) > 1:
            reference.append(UnitaryGate(inst.operation.to_matrix(), label="crossing"), qubits)
        else:
            single = QuantumCircuit(circuit.num_qubits)
            single.append(inst.operation, qubits)
            reference.compose(_transpiled(single), inplace=True)
    reference.save_expectation_value(observable, range(circuit.num_qubits))
    result = AerSimulator(method="density_matrix", noise_model=model).run(reference).result()
    return float(np.real(result.data()["expectation_value"]))


def _transpiled(circuit: QuantumCircuit) -> QuantumCircuit:
    return generate_preset_pass_manager(optimization_level=0, basis_gates=BASIS).run(circuit)


def two_measurements() -> tuple[QuantumCircuit, str, SparsePauliOp]:
    """Two cuts out of one partition, then gates on the measured qubits: subexperiments with two
    QPD measurements whose qubits go on (a record of only their parity must not keep the
    branches (0, 0) and (1, 1) coherent)."""
    theta = ParameterVector("t", 10)
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(theta[q], q)
        qc.rz(theta[4 + q], q)
    qc.cx(0, 2)
    qc.cx(1, 3)
    qc.cx(0, 1)
    qc.ry(theta[8], 0)
    qc.ry(theta[9], 1)
    return qc, "AABB", SparsePauliOp(["ZZZZ", "ZZXX", "YXZI"], [1.0, 0.5, 0.3])


@pytest.mark.parametrize("shape", [chain, two_measurements])
def test_an_empty_noise_model_gives_the_noiseless_values(shape):
    circuit, labels, observable = shape()
    rows = np.random.default_rng(1).uniform(-np.pi, np.pi, (5, circuit.num_parameters))
    noisy = DistributedEstimator(partition_labels=labels, noise_model=NoiseModel(basis_gates=BASIS))
    clean = DistributedEstimator(partition_labels=labels)
    got = noisy.run([(circuit, observable, rows)]).result()[0].data.evs
    want = clean.run([(circuit, observable, rows)]).result()[0].data.evs
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT_ATOL)
    assert noisy.program((circuit, observable, rows)).noisy is not None  # it did take the noisy path


def test_cx_noise_equals_the_uncut_density_matrix_with_a_noiseless_crossing_gate():
    circuit, labels, observable = chain()
    model = cx_noise(0.08)
    rows = np.random.default_rng(2).uniform(-np.pi, np.pi, (3, circuit.num_parameters))
    estimator = DistributedEstimator(partition_labels=labels, noise_model=model)
    result = estimator.run([(circuit, observable, rows)]).result()[0]
    want = [uncut_reference(circuit.assign_parameters(row), labels, observable, model) for row in rows]
    np.testing.assert_allclose(result.data.evs, want, rtol=0, atol=EXACT_ATOL)
    clean = DistributedEstimator(partition_labels=labels).run([(circuit, observable, rows)]).result()[0].data.evs
    assert np.max(np.abs(clean - result.data.evs)) > 0.01  # the noise moved them
    assert result.metadata["noise"] == "noise model on cx"


def known_circuit() -> QuantumCircuit:
    """CX(0,1), CX(2,3) inside the pieces, then the cut CX(1,2), on |0000>: <ZZZZ> = 1, and a
    depolarizing error of probability p after each of the two inner CX gates multiplies it by
    (1 - p) each (ZZZZ runs back through the cut CX to Z0 Z2 Z3, which neither error leaves
    alone)."""
    qc = QuantumCircuit(4)
    qc.cx(0, 1)
    qc.cx(2, 3)
    qc.cx(1, 2)
    return qc


@pytest.mark.parametrize("shots", [None, 40_000])
def test_depolarizing_noise_shrinks_zzzz_by_the_expected_factor(shots):
    p = 0.1
    estimator = DistributedEstimator(partition_labels="AABB", noise_model=cx_noise(p), shots=shots, seed=11)
    result = estimator.run([(known_circuit(), SparsePauliOp("ZZZZ"))]).result()[0]
    expected = (1 - p) ** 2
    if shots is None:
        assert result.data.evs == pytest.approx(expected, abs=EXACT_ATOL)
    else:
        assert abs(result.data.evs - expected) < SIGMAS * result.data.stds


def test_depolarizing_model_applies_its_rates():
    """``depolarizing_model``'s p2 alone behaves as ``cx_noise``; its readout flips every measured bit."""
    circuit = known_circuit()
    rates = DistributedEstimator(partition_labels="AABB", noise_model=depolarizing_model(0.0, 0.1))
    assert rates.run([(circuit, SparsePauliOp("ZZZZ"))]).result()[0].data.evs == pytest.approx(0.81, abs=EXACT_ATOL)
    uncut = QuantumCircuit(2)
    uncut.x(0)
    flips = DistributedEstimator(noise_model=depolarizing_model(0.0, 0.0, readout=0.1))
    # <Z0> = -1 read through a 10 % flip: -(1 - 2 * 0.1); <Z0 Z1> = -(1 - 0.2)**2
    evs = flips.run([(uncut, [SparsePauliOp("IZ"), SparsePauliOp("ZZ")])]).result()[0].data.evs
    np.testing.assert_allclose(evs, [-0.8, -0.64], rtol=0, atol=EXACT_ATOL)


def test_quantum_errors_on_measure_apply():
    model = NoiseModel(basis_gates=BASIS)
    model.add_all_qubit_quantum_error(pauli_error([("X", 0.3), ("I", 0.7)]), ["measure"])
    circuit = QuantumCircuit(1)
    circuit.rz(0.1, 0)
    value = DistributedEstimator(noise_model=model).run([(circuit, SparsePauliOp("Z"))]).result()[0].data.evs
    assert value == pytest.approx(1 - 2 * 0.3, abs=EXACT_ATOL)


def test_per_qubit_errors_stay_on_their_qubits_without_a_device():
    model = NoiseModel(basis_gates=BASIS)
    model.add_readout_error(ReadoutError([[0.6, 0.4], [0.4, 0.6]]), [3])
    circuit = known_circuit()
    observables = [SparsePauliOp("ZIII"), SparsePauliOp("IIIZ")]  # Z3, Z0
    for labels in (None, "AABB"):
        evs = DistributedEstimator(partition_labels=labels, noise_model=model).run([(circuit, observables)]).result()
        np.testing.assert_allclose(evs[0].data.evs, [0.2, 1.0], rtol=0, atol=EXACT_ATOL, err_msg=str(labels))


def test_read_through_applies_each_bits_confusion_matrix():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(8), size=4)
    matrices = rng.dirichlet(np.ones(2), size=(3, 2))  # [bit, true, read]
    full = np.kron(np.kron(matrices[2], matrices[1]), matrices[0])  # bit 2 is the most significant
    np.testing.assert_allclose(read_through(probabilities, matrices), probabilities @ full, rtol=0, atol=1e-15)


def addon_values(circuit, labels, observable, backend, layouts, shots: int, seeds: int) -> np.ndarray:
    """qiskit-addon-cutting's pipeline on AerSimulator with ``backend``'s noise, the pieces laid
    out where hpcqnn laid them: one value per seed."""
    problem = partition_problem(circuit, labels, observables=observable.paulis)
    experiments, coefficients = generate_cutting_experiments(problem.subcircuits, problem.subobservables, np.inf)
    model = NoiseModel.from_backend(backend)
    values = []
    for seed in range(seeds):
        sampler = SamplerV2(seed=seed, options={"backend_options": {"noise_model": model}})
        results = {}
        for label, circuits in experiments.items():
            manager = generate_preset_pass_manager(
                optimization_level=1, backend=backend, initial_layout=list(layouts[label]), seed_transpiler=0
            )
            results[label] = sampler.run(manager.run(circuits), shots=shots).result()
        reconstructed = reconstruct_expectation_values(results, coefficients, problem.subobservables)
        values.append(float(np.real(np.dot(reconstructed, observable.coeffs))))
    return np.array(values)


def four_qubits() -> tuple[QuantumCircuit, SparsePauliOp]:
    qc = QuantumCircuit(4)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.cx(2, 3)
    qc.ry(0.3, 3)
    qc.rx(0.7, 0)
    return qc, SparsePauliOp(["ZZZZ", "XIIZ", "IZZI"], [1.0, 0.5, 0.25])


@pytest.fixture(scope="module")
def manila_exact() -> tuple[float, DistributedEstimator]:
    circuit, observable = four_qubits()
    estimator = DistributedEstimator(partition_labels="AABB", backend="FakeManilaV2")
    return float(estimator.run([(circuit, observable)]).result()[0].data.evs), estimator


def test_a_fake_device_agrees_with_the_addons_pipeline_on_the_same_noisy_simulator(manila_exact):
    exact, estimator = manila_exact
    circuit, observable = four_qubits()
    program = estimator.program((circuit, observable))
    values = addon_values(circuit, "AABB", observable, FakeManilaV2(), dict(zip("AB", program.noisy.layouts)), 8000, 4)
    error = values.std(ddof=1) / np.sqrt(len(values))
    clean = DistributedEstimator(partition_labels="AABB").run([(circuit, observable)]).result()[0].data.evs
    assert abs(exact - values.mean()) < SIGMAS * error, (exact, values)
    assert clean - exact > 10 * error  # the device's noise is visible at this precision


def test_noisy_exact_is_the_mean_of_noisy_sampled_runs(manila_exact):
    exact, _ = manila_exact
    circuit, observable = four_qubits()
    sampled = DistributedEstimator(partition_labels="AABB", backend=FakeManilaV2(), shots=4000, seed=5)
    results = sampled.run([(circuit, observable, np.zeros((6, 0)))]).result()[0]
    evs, stds = results.data.evs, results.data.stds
    assert len(set(evs.tolist())) == len(evs)  # every row drew its own shots
    mean, error = evs.mean(), np.sqrt(np.sum(stds**2)) / len(evs)
    assert abs(mean - exact) < SIGMAS * error
    assert np.all(np.abs(evs - exact) < SIGMAS * stds)


def test_a_sampler_factory_runs_the_device_circuits(manila_exact):
    """The route to hardware: each subexperiment as its device circuit, mid-circuit measurements
    included, on Aer's SamplerV2 with the device's noise; agrees with the exact noisy value."""
    exact, _ = manila_exact
    circuit, observable = four_qubits()
    estimator = DistributedEstimator(
        partition_labels="AABB", backend="FakeManilaV2", sampler="hpcqnn.samplers:aer_fake_device", shots=8000
    )
    result = estimator.run([(circuit, observable)]).result()[0]
    assert abs(result.data.evs - exact) < SIGMAS * result.data.stds
    circuits = estimator.program((circuit, observable)).noisy.device_circuits
    assert any(register.name == "qpd" for c in circuits for register in c.cregs)  # mid-circuit QPD measurements


def test_a_parameter_free_circuit_draws_every_rows_shots_on_a_sampler():
    circuit = QuantumCircuit(4)
    circuit.x(0)
    circuit.cx(0, 2)  # cut: partition B has no parameters either
    estimator = DistributedEstimator(
        partition_labels="AABB", backend="FakeManilaV2", sampler="hpcqnn.samplers:aer_fake_device", shots=2000
    )
    exact = DistributedEstimator(partition_labels="AABB", backend="FakeManilaV2")
    observable = SparsePauliOp("IZIZ")  # Z0 Z2: 1 ideally
    want = exact.run([(circuit, observable)]).result()[0].data.evs
    result = estimator.run([(circuit, observable, np.zeros((3, 0)))]).result()[0]
    assert len(set(result.data.evs.tolist())) == 3  # each row its own shots
    assert np.all(np.abs(result.data.evs - want) < SIGMAS * result.data.stds)


def test_an_uncut_circuit_runs_noisy_as_one_piece():
    circuit = known_circuit()
    result = DistributedEstimator(noise_model=cx_noise(0.1)).run([(circuit, SparsePauliOp("ZZZZ"))]).result()[0]
    # all three CX noisy now: ZZZZ -> (1 - p) per CX whose output Pauli it touches
    want = uncut_reference(circuit, "AAAA", SparsePauliOp("ZZZZ"), cx_noise(0.1))
    assert result.data.evs == pytest.approx(want, abs=EXACT_ATOL)


def not_a_sampler():
    return "a sampler"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "FakeNowhereV2"}, "unknown backend 'FakeNowhereV2'"),
        ({"backend": 5}, "backend must be a BackendV2 or a device name"),
        ({"noise_model": "depolarizing"}, "noise_model must be a qiskit_aer.noise.NoiseModel"),
        ({"sampler": "no_such_module:factory", "shots": 10}, "cannot import 'no_such_module'"),
        ({"sampler": "hpcqnn.samplers:nothing", "shots": 10}, "has no function 'nothing'"),
        ({"sampler": "hpcqnn.samplers", "shots": 10}, "'package.module:function'"),
        ({"sampler": "hpcqnn.samplers:aer_fake_device"}, "give shots=N"),
        (
            {"sampler": "hpcqnn.samplers:aer_fake_device", "noise_model": NoiseModel(), "shots": 10},
            "either sampler=",
        ),
    ],
)
def test_bad_noise_options_are_refused_when_the_estimator_is_made(options, message):
    with pytest.raises(ExecutionConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DistributedEstimator(**options)


def test_a_factory_that_returns_no_sampler_is_named():
    with pytest.raises(ExecutionConfigError, match="returned a str, not a SamplerV2"):
        DistributedEstimator(partition_labels="AABB", sampler="test_noise:not_a_sampler", shots=10)


def test_a_noise_model_on_gates_the_subexperiments_never_use_is_refused():
    model = NoiseModel(basis_gates=BASIS)
    model.add_all_qubit_quantum_error(depolarizing_error(0.1, 2), ["swap"])
    estimator = DistributedEstimator(partition_labels="AABB", noise_model=model)
    with pytest.raises(ExecutionConfigError, match="puts errors on swap, which the transpiled subexperiments never"):
        estimator.run([(known_circuit(), SparsePauliOp("ZZZZ"))])


def test_a_piece_wider_than_the_device_is_refused():
    circuit = QuantumCircuit(7)
    circuit.cx(0, 6)
    estimator = DistributedEstimator(partition_labels="AAAAAAB", backend="FakeManilaV2")
    with pytest.raises(ExecutionConfigError, match="partition 'A' has 6 qubits, more than the 5 of fake_manila"):
        estimator.run([(circuit, SparsePauliOp("Z" * 7))])


def test_a_subexperiment_too_wide_for_a_density_matrix_is_refused():
    circuit = QuantumCircuit(16)
    for q in range(15):
        circuit.cx(q, q + 1)
    estimator = DistributedEstimator(partition_labels="A" * 15 + "B", noise_model=cx_noise(0.01))
    with pytest.raises(ExecutionConfigError, match="more than the 13 whose density matrix"):
        estimator.run([(circuit, SparsePauliOp("Z" * 16))])


NOISE_CONFIG = """
[run]
name = "noisy"
[data]
features = 4
[model]
layers = 2
cuts = 1
rotations = "ry"
[execution]
mode = "exact"
[execution.noise]
p2 = 0.02
readout = 0.01
[training]
epochs = 1
batch_size = 40
[evaluation]
gaussian_sigmas = [0.1]
gaussian_draws = 1
fgsm_epsilons = [0.1]
"""


def test_a_config_saved_before_the_noise_table_resumes_as_noiseless():
    config = parse_config(NOISE_CONFIG.split("[execution.noise]")[0] + "[training]\nepochs = 1\n")
    old_text = "\n".join(block for block in dump_config(config).split("\n\n") if "execution.noise" not in block)
    assert config_differences(old_text, dump_config(config)) == []
    changed = dump_config(parse_config(dump_config(config), ["execution.noise.p2=0.1"]))
    assert config_differences(old_text, changed) == ["execution.noise.p2 = 0.0 -> 0.1"]


def test_a_noise_key_error_names_its_override():
    with pytest.raises(ConfigError, match=r"^--set execution.noise.sampler=a:b: "):
        parse_config(NOISE_CONFIG, ["execution.noise.sampler=a:b"])


def test_the_noise_table_parses_dumps_and_overrides():
    config = parse_config(NOISE_CONFIG, ["execution.noise.backend=FakeManilaV2"])
    assert (config.noise.p2, config.noise.readout, config.noise.backend) == (0.02, 0.01, "FakeManilaV2")
    assert "[execution.noise]" in dump_config(config)
    assert parse_config(dump_config(config)) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["execution.noise.p2=1.5"], "execution.noise.p2 must be >= 0 and <= 1"),
        (["execution.noise.readout=0.6"], "execution.noise.readout must be >= 0 and <= 0.5"),
        (["execution.noise.sampler=hpcqnn.samplers:aer_fake_device"], 'needs execution.mode = "sampled"'),
        (["execution.noise.colour=red"], "unknown key execution.noise.colour"),
    ],
)
def test_bad_noise_tables_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(NOISE_CONFIG, overrides)


def test_an_unknown_backend_in_a_config_stops_train_before_any_work(tmp_path, capsys):
    config = tmp_path / "noisy.toml"
    config.write_text(NOISE_CONFIG)
    out = tmp_path / "run"
    code = cli.main(["train", str(config), "--out", str(out), "--set", "execution.noise.backend=FakeMainla"])
    assert code == 2
    assert "[execution.noise]: unknown backend 'FakeMainla'" in capsys.readouterr().err
    assert not out.exists()


def test_a_noisy_training_run_records_its_noise(tmp_path):
    config = tmp_path / "noisy.toml"
    config.write_text(NOISE_CONFIG)
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["noise"] == "noise model on cx, measure"
    assert results["config"]["execution.noise"]["p2"] == 0.02
    assert "[execution.noise]" in (out / "config.toml").read_text()


def test_bench_noise_prints_each_methods_cost(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench-noise", "--qubits", "2", "--cuts", "1", "--rows", "2", "--queries", "1", "--modes", "exact"]
    assert cli.main([*argv, "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["method"] for r in results] == ["statevector", "density matrix", "density matrix"]
    assert results[0]["ratio_to_noiseless"] == 1.0 and all(r["seconds_per_query"] > 0 for r in results)
    assert "FakeManilaV2" in capsys.readouterr().out


def test_bench_noise_width_keeps_less_than_the_ideal_value(tmp_path):
    out = tmp_path / "width.json"
    assert cli.main(["bench-noise-width", "--widths", "4", "--backend", "FakeManilaV2", "--json", str(out)]) == 0
    (entry,) = json.loads(out.read_text())["results"]
    assert entry["ideal"] == pytest.approx(1.0, abs=EXACT_ATOL)  # the mirrored model is the identity
    assert 0.5 < entry["cut"] < 0.99 and 0.5 < entry["uncut"] < 0.99
    assert entry["uncut_method"] == "exact (density matrix)"


def test_bench_noise_width_refuses_odd_widths(capsys):
    assert cli.main(["bench-noise-width", "--widths", "5"]) == 2
    assert "--widths must be even numbers >= 4" in capsys.readouterr().err


def test_a_generic_backend_by_name_runs_with_its_noise():
    circuit, observable = four_qubits()
    estimator = DistributedEstimator(partition_labels="AABB", backend="GenericBackendV2(5)")
    noisy = estimator.run([(circuit, observable)]).result()[0]
    clean = DistributedEstimator(partition_labels="AABB").run([(circuit, observable)]).result()[0].data.evs
    assert 0.01 < clean - noisy.data.evs < 0.5
    assert noisy.metadata["noise"].startswith("backend generic_backend_5q (5 qubits)")
