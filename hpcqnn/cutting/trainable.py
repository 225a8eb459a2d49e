"""Trainable cut gates: two-qubit rotations whose angle is a parameter expression.

RZZ, RXX, RYY, RZX, CRX, CRY, CRZ and CP are each single-qubit gates around one RZZ(phi), phi an
affine function of the gate's angle (``canonical_rzz``). The single-qubit gates stay in their
partitions; the RZZ is cut. Its QPD (Mitarai and Fujii, as qiskit-addon-cutting builds it) has the
same local operations at every angle; only the coefficients move, each a combination of
cos^2(phi/2), sin^2(phi/2) and sin(phi/2)cos(phi/2). So a plan is built once with the RZZ at a
placeholder angle, and every query turns its rows' angles into per-row kernels (``CutAngle``).
An angle affine in the parameters (``2*x + y``) is evaluated for all rows at once; any other
expression (the ZZ feature map's ``2*(pi - x)*(pi - y)``) is bound once per distinct row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterExpression
from qiskit.circuit.library import RZZGate
from qiskit_addon_cutting.qpd import QPDBasis

from hpcqnn.errors import CutPlanError

#: Parameterised two-qubit gates that can be cut with their angle unbound.
TRAINABLE_CUT_GATES = ("rzz", "rxx", "ryy", "rzx", "crx", "cry", "crz", "cp")

#: Where the plan's RZZ stands while the addon builds its QPD basis (no coefficient vanishes).
PLACEHOLDER_ANGLE = 1.0

#: The angle functions every coefficient of a cut RZZ(phi) combines.
FUNCTIONS = 3

#: The largest sampling overhead of a cut RZZ (at phi = pi/2 + k pi).
MAX_GAMMA = 3.0


def has_unbound(op) -> bool:
    """Whether instruction ``op`` has a parameter with unbound symbols (Qiskit's standard gates
    answer ``is_parameterized()`` with False even then)."""
    return any(isinstance(p, ParameterExpression) and p.parameters for p in getattr(op, "params", ()))


def angle_functions(phi: np.ndarray) -> np.ndarray:
    """[..., FUNCTIONS]: cos^2(phi/2), sin^2(phi/2), sin(phi/2)cos(phi/2)."""
    c, s = np.cos(np.asarray(phi) / 2), np.sin(np.asarray(phi) / 2)
    return np.stack([c * c, s * s, s * c], axis=-1)


def rzz_coefficient_map() -> np.ndarray:
    """[QPD terms, FUNCTIONS]: the addon's coefficients of RZZ(phi) as ``map @ angle_functions(phi)``,
    fitted at a few angles and checked exact at others (the addon fixes the signs)."""
    fit, check = np.array([0.3, 1.1, 2.0, -0.7]), np.array([2.9, -1.9])

    def coefficients(angles: np.ndarray) -> np.ndarray:
        return np.array([QPDBasis.from_instruction(RZZGate(float(a))).coeffs for a in angles])

    mapping, *_ = np.linalg.lstsq(angle_functions(fit), coefficients(fit), rcond=None)
    if not np.allclose(angle_functions(check) @ mapping, coefficients(check), atol=1e-12):
        raise CutPlanError("internal: the RZZ QPD coefficients are not combinations of the angle functions")
    return np.where(np.abs(mapping) < 1e-12, 0.0, mapping).T  # fitting noise would give shots to zero terms


@dataclass(frozen=True, eq=False)
class CutAngle:
    """A trainable cut RZZ(phi), phi an ``expression`` of the plan parameters in ``columns``
    (``parameters[i]`` is column ``columns[i]``); where it is affine, ``slopes`` and ``offset``
    give ``phi = params[:, columns] @ slopes + offset``, else ``slopes`` is None.
    ``kernels[f]`` is the cut's kernel (``plan.CutPlan``) of angle function ``f``: its kernel at
    phi is ``sum_f angle_functions(phi)[f] * kernels[f]``."""

    expression: ParameterExpression
    parameters: tuple[Parameter, ...]
    columns: np.ndarray
    slopes: np.ndarray | None
    offset: float
    kernels: np.ndarray  # [FUNCTIONS, side-0 channels, side-1 channels]
    coefficients: np.ndarray  # [QPD terms, FUNCTIONS] (``rzz_coefficient_map``)

    def gammas(self, params: np.ndarray) -> np.ndarray:
        """The cut's sampling overhead (sum of |QPD coefficients|, 1 + 2|sin phi|) per row."""
        return np.abs(angle_functions(self.angles(params)) @ self.coefficients.T).sum(axis=-1)

    def angles(self, params: np.ndarray) -> np.ndarray:
        """phi of every row of ``params`` [rows, plan parameters]."""
        values = params[:, self.columns]
        if self.slopes is not None:
            return values @ self.slopes + self.offset
        distinct, inverse = np.unique(values, axis=0, return_inverse=True)
        bound = [float(self.expression.bind(dict(zip(self.parameters, row)))) for row in distinct]
        return np.array(bound)[inverse.reshape(-1)]

    def kernel(self, params: np.ndarray) -> np.ndarray:
        """The cut's kernel of every row [rows, side-0 channels, side-1 channels]."""
        return np.tensordot(angle_functions(self.angles(params)), self.kernels, axes=1)


def cut_angle(
    expression: ParameterExpression, column: dict[Parameter, int], kernels: np.ndarray, coefficients: np.ndarray
) -> CutAngle:
    """The ``CutAngle`` of a cut RZZ's angle ``expression`` over the circuit's parameters
    (``column[p]``: the plan column of parameter ``p``)."""
    parameters = tuple(sorted(expression.parameters, key=lambda p: column[p]))
    columns = np.array([column[p] for p in parameters], dtype=np.int64)
    form = affine_form(expression, parameters)
    slopes, offset = (None, 0.0) if form is None else form
    return CutAngle(expression, parameters, columns, slopes, offset, kernels, coefficients)


def affine_form(expression: ParameterExpression, parameters: Sequence[Parameter]) -> tuple[np.ndarray, float] | None:
    """``(slopes, offset)`` with ``expression = values @ slopes + offset`` over ``parameters``
    (its parameters, in that order), where it is affine in them; else None."""
    slopes = []
    for parameter in parameters:
        try:
            slope = expression.gradient(parameter)
        except RuntimeError:  # no symbolic derivative (sign, ...): not affine
            return None
        if isinstance(slope, ParameterExpression) and slope.parameters:
            return None
        slopes.append(float(slope))
    return np.array(slopes), float(expression.bind({p: 0.0 for p in parameters}))


def canonical_rzz(name: str, theta: ParameterExpression) -> QuantumCircuit:
    """Two-qubit circuit equal to gate ``name``(theta) up to a global phase, whose only two-qubit
    gate is one RZZ (the other gates act on one qubit each)."""
    qc = QuantumCircuit(2)
    control, target = 0, 1
    if name == "rzz":
        qc.rzz(theta, 0, 1)
    elif name == "rxx":
        qc.h([0, 1])
        qc.rzz(theta, 0, 1)
        qc.h([0, 1])
    elif name == "ryy":  # (S H) Z (S H)^dagger = Y
        qc.sdg([0, 1])
        qc.h([0, 1])
        qc.rzz(theta, 0, 1)
        qc.h([0, 1])
        qc.s([0, 1])
    elif name == "rzx":
        qc.h(1)
        qc.rzz(theta, 0, 1)
        qc.h(1)
    elif name in ("crz", "crx", "cry", "cp"):
        # CRZ(t) = RZ_target(t/2) RZZ(-t/2); CRX, CRY conjugate the target; CP(t) is CRZ(t) times
        # RZ_control(t/2) up to phase
        into_z = {"crx": ["h"], "cry": ["sdg", "h"]}.get(name, [])
        for gate in into_z:
            getattr(qc, gate)(target)
        qc.rz(theta / 2, target)
        qc.rzz(-theta / 2, control, target)
        for gate in reversed(into_z):
            getattr(qc, {"sdg": "s", "h": "h"}[gate])(target)
        if name == "cp":
            qc.rz(theta / 2, control)
    else:
        raise CutPlanError(f"{name} is not a trainable cut gate; those are {', '.join(TRAINABLE_CUT_GATES)}")
    return qc
