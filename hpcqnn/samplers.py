"""SamplerV2 factories for ``sampler = "hpcqnn.samplers:NAME"`` (``[execution.noise]`` or
``DistributedEstimator(sampler=...)``): each rank calls the factory once and runs its
subexperiments on what it returns. Copy one into your own module to point at your device.
"""

from __future__ import annotations

import os
from typing import Any


def aer_fake_device() -> Any:
    """Aer's SamplerV2 with the noise of the fake device named by HPCQNN_BACKEND (default
    FakeManilaV2; give the same ``backend`` so that the subexperiments are transpiled for it),
    seeded from HPCQNN_SAMPLER_SEED (default 0) plus the MPI rank, on HPCQNN_SAMPLER_THREADS
    threads (default 0: all cores). Noise is simulated shot by shot (trajectories), mid-circuit
    measurements included, as the device would run them."""
    from qiskit_aer.noise import NoiseModel
    from qiskit_aer.primitives import SamplerV2

    from hpcqnn.noise import resolve_backend

    device = resolve_backend(os.environ.get("HPCQNN_BACKEND", "FakeManilaV2"))
    seed = int(os.environ.get("HPCQNN_SAMPLER_SEED", "0")) + int(os.environ.get("PMI_RANK", "0"))
    options = {
        "noise_model": NoiseModel.from_backend(device),
        "max_parallel_threads": int(os.environ.get("HPCQNN_SAMPLER_THREADS", "0")),
    }
    return SamplerV2(seed=seed, options={"backend_options": options})


def ibm_runtime() -> Any:
    """IBM Quantum hardware through qiskit-ibm-runtime, in a batch: the device named by
    IBM_BACKEND (give the same name as ``backend`` so that the subexperiments are transpiled for
    it), with the account saved by ``QiskitRuntimeService.save_account``. Never run by the tests."""
    from qiskit_ibm_runtime import Batch, QiskitRuntimeService, SamplerV2

    device = QiskitRuntimeService().backend(os.environ["IBM_BACKEND"])
    return SamplerV2(mode=Batch(backend=device))
