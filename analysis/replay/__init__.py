"""Replay model: a steady query's critical path at any rank count, from measured costs.

- ``model``: the terms - ``Workload``, ``Scenario``, ``Network``, ``TileCost``, ``Costs``, ``Replay``;
- ``simulation``: ``simulate``, the query on a discrete-event machine with processor sharing;
- ``calibration``: ``calibrate`` and ``fit_network``, costs from the timing rows of measured runs;
- ``validation``: ``validate`` (each measured configuration predicted from the others) and
  ``project`` (the reference query at more ranks).
"""

from .calibration import calibrate, fit_network, same_workload
from .model import (
    CLUSTER,
    WORKLOAD_KEYS,
    Costs,
    Network,
    Replay,
    Scenario,
    TileCost,
    Workload,
)
from .simulation import simulate
from .validation import PROJECTION_RANKS, project, reference_run, validate

__all__ = [
    "CLUSTER", "PROJECTION_RANKS", "WORKLOAD_KEYS", "Costs", "Network", "Replay", "Scenario", "TileCost", "Workload",
    "calibrate", "fit_network", "project", "reference_run", "same_workload", "simulate", "validate",
]
