"""Executing queries: tiles of (circuit, experiments), Aer simulation, accumulation into query
buffers, the reconstruction contraction, devices, engines and injected stragglers. No MPI."""
