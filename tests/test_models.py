"""The QNN family's choices (feature map, ansatz, entangler, readout, initialisation) and user
builders, against Qiskit's own circuits and StatevectorEstimator."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit.library import zz_feature_map
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp, Statevector

from hpcqnn import DistributedEstimator
from hpcqnn.training.circuits import ANSATZES, CutQNN, built_model, cut_qnn
from hpcqnn.training.model import QNNClassifier
from tolerances import EXACT_ATOL


def test_default_model_is_unchanged():
    """RY encoding, RY RZ ladder, CX entangler, parity: gate for gate what it always was."""
    qnn = cut_qnn(4, cuts=1, layers=1)
    circuit = qnn.circuit
    ops = [(inst.operation.name, tuple(circuit.find_bit(q).index for q in inst.qubits)) for inst in circuit.data]
    assert ops == [("ry", (q,)) for q in range(4)] + [
        (gate, (q,)) for q in range(4) for gate in ("ry", "rz")
    ] + [("cx", (0, 1)), ("cx", (2, 3)), ("cx", (1, 2))]
    assert qnn.observable == SparsePauliOp("ZZZZ") and qnn.partition_labels == "AABB" and qnn.encoding == "angle"


def test_zz_feature_map_is_qiskits():
    """The 'zz' feature map with its encoded angles is qiskit's zz_feature_map (linear, one
    repetition) up to a global phase."""
    qnn = cut_qnn(4, cuts=0, layers=1, feature_map="zz", rotations="ry")
    x = np.random.default_rng(1).uniform(0, np.pi, (1, 4))
    angles = qnn.encode(x)[0]
    ours = qnn.circuit.copy()
    ours.data = ours.data[: 4 + 4 + 3]  # H, P, RZZ: the feature map alone
    ours = ours.assign_parameters(dict(zip(qnn.inputs, angles)))
    theirs = zz_feature_map(4, reps=1, entanglement="linear")
    theirs = theirs.assign_parameters(dict(zip(theirs.parameters, x[0])))
    assert Statevector(ours).equiv(Statevector(theirs))


@pytest.mark.parametrize("feature_map", ["ry", "zz"])
def test_input_gradients_through_the_encoding_match_finite_differences(feature_map):
    qnn = cut_qnn(4, cuts=1, layers=2, feature_map=feature_map, rotations="ry")
    model = QNNClassifier(qnn, DistributedEstimator(qnn.partition_labels, device="CPU"))
    reference = QNNClassifier(qnn, StatevectorEstimator())
    rng = np.random.default_rng(2)
    x = rng.uniform(0, np.pi, (2, 4))
    weights = rng.uniform(-np.pi, np.pi, model.num_weights)
    _, gradient = model.expectations_with_gradient(x, weights, "inputs")
    h = 1e-5
    for f in range(4):
        step = np.zeros(4)
        step[f] = h
        central = (reference.expectations(x + step, weights) - reference.expectations(x - step, weights)) / (2 * h)
        np.testing.assert_allclose(gradient[:, f], central, atol=1e-8, err_msg=f"feature {f}")


@pytest.mark.parametrize("ansatz", ANSATZES)
@pytest.mark.parametrize("readout", ["parity", "mean_z", "piece_parity"])
def test_every_ansatz_and_readout_cut_equals_uncut(ansatz, readout):
    qnn = cut_qnn(6, cuts=2, layers=2, pieces=3, ansatz=ansatz, readout=readout, feature_map="zz", entangler="rzz")
    params = np.random.default_rng(3).uniform(-np.pi, np.pi, (3, qnn.circuit.num_parameters))
    cut = DistributedEstimator(qnn.partition_labels, device="CPU").run([(qnn.circuit, qnn.observable, params)])
    expected = StatevectorEstimator().run([(qnn.circuit, qnn.observable, params)]).result()[0].data.evs
    np.testing.assert_allclose(cut.result()[0].data.evs, expected, atol=EXACT_ATOL)


def test_readouts():
    assert cut_qnn(4, 1, readout="mean_z").observable == SparsePauliOp(["IIIZ", "IIZI", "IZII", "ZIII"], [0.25] * 4)
    assert cut_qnn(4, 1, readout="piece_parity").observable == SparsePauliOp(["IIZZ", "ZZII"], [0.5, 0.5])
    terms = cut_qnn(4, 1, readout="terms", readout_terms=[("ZIIZ", 1.0), ("IXXI", -0.5)])
    assert terms.observable == SparsePauliOp(["ZIIZ", "IXXI"], [1.0, -0.5])
    with pytest.raises(ValueError, match="readout term 'ZZ' must be 4 letters"):
        cut_qnn(4, 1, readout="terms", readout_terms=[("ZZ", 1.0)])


@pytest.mark.parametrize("entangler", ["cx", "rzz"])
@pytest.mark.parametrize("cuts", [0, 1, 2])
@pytest.mark.parametrize("ansatz", ANSATZES)
def test_identity_blocks_start_as_the_identity(ansatz, cuts, entangler):
    """Each mirrored pair of layers undoes itself at initialisation: the model's state is the
    feature map's followed by the cut entanglers between the pairs (CX; RZZ start at 0)."""
    qnn = cut_qnn(4, cuts=cuts, layers=4, ansatz=ansatz, entangler=entangler, identity_blocks=True)
    weights = qnn.initial_weights(np.random.default_rng(4), "identity_blocks")
    assert np.count_nonzero(weights) > 0
    x = np.random.default_rng(5).uniform(0, np.pi, 4)
    bound = qnn.circuit.assign_parameters({**dict(zip(qnn.inputs, x)), **dict(zip(qnn.weights, weights))})
    expected = QuantumCircuit(4)
    for q in range(4):
        expected.ry(x[q], q)
    if entangler == "cx":
        for _ in range(cuts):
            expected.cx(1, 2)
    assert Statevector(bound).equiv(Statevector(expected))
    with pytest.raises(ValueError, match="needs a model built with identity_blocks=True"):
        cut_qnn(4, cuts=0, layers=2).initial_weights(np.random.default_rng(0), "identity_blocks")


def small_builder(num_qubits: int) -> CutQNN:
    """A user's model: RY inputs, one trainable RZZ across the halves, mean Z readout."""
    return cut_qnn(num_qubits, cuts=1, layers=1, rotations="ry", entangler="rzz", readout="mean_z")


def not_a_model(num_qubits: int):
    return QuantumCircuit(num_qubits)


def test_user_builders_are_loaded_and_checked():
    model = built_model("test_models:small_builder", 4)
    assert model.num_qubits == 4
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        built_model("no_such_module:f", 4)
    with pytest.raises(ValueError, match="has no function 'missing'"):
        built_model("test_models:missing", 4)
    with pytest.raises(ValueError, match="returned QuantumCircuit, not a CutQNN"):
        built_model("test_models:not_a_model", 4)
    with pytest.raises(ValueError, match="must look like 'package.module:function'"):
        built_model("test_models.small_builder", 4)
