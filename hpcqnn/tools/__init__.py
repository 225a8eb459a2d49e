"""Benchmarks and checks run from the command line (bench, bench-shots, gpubench, gpucheck)
and the addon-only reference pipeline they compare against."""
