"""Absolute (and relative) tolerances the suites share, named by what they compare."""

#: Two exact-mode evaluations of the same expectation values: the cut result against the uncut
#: circuit's statevector, the GPU simulator against the CPU one, a qiskit-machine-learning QNN
#: through our estimator against the reference estimator. The cut results reach ~1e-15.
EXACT_ATOL = 1e-10

#: The same numbers computed another way where only float rounding may differ: another rank
#: count or schedule, CuPy against NumPy, a closed form against the code's arithmetic.
ROUNDING_TOL = 1e-12

#: Exact-mode values carried through many further operations: whole training runs (cut against
#: uncut), sampled reconstruction against the addon's from the same counts.
PROPAGATED_ATOL = 1e-9

#: A parameter-shift gradient against a central finite difference (step 1e-5).
FINITE_DIFFERENCE_ATOL = 1e-6
