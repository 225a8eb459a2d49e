"""hpcqnn: distributed training of quantum neural networks via circuit cutting."""

from hpcqnn.errors import (
    CheckpointError,
    ConfigError,
    CutPlanError,
    DataError,
    DeviceUnavailableError,
    ExecutionConfigError,
    HpcqnnError,
    MPISessionError,
    MPIWorldError,
    ObservableError,
    ParameterShapeError,
    ParameterValueError,
    RunDirectoryError,
    SimulationError,
    TrainingDivergedError,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # Qiskit loads on first use of the estimator, MPI on first use of its entry points, never
    # with `import hpcqnn` (the command line, the timing logs and analysis need neither).
    if name == "DistributedEstimator":
        from hpcqnn.estimator import DistributedEstimator

        return DistributedEstimator
    if name == "mpi_estimator":
        from hpcqnn.parallel.session import mpi_estimator

        return mpi_estimator
    if name == "Straggler":
        from hpcqnn.execution.straggler import Straggler

        return Straggler
    raise AttributeError(f"module 'hpcqnn' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ConfigError",
    "CutPlanError",
    "DataError",
    "DeviceUnavailableError",
    "DistributedEstimator",
    "ExecutionConfigError",
    "HpcqnnError",
    "MPISessionError",
    "MPIWorldError",
    "ObservableError",
    "ParameterShapeError",
    "ParameterValueError",
    "RunDirectoryError",
    "SimulationError",
    "TrainingDivergedError",
    "Straggler",
    "__version__",
    "mpi_estimator",
]
