"""Named exceptions: every message says what was found and what is needed."""

from __future__ import annotations


class HpcqnnError(Exception):
    """Base class of every error hpcqnn raises on purpose."""


class CutPlanError(HpcqnnError, ValueError):
    """The circuit cannot be cut as requested (labels, gates, sizes, limits)."""


class ObservableError(HpcqnnError, ValueError):
    """An observable is not a Hermitian Pauli sum of the circuit's width."""


class ParameterShapeError(HpcqnnError, ValueError):
    """Parameter values do not match the circuit's parameters."""


class ParameterValueError(HpcqnnError, ValueError, TypeError):
    """Parameter values are not finite real numbers (NaN, infinite, strings, complex)."""


class ExecutionConfigError(HpcqnnError, ValueError):
    """An execution option (shots, device, seed, threads) is out of range."""


class DeviceUnavailableError(HpcqnnError, RuntimeError):
    """A GPU was requested but none is usable on this node."""


class ConfigError(HpcqnnError, ValueError):
    """A run configuration (TOML file or --set override) is invalid."""


class DataError(HpcqnnError, ValueError):
    """A dataset cannot be loaded or split as configured."""


class CheckpointError(HpcqnnError, ValueError):
    """A checkpoint is damaged, or does not fit the run that would resume from it."""


class TrainingDivergedError(HpcqnnError, ArithmeticError):
    """Training reached a non-finite loss or parameters; the last good checkpoint stands."""


class SimulationError(HpcqnnError, RuntimeError):
    """Aer reported a failed simulation."""


class MPIWorldError(HpcqnnError, RuntimeError):
    """The MPI world does not match what the launcher started."""


class MPISessionError(HpcqnnError, RuntimeError):
    """An MPI session is used outside its ``with mpi_estimator(...)`` block, or blocks nest."""


class RunDirectoryError(HpcqnnError, FileExistsError):
    """A run directory or timing log would be overwritten, or holds nothing to continue."""
