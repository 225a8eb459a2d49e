"""Device choice and the array-module switch (NumPy on CPU, CuPy on GPU)."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from .errors import DeviceUnavailableError, ExecutionConfigError

DEVICES = ("auto", "CPU", "GPU")


def gpu_count() -> int:
    """CUDA devices CuPy can really use (Aer's available_devices() can claim a GPU that is absent)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def aer_has_gpu() -> bool:
    from qiskit_aer import AerSimulator

    return "GPU" in AerSimulator().available_devices()


def resolve_device(requested: str) -> str:
    """Turn "auto" | "CPU" | "GPU" into the device that will really be used."""
    if requested not in DEVICES:
        raise ExecutionConfigError(f"device must be one of {DEVICES}, got {requested!r}")
    if requested == "CPU":
        return "CPU"
    usable = gpu_count() > 0 and aer_has_gpu()
    if requested == "GPU" and not usable:
        raise DeviceUnavailableError(
            "device='GPU' needs a CUDA device visible to CuPy and the qiskit-aer-gpu build "
            f"(found {gpu_count()} CUDA devices, Aer GPU support: {aer_has_gpu()}); "
            "install with `pip install .[gpu]` on a GPU node, or use device='auto'/'CPU'"
        )
    return "GPU" if usable else "CPU"


def array_module(device: str) -> ModuleType:
    """NumPy for CPU, CuPy for GPU: reconstruction code is written once against this module."""
    if device == "GPU":
        import cupy

        return cupy
    return np


def to_host(array) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    return array.get() if hasattr(array, "get") else np.asarray(array)
