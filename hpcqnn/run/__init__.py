"""Run plumbing: config, run directories, timing rows and their HDF5 logs, provenance,
the launcher's and Slurm's environment. No Qiskit, no MPI."""
