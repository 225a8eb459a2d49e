"""Where a process computes: GPU probing, rank-to-GPU binding and the array-module switch.

A GPU is used only when CuPy sees a CUDA device, Aer's build offers "GPU" and a one-qubit
circuit really runs there: the GPU build of Aer lists "GPU" on machines that have none, and it
can fail where CuPy works (its own CUDA libraries, a driver too old for them). The rank with
local index ``r`` on its node uses GPU ``r mod n`` of the ``n`` GPUs it can see (with Slurm's
per-task GPU binding each rank sees one GPU, so that is GPU 0 of its own set). No MPI here:
``hpcqnn.parallel`` finds the local rank from the MPI world.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import TextIO

import numpy as np

from hpcqnn.errors import DeviceUnavailableError, ExecutionConfigError

DEVICES = ("auto", "CPU", "GPU")
INSTALL_HINT = (
    "on a GPU node: pip install -e '.[gpu]', then pip install --force-reinstall --no-deps "
    "qiskit-aer-gpu==<the installed qiskit-aer version> (README: GPU); check with "
    "`python -m hpcqnn.tools.gpucheck`"
)


@dataclass(frozen=True)
class GPUProbe:
    """What this process can see: CUDA devices (through CuPy) and the devices Aer's build offers."""

    cuda_devices: int
    aer_devices: tuple[str, ...]
    cupy_problem: str = ""  # why CuPy reported no device (not installed, no driver, ...)

    @property
    def problem(self) -> str:
        """Why no GPU can be used here; empty when one can (as far as probing tells)."""
        if self.cuda_devices == 0:
            return f"CuPy sees no CUDA device ({self.cupy_problem or 'device count 0'})"
        if "GPU" not in self.aer_devices:
            return (
                f"qiskit_aer is the CPU-only build (it offers {list(self.aer_devices)}; "
                "qiskit-aer-gpu must be installed after qiskit-aer)"
            )
        return ""


def probe_gpus() -> GPUProbe:
    """Count CUDA devices with CuPy and ask Aer which devices its build supports."""
    from qiskit_aer import AerSimulator

    try:
        import cupy

        count, problem = int(cupy.cuda.runtime.getDeviceCount()), ""
    except ImportError:
        count, problem = 0, "CuPy is not installed"
    except Exception as exc:  # noqa: BLE001 - CUDA reports a missing driver/device as a runtime error
        count, problem = 0, f"{type(exc).__name__}: {exc}"
    return GPUProbe(count, tuple(AerSimulator().available_devices()), problem)


def aer_gpu_error(gpu: int) -> str:
    """Run a one-qubit circuit with Aer on GPU ``gpu``; the failure as text, empty if it ran right."""
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import Pauli
    from qiskit_aer import AerSimulator

    circuit = QuantumCircuit(1)
    circuit.x(0)
    circuit.save_expectation_value(Pauli("Z"), [0], label="z")
    try:
        result = AerSimulator(method="statevector", device="GPU").run(circuit, shots=1, target_gpus=[gpu]).result()
        value = result.data()["z"]
    except Exception as exc:  # noqa: BLE001 - any failure means "this GPU cannot be used"
        return f"Aer on GPU {gpu} failed: {type(exc).__name__}: {exc}"
    return "" if abs(value + 1.0) < 1e-12 else f"Aer on GPU {gpu} computed <Z> = {value} for |1>, expected -1"


def gpu_for_rank(local_rank: int, gpus: int) -> int:
    """The GPU a rank uses: its index on the node modulo the GPUs it can see."""
    if gpus < 1:
        raise ExecutionConfigError(f"binding a rank to a GPU needs at least one visible GPU, got {gpus}")
    if local_rank < 0:
        raise ExecutionConfigError(f"local rank must be >= 0, got {local_rank}")
    return local_rank % gpus


@dataclass(frozen=True)
class Placement:
    """Where one process simulates and reconstructs: a GPU (its CUDA index among the devices
    visible to the process) or the CPU (``gpu`` None)."""

    gpu: int | None = None
    note: str = ""  # why device="auto" fell back to the CPU

    @property
    def device(self) -> str:
        return "CPU" if self.gpu is None else "GPU"

    @property
    def label(self) -> str:
        return "CPU" if self.gpu is None else f"GPU {self.gpu}"

    def attributes(self) -> dict[str, object]:
        """For timing-log attributes and results.json: device, GPU index (-1: none), visible GPUs."""
        return {
            "device": self.device,
            "gpu": -1 if self.gpu is None else self.gpu,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        }


def place(requested: str, local_rank: int = 0, probe: GPUProbe | None = None) -> Placement:
    """Turn ``"auto" | "CPU" | "GPU"`` into the placement this process really uses.

    ``"GPU"`` where none is usable raises ``DeviceUnavailableError``; ``"auto"`` falls back to
    the CPU with the reason in ``Placement.note``.
    """
    if requested not in DEVICES:
        raise ExecutionConfigError(f"device must be one of {DEVICES}, got {requested!r}")
    if requested == "CPU":
        return Placement()
    probe = probe_gpus() if probe is None else probe
    problem = probe.problem
    gpu = None
    if not problem:
        gpu = gpu_for_rank(local_rank, probe.cuda_devices)
        problem = aer_gpu_error(gpu)
    if not problem:
        return Placement(gpu)
    if requested == "GPU":
        raise DeviceUnavailableError(f"device='GPU' but no GPU is usable: {problem}; {INSTALL_HINT}")
    return Placement(note=problem)


_ANNOUNCED: set[str] = set()


def announce(message: str, stream: TextIO | None = None) -> None:
    """Print ``message`` to stderr the first time this process asks (e.g. the auto fallback,
    which every estimator of a benchmark would otherwise repeat)."""
    if message in _ANNOUNCED:
        return
    _ANNOUNCED.add(message)
    stream = stream or sys.stderr
    stream.write(f"hpcqnn: {message}\n")
    stream.flush()


def array_module(placement: Placement) -> ModuleType:
    """NumPy on the CPU; CuPy on the GPU, with the placement's GPU made CuPy's current device.

    Reconstruction is written once against this module.
    """
    if placement.gpu is None:
        return np
    import cupy

    cupy.cuda.Device(placement.gpu).use()
    return cupy


def to_host(array) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    return array.get() if hasattr(array, "get") else np.asarray(array)
