"""Names of the execution choices and the constants the executor shares with the analysis
replay, importable without Qiskit or MPI: the command line and the config validate against them
before anything heavy is loaded, and ``analysis`` models the executor with the same numbers."""

MODES = ("exact", "sampled")
SCHEDULES = ("static", "dynamic")
SHOT_ALLOCATIONS = ("uniform", "proportional")
#: The QNN family's choices (``training.circuits``), here so that checking a config imports no Qiskit.
FEATURE_MAPS = ("ry", "zz")
ANSATZES = ("ladder", "real_amplitudes", "efficient_su2")
ENTANGLERS = ("cx", "rzz")
READOUTS = ("parity", "mean_z", "piece_parity", "terms")
INITS = ("uniform", "small", "identity_blocks")

#: Experiments sampled from one seed; tiles start at multiples of it so any split draws the same shots.
SAMPLE_BLOCK = 64
#: Most experiments in one Aer call: Aer's cost per experiment grows with the size of a call
#: (measured here: 4096 experiments in one call took 0.78 s, the same in 256-experiment calls 0.59 s).
CALL_EXPERIMENTS = 256
#: Dynamic schedule: about this many tiles per rank and query.
TILES_PER_RANK = 16
#: Waiting on an MPI request: test, sleep, double the sleep from WAIT_FIRST up to WAIT_MAX seconds.
WAIT_FIRST, WAIT_MAX = 1e-5, 5e-4
#: Seconds a failing rank waits, its output flushed, before aborting the job (output in flight
#: when MPI_Abort kills the processes is lost).
ABORT_GRACE = 0.5
#: Seconds rank 0 of the dynamic schedule sleeps between request checks when it has no tile to run.
POLL = 2e-4
#: Widest coherent circuit (system, fresh and control qubits) either mode runs; wider partitions
#: run their subexperiments one by one. Each row returns the whole statevector (2**22
#: amplitudes: 64 MiB; sampled mode, which reads blocks of SAMPLE_BLOCK rows, also keeps the
#: block's statevectors under MAX_DISTRIBUTION_BYTES).
COHERENT_MAX_QUBITS = 22
#: Widest noisy subexperiment simulated exactly: its density matrix holds 4**n complex numbers
#: (13 qubits: 1 GiB); wider ones run on a sampler, which simulates noise shot by shot.
MAX_DENSITY_QUBITS = 13
#: Largest saved data of one Aer call (a call of wide coherent circuits holds fewer experiments).
CALL_BYTES = 64 * 2**20
#: Largest outcome distributions of one measurement setting for one block of SAMPLE_BLOCK rows
#: (sampled mode draws its counts a block at a time); a program needing more is refused.
MAX_DISTRIBUTION_BYTES = 2**30
