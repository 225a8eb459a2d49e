"""hpcqnn: distributed training of quantum neural networks via circuit cutting."""

from .errors import (
    CutPlanError,
    DeviceUnavailableError,
    ExecutionConfigError,
    HpcqnnError,
    ObservableError,
    ParameterShapeError,
)
from .estimator import DistributedEstimator

__version__ = "0.1.0"

__all__ = [
    "CutPlanError",
    "DeviceUnavailableError",
    "DistributedEstimator",
    "ExecutionConfigError",
    "HpcqnnError",
    "ObservableError",
    "ParameterShapeError",
    "__version__",
]
