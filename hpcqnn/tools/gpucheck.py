"""Is this node's GPU stack working?  ``python -m hpcqnn.tools.gpucheck [--require-gpu]``

Prints the installed packages, what CuPy and Aer see, whether Aer's GPU build really runs a
circuit and CuPy really computes on every visible GPU, and where ``device="auto"`` puts this
process. With ``--require-gpu`` the exit status is 1 unless a GPU is usable (for job scripts).
"""

from __future__ import annotations

import argparse
import os
import sys

from hpcqnn.execution.devices import aer_gpu_error, place, probe_gpus
from hpcqnn.run import launcher
from hpcqnn.run.runinfo import GPU_PACKAGES, installed_versions


def cupy_error(gpu: int) -> str:
    """Run a small einsum with CuPy on GPU ``gpu``; the failure as text, empty if it is right."""
    try:
        import cupy

        with cupy.cuda.Device(gpu):
            a = cupy.arange(6, dtype=cupy.float64).reshape(2, 3)
            value = float(cupy.einsum("ij,ij->", a, a).item())
    except Exception as exc:  # noqa: BLE001 - any failure means "CuPy cannot compute here"
        return f"CuPy on GPU {gpu} failed: {type(exc).__name__}: {exc}"
    return "" if value == 55.0 else f"CuPy on GPU {gpu} computed {value}, expected 55"


def report() -> tuple[list[str], bool]:
    """The lines to print, and whether this process can use a GPU."""
    packages = installed_versions(GPU_PACKAGES)
    probe = probe_gpus()
    lines = [
        "packages: " + (", ".join(f"{k} {v}" for k, v in packages.items()) or "none of " + ", ".join(GPU_PACKAGES)),
        f"CUDA_VISIBLE_DEVICES: {os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}",
        f"CuPy CUDA devices: {probe.cuda_devices}" + (f" ({probe.cupy_problem})" if probe.cupy_problem else ""),
        f"Aer devices: {', '.join(probe.aer_devices)}",
    ]
    if any(name.startswith("qiskit-aer-gpu") for name in packages) and "GPU" not in probe.aer_devices:
        gpu_version = packages.get("qiskit-aer-gpu") or packages["qiskit-aer-gpu-cu11"]
        lines.append(
            "qiskit-aer-gpu is installed but the qiskit_aer module is the CPU build (qiskit-aer was "
            f"installed over it): pip install --force-reinstall --no-deps qiskit-aer-gpu=={gpu_version}"
        )
    for gpu in range(probe.cuda_devices):  # CuPy is checked even where Aer's build has no GPU
        aer = aer_gpu_error(gpu) if "GPU" in probe.aer_devices else "Aer's build offers no GPU"
        problems = [text for text in (aer, cupy_error(gpu)) if text]
        lines.append(f"GPU {gpu}: " + ("; ".join(problems) if problems else "Aer and CuPy run"))
    placement = place("auto", launcher.local_rank(), probe)
    lines.append(f"device='auto' here: {placement.label}" + (f" ({placement.note})" if placement.note else ""))
    return lines, placement.gpu is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcqnn.tools.gpucheck", description=__doc__)
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 unless a GPU is usable")
    args = parser.parse_args(argv)
    lines, usable = report()
    print("\n".join(lines))
    return 1 if args.require_gpu and not usable else 0


if __name__ == "__main__":
    sys.exit(main())
