"""Device noise: what cut subexperiments are transpiled for and simulated with.

A ``Noise`` is built once per estimator from its options (``noise_for``): an Aer ``NoiseModel``,
a ``BackendV2`` (a fake device of ``qiskit_ibm_runtime.fake_provider``, Qiskit's
``GenericBackendV2``, or a name of either), or a ``SamplerV2`` factory named
``"package.module:function"`` (the route to real devices: each rank calls it once). Subexperiments
are transpiled for the backend (its basis gates and coupling map; each partition laid out on the
device by itself) or for the noise model's basis gates, then run with the noise
(``cutting.noisy``). Only rank 0 holds a ``Noise``; programs carry what the other ranks need.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qiskit import QuantumCircuit

from hpcqnn.errors import ExecutionConfigError
from hpcqnn.plugins import import_function

#: The Pauli measurement of a deferred QPD measurement: a noiseless CX onto a fresh ancilla.
#: Aer matches noise to a ``unitary`` by its label, which no noise model names.
DEFERRED_MEASURE_LABEL = "hpcqnn_deferred_measure"
#: Instructions a noise model may name that are not gates of the transpiled circuits.
_NOT_GATES = frozenset({"measure", "reset", "id", "delay", "barrier", "kraus", "superop", "roerror"})
_GENERIC = re.compile(r"^GenericBackendV2\((\d+)\)$")


@dataclass(frozen=True, eq=False)
class Noise:
    """The noise subexperiments run with: ``description`` (recorded with every run),
    ``noise_model`` (None: the sampler's own device supplies the noise), the ``backend`` to
    transpile for (None: the noise model's basis gates) and the ``sampler`` factory's name."""

    description: str
    noise_model: Any = None
    backend: Any = None
    sampler: str | None = None

    @property
    def basis_gates(self) -> list[str] | None:
        if self.backend is not None:
            return None
        if self.noise_model is not None:
            from qiskit.circuit.library import get_standard_gate_name_mapping

            gates = get_standard_gate_name_mapping()
            return [g for g in self.noise_model.basis_gates if g in gates and g not in _NOT_GATES]
        return None

    @property
    def width(self) -> int | None:
        """The device's qubits, where a backend fixes them."""
        return None if self.backend is None else int(self.backend.num_qubits)

    def transpile(self, circuits: Sequence[QuantumCircuit], initial_layout: Sequence[int] | None) -> list:
        """``circuits`` for the device: basis gates, and with a backend its coupling map, all
        laid out on ``initial_layout`` (None: the transpiler picks, for the first circuit)."""
        from qiskit.transpiler import generate_preset_pass_manager

        manager = generate_preset_pass_manager(
            optimization_level=1,
            backend=self.backend,
            basis_gates=self.basis_gates or (None if self.backend is not None else _SAMPLER_BASIS),
            initial_layout=None if initial_layout is None else list(initial_layout),
            seed_transpiler=0,
        )
        return [manager.run(c) for c in circuits]

    def readout_matrix(self, qubit: int) -> np.ndarray:
        """[true bit, read bit] probabilities of measuring device qubit ``qubit``."""
        model = self.noise_model
        if model is None:
            return np.eye(2)
        error = model._local_readout_errors.get((qubit,), model._default_readout_error)
        return np.eye(2) if error is None else np.asarray(error.probabilities, dtype=float)

    def measure_error(self, qubit: int) -> Any:
        """The noise model's quantum error of ``measure`` on device qubit ``qubit``, or None."""
        model = self.noise_model
        if model is None or "measure" not in model._noise_instructions:
            return None
        local = model._local_quantum_errors.get("measure", {})
        return local.get((qubit,), model._default_quantum_errors.get("measure"))

    def check_used(self, circuits: Sequence[QuantumCircuit]) -> None:
        """Refuse a noise model whose noisy gates the transpiled subexperiments never use:
        its noise would silently not apply."""
        if self.noise_model is None:
            return
        used = {inst.operation.name for c in circuits for inst in c.data}
        noisy = set(self.noise_model.noise_instructions) - _NOT_GATES
        unused = sorted(noisy - used)
        if unused and not (noisy & used):
            raise ExecutionConfigError(
                f"the noise model puts errors on {', '.join(unused)}, which the transpiled subexperiments never "
                f"use (their gates: {', '.join(sorted(used - {'measure', 'barrier'}))}): give the noise model "
                "those gates in its basis_gates, or pass backend= for the device it describes"
            )


#: Gates the subexperiments are written in for a sampler without a backend (Aer's and most
#: simulators' native gates).
_SAMPLER_BASIS = ["rz", "sx", "x", "cx", "rx", "ry", "h", "s", "sdg", "cz", "rzz"]


def noise_for(noise_model: Any = None, backend: Any = None, sampler: str | None = None) -> Noise | None:
    """The ``Noise`` of an estimator's options, or None (noiseless); every option checked here.

    ``backend``: a ``BackendV2`` or a name (``"FakeManilaV2"``, ``"GenericBackendV2(5)"``);
    its noise (``NoiseModel.from_backend``) applies unless ``noise_model`` or ``sampler`` is given.
    """
    if noise_model is None and backend is None and sampler is None:
        return None
    if noise_model is not None:
        from qiskit_aer.noise import NoiseModel

        if not isinstance(noise_model, NoiseModel):
            raise ExecutionConfigError(
                f"noise_model must be a qiskit_aer.noise.NoiseModel, got {type(noise_model).__name__}"
            )
    if sampler is not None:
        if noise_model is not None:
            raise ExecutionConfigError("give either sampler= (the device's own noise) or noise_model=, not both")
        make_sampler(sampler)  # this process's sampler, checked before anything runs
    device = resolve_backend(backend) if backend is not None else None
    if noise_model is None and device is not None and sampler is None:
        from qiskit_aer.noise import NoiseModel

        noise_model = NoiseModel.from_backend(device)
    parts = []
    if device is not None:
        parts.append(f"backend {device.name} ({device.num_qubits} qubits)")
    if noise_model is not None:
        parts.append(_describe_model(noise_model, from_backend=device is not None and sampler is None))
    if sampler is not None:
        parts.append(f"sampler {sampler}")
    return Noise("; ".join(parts), noise_model, device, sampler)


def resolve_backend(backend: Any) -> Any:
    """A ``BackendV2`` from one, or from a fake device's or ``GenericBackendV2(N)``'s name."""
    from qiskit.providers import BackendV2

    if isinstance(backend, BackendV2):
        return backend
    if not isinstance(backend, str):
        raise ExecutionConfigError(f"backend must be a BackendV2 or a device name, got {type(backend).__name__}")
    generic = _GENERIC.match(backend)
    if generic:
        from qiskit.providers.fake_provider import GenericBackendV2

        return GenericBackendV2(int(generic.group(1)), seed=0)
    names = fake_backend_names()
    if backend not in names:
        close = [n for n in names if backend.lower().replace("v2", "") in n.lower()][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else f" (for example {', '.join(names[:6])})"
        raise ExecutionConfigError(
            f"unknown backend {backend!r}: give a fake device of qiskit_ibm_runtime.fake_provider{hint}, "
            "or 'GenericBackendV2(N)' for N qubits"
        )
    from qiskit_ibm_runtime import fake_provider

    return getattr(fake_provider, backend)()


def fake_backend_names() -> list[str]:
    """The fake devices qiskit-ibm-runtime ships (empty where it is not installed)."""
    try:
        from qiskit_ibm_runtime import fake_provider
    except ImportError:
        return []
    return sorted(n for n in dir(fake_provider) if n.startswith("Fake") and not n.startswith("FakeProvider"))


def depolarizing_model(p1: float, p2: float, readout: float = 0.0) -> Any:
    """Depolarizing errors of probability ``p1`` after every ``sx`` and ``x`` (``rz`` is
    virtual, as on IBM devices), ``p2`` after every ``cx``, and a symmetric readout bit flip of
    probability ``readout``; subexperiments are transpiled to rz, sx, x and cx."""
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

    for name, value, top in (("p1", p1, 1.0), ("p2", p2, 1.0), ("readout", readout, 0.5)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= top:
            raise ExecutionConfigError(f"noise {name} must be a probability in [0, {top:g}], got {value!r}")
    model = NoiseModel(basis_gates=["rz", "sx", "x", "cx"])
    if p1:
        model.add_all_qubit_quantum_error(depolarizing_error(p1, 1), ["sx", "x"])
    if p2:
        model.add_all_qubit_quantum_error(depolarizing_error(p2, 2), ["cx"])
    if readout:
        model.add_all_qubit_readout_error(ReadoutError([[1 - readout, readout], [readout, 1 - readout]]))
    return model


def sampler_factory(name: str) -> Callable[[], Any]:
    """The function ``"package.module:function"`` names, which returns a ``SamplerV2``."""
    try:
        return import_function(name, "sampler factory")
    except ValueError as exc:
        raise ExecutionConfigError(str(exc)) from exc


@functools.cache
def make_sampler(name: str) -> Any:
    """Call the factory ``name`` (once per process: the first call's sampler is kept) and check
    that it gave a ``SamplerV2``."""
    from qiskit.primitives import BaseSamplerV2

    sampler = sampler_factory(name)()
    if not isinstance(sampler, BaseSamplerV2):
        raise ExecutionConfigError(
            f"sampler factory {name!r} returned a {type(sampler).__name__}, not a SamplerV2 "
            "(qiskit.primitives.BaseSamplerV2): return e.g. qiskit_aer.primitives.SamplerV2(...) or "
            "qiskit_ibm_runtime.SamplerV2(mode=...)"
        )
    return sampler


def _describe_model(model: Any, from_backend: bool) -> str:
    if from_backend:
        return "its noise (NoiseModel.from_backend)"
    gates = ", ".join(sorted(set(model.noise_instructions)))
    return f"noise model on {gates or 'nothing'}"
