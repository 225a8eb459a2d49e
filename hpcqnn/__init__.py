"""hpcqnn: distributed training of quantum neural networks via circuit cutting."""

from .errors import (
    ConfigError,
    CutPlanError,
    DataError,
    DeviceUnavailableError,
    ExecutionConfigError,
    HpcqnnError,
    MPIWorldError,
    ObservableError,
    ParameterShapeError,
    SimulationError,
)
from .estimator import DistributedEstimator

__version__ = "0.1.0"



def __getattr__(name: str):
    # MPI is initialised only when its entry points are used, never by `import hpcqnn`.
    if name in ("mpi_estimator", "Straggler"):
        from . import distributed

        return getattr(distributed, name)
    raise AttributeError(f"module 'hpcqnn' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "CutPlanError",
    "DataError",
    "DeviceUnavailableError",
    "DistributedEstimator",
    "ExecutionConfigError",
    "HpcqnnError",
    "MPIWorldError",
    "ObservableError",
    "ParameterShapeError",
    "SimulationError",
    "Straggler",
    "__version__",
    "mpi_estimator",
]
