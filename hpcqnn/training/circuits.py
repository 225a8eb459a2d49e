"""The QNN circuit family used by the benchmark and the classifiers, and user-built models.

``n`` qubits in ``pieces`` consecutive blocks (two halves by default; block ``k`` holds qubits
``[k n / pieces, (k + 1) n / pieces)``). Each part can be chosen:

- the **feature map**: ``"ry"`` (RY(x_i) on qubit i) or ``"zz"`` (the ZZ feature map, one
  repetition: H, P(2 x_i), and RZZ(2 (pi - x_i)(pi - x_j)) on neighbouring qubits, which is CX .
  P . CX up to a phase). The circuit's input parameters are the gate angles; ``CutQNN.encode``
  turns features into them, so parameter-shift input gradients stay exact (chain rule);
- the **ansatz**, ``layers`` layers inside each block: ``"ladder"`` (``rotations`` RY or RY RZ
  on every qubit, then a CX ladder), ``"real_amplitudes"`` (RY, CX ladder; a final RY layer) or
  ``"efficient_su2"`` (RY RZ, CX ladder; a final RY RZ layer);
- the **entangler** across blocks: ``cuts`` gates join every pair of neighbouring blocks (the last
  qubit of one and the first of the next), one after each of the first ``cuts`` layers (with
  ``identity_blocks``, after each of the first ``cuts`` pairs of layers): CX
  (``"cx"``) or trainable RZZ(w) (``"rzz"``, each its own weight, after the ansatz weights), so the
  same circuit is the uncut baseline or a cut problem with ``cuts x (pieces - 1)`` gate cuts
  (labels ``"AA..BB..CC.."``, one letter per block);
- the **readout**: ``"parity"`` (Z on every qubit), ``"mean_z"`` (the mean of single-qubit Z),
  ``"piece_parity"`` (the mean over blocks of each block's parity) or Pauli ``terms`` with weights;
- ``identity_blocks``: every second layer mirrors the one before (its CX ladder reversed, then its
  rotations in reverse order), so that with the mirrored weights negated (``init =
  "identity_blocks"``) each pair of layers is the identity at the start of training; the cut
  entanglers stand between pairs (CX ones stay, trainable RZZ ones start at 0, the identity).

A user's own model comes from ``load_builder("package.module:function")``: the function takes
the qubit count and returns a ``CutQNN``.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.quantum_info import SparsePauliOp

from hpcqnn.options import ANSATZES, ENTANGLERS, FEATURE_MAPS, INITS, READOUTS
from hpcqnn.plugins import import_function

ROTATIONS = {"ry": ("ry",), "ryrz": ("ry", "rz")}


@dataclass(frozen=True)
class CutQNN:
    """A QNN circuit with its input and weight parameters, readout observable and partition
    labels. ``encoding`` says how features become the input angles (``encode``): ``"angle"``
    (input i is feature i) or ``"zz"`` (the ZZ feature map's gate angles). ``mirrors`` pairs
    each weight of a mirrored layer with the weight it undoes (``initial_weights``)."""

    circuit: QuantumCircuit
    inputs: Sequence[Parameter]
    weights: Sequence[Parameter]
    observable: SparsePauliOp
    partition_labels: str
    encoding: str = "angle"
    mirrors: tuple[tuple[int, int], ...] = field(default=())

    @property
    def num_qubits(self) -> int:
        return self.circuit.num_qubits

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Input angles [examples, inputs] of features [examples, qubits]."""
        if self.encoding == "angle":
            return features
        pairs = np.pi - features
        return np.concatenate([2 * features, 2 * pairs[:, :-1] * pairs[:, 1:]], axis=1)

    def encode_jacobian(self, features: np.ndarray) -> np.ndarray:
        """d angle / d feature [examples, inputs, features]."""
        n, q = features.shape
        if self.encoding == "angle":
            return np.broadcast_to(np.eye(q), (n, q, q))
        jacobian = np.zeros((n, 2 * q - 1, q))
        jacobian[:, np.arange(q), np.arange(q)] = 2
        pairs = np.pi - features
        i = np.arange(q - 1)
        jacobian[:, q + i, i] = -2 * pairs[:, 1:]
        jacobian[:, q + i, i + 1] = -2 * pairs[:, :-1]
        return jacobian

    def initial_weights(self, rng: np.random.Generator, init: str = "uniform") -> np.ndarray:
        """Initial weights: ``"uniform"`` in [-pi, pi), ``"small"`` in [-0.1, 0.1), or
        ``"identity_blocks"``: uniform, then every mirrored weight the negative of its pair
        (each mirrored pair of layers is the identity) and the others 0."""
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if init == "small":
            return rng.uniform(-0.1, 0.1, len(self.weights))
        weights = rng.uniform(-np.pi, np.pi, len(self.weights))
        if init == "identity_blocks":
            if not self.mirrors:
                raise ValueError(
                    "init = 'identity_blocks' needs a model built with identity_blocks=True and at least two layers "
                    "(a layer and its mirror)"
                )
            mirrored = np.zeros(len(self.weights))
            for source, target in self.mirrors:
                mirrored[source], mirrored[target] = weights[source], -weights[source]
            return mirrored
        return weights


def cut_qnn(
    num_qubits: int,
    cuts: int,
    layers: int = 3,
    rotations: str = "ryrz",
    pieces: int = 2,
    entangler: str = "cx",
    feature_map: str = "ry",
    ansatz: str = "ladder",
    readout: str = "parity",
    readout_terms: Sequence[tuple[str, float]] = (),
    identity_blocks: bool = False,
) -> CutQNN:
    """Build the QNN of ``pieces`` blocks with ``cuts`` entanglers between neighbouring blocks
    (see the module docstring for the choices)."""
    for name, value, allowed in (
        ("rotations", rotations, tuple(ROTATIONS)), ("entangler", entangler, ENTANGLERS),
        ("feature_map", feature_map, FEATURE_MAPS), ("ansatz", ansatz, ANSATZES), ("readout", readout, READOUTS),
    ):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if num_qubits < 2:
        raise ValueError(f"num_qubits must be >= 2, got {num_qubits}")
    if not 2 <= pieces <= min(num_qubits, len(string.ascii_uppercase)):
        raise ValueError(
            f"pieces must be between 2 and min(num_qubits, 26) = {min(num_qubits, 26)}, got {pieces}"
        )
    if cuts < 0:
        raise ValueError(f"cuts must be >= 0, got {cuts}")
    if layers < cuts * (2 if identity_blocks else 1):
        per = "pair of layers (identity_blocks)" if identity_blocks else "layer"
        raise ValueError(f"layers ({layers}) must allow cuts ({cuts}): one cut gate per {per}")
    bounds = [k * num_qubits // pieces for k in range(pieces + 1)]
    blocks = list(zip(bounds, bounds[1:]))
    gates = {"ladder": ROTATIONS[rotations], "real_amplitudes": ("ry",), "efficient_su2": ("ry", "rz")}[ansatz]
    final = ansatz != "ladder"  # Qiskit's RealAmplitudes and EfficientSU2 end with a rotation layer
    ansatz_weights = len(gates) * num_qubits * (layers + final)
    weights = ParameterVector("w", ansatz_weights + (cuts * (pieces - 1) if entangler == "rzz" else 0))
    name = f"cut_qnn_{num_qubits}q_{cuts}c" + (f"_{pieces}p" if pieces != 2 else "")
    name += "_rzz" if entangler == "rzz" else ""
    qc = QuantumCircuit(num_qubits, name=name)
    inputs = _feature_map(qc, feature_map)

    w = iter(range(ansatz_weights))
    entangler_weights = iter(weights[ansatz_weights:])
    mirrors: list[tuple[int, int]] = []
    layer_weights: list[list[int]] = []  # per layer, its weight indices in gate order

    def rotation_layer(order: Sequence[str], mirror_of: list[int] | None = None) -> list[int]:
        used = []
        for q in range(num_qubits):
            for gate in order:
                k = next(w)
                getattr(qc, gate)(weights[k], q)
                used.append(k)
        if mirror_of is not None:  # reversed gate order per qubit: pair each with the weight it undoes
            per_qubit = len(order)
            for q in range(num_qubits):
                source = mirror_of[q * per_qubit : (q + 1) * per_qubit]
                mirrors.extend(zip(source, reversed(used[q * per_qubit : (q + 1) * per_qubit])))
        return used

    def ladder(reverse: bool = False) -> None:
        pairs = [(q, q + 1) for lo, hi in blocks for q in range(lo, hi - 1)]
        for a, b in reversed(pairs) if reverse else pairs:
            qc.cx(a, b)

    for layer in range(layers):
        if identity_blocks and layer % 2 == 1:
            ladder(reverse=True)
            layer_weights.append(rotation_layer(gates[::-1], mirror_of=layer_weights[-1]))
        else:
            layer_weights.append(rotation_layer(gates))
            ladder()
        joins = layer % 2 == 1 and layer // 2 < cuts if identity_blocks else layer < cuts
        if joins:
            for boundary in bounds[1:-1]:
                if entangler == "rzz":
                    qc.rzz(next(entangler_weights), boundary - 1, boundary)
                else:
                    qc.cx(boundary - 1, boundary)
    if final:
        rotation_layer(gates)
    labels = "".join(string.ascii_uppercase[k] * (hi - lo) for k, (lo, hi) in enumerate(blocks))
    observable = _readout(readout, num_qubits, blocks, readout_terms)
    return CutQNN(qc, inputs, weights, observable, labels, "zz" if feature_map == "zz" else "angle", tuple(mirrors))


def _feature_map(qc: QuantumCircuit, feature_map: str) -> ParameterVector:
    n = qc.num_qubits
    if feature_map == "ry":
        inputs = ParameterVector("x", n)
        for q in range(n):
            qc.ry(inputs[q], q)
        return inputs
    inputs = ParameterVector("x", 2 * n - 1)  # P angles, then the neighbouring pairs' RZZ angles
    qc.h(range(n))
    for q in range(n):
        qc.p(inputs[q], q)
    for q in range(n - 1):
        qc.rzz(inputs[n + q], q, q + 1)
    return inputs


def _readout(readout: str, n: int, blocks: list[tuple[int, int]], terms: Sequence[tuple[str, float]]) -> SparsePauliOp:
    if readout == "parity":
        return SparsePauliOp("Z" * n)
    if readout == "mean_z":
        return SparsePauliOp.from_sparse_list([("Z", [q], 1.0 / n) for q in range(n)], n)
    if readout == "piece_parity":
        return SparsePauliOp.from_sparse_list([("Z" * (hi - lo), list(range(lo, hi)), 1.0 / len(blocks))
                                               for lo, hi in blocks], n)
    if not terms:
        raise ValueError("readout 'terms' needs readout_terms: (Pauli label, weight) pairs")
    for label, _ in terms:
        if len(label) != n or set(label) - set("IXYZ"):
            raise ValueError(f"readout term {label!r} must be {n} letters of I, X, Y, Z (one per qubit)")
    return SparsePauliOp([label for label, _ in terms], [weight for _, weight in terms])


def load_builder(spec: str) -> Callable[[int], CutQNN]:
    """The function named by ``"package.module:function"``, which builds a ``CutQNN`` from the
    qubit count; a ``ValueError`` naming what failed."""
    return import_function(spec, "model.builder")


def built_model(spec: str, num_qubits: int) -> CutQNN:
    """Call the builder ``spec`` and check what it returned."""
    model = load_builder(spec)(num_qubits)
    if not isinstance(model, CutQNN):
        raise ValueError(f"model.builder {spec!r} returned {type(model).__name__}, not a CutQNN")
    parameters = set(model.circuit.parameters)
    if model.circuit.num_qubits != num_qubits or len(model.partition_labels) != num_qubits:
        raise ValueError(
            f"model.builder {spec!r}: the circuit has {model.circuit.num_qubits} qubits and "
            f"{len(model.partition_labels)} partition labels; data.features = {num_qubits} needs both"
        )
    if set(model.inputs) | set(model.weights) != parameters or set(model.inputs) & set(model.weights):
        raise ValueError(f"model.builder {spec!r}: inputs and weights must split the circuit's parameters")
    if model.encoding == "angle" and len(model.inputs) != num_qubits:
        raise ValueError(f"model.builder {spec!r}: {len(model.inputs)} inputs for {num_qubits} features")
    return model
