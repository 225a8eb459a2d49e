"""Cut planning: partition a circuit once, build each partition's subexperiment template and
the program (save instructions, shot allocation) every query re-binds. Qiskit, no MPI."""
