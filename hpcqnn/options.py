"""Names of the execution choices, importable without Qiskit or MPI: the command line and the
config validate against them before anything heavy is loaded."""

MODES = ("exact", "sampled")
SCHEDULES = ("static", "dynamic")
SHOT_ALLOCATIONS = ("uniform", "proportional")
