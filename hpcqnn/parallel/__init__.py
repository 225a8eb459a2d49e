"""MPI execution: the only package that imports mpi4py (in ``_core``), behind ``session``."""
