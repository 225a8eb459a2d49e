# hpcqnn's environment for batch jobs: `source slurm/env.sh` (the sbatch scripts in slurm/ do).
#
#   HPCQNN_REPO   repository root (default: the directory above this file); exported
#   HPCQNN_VENV   virtualenv to activate (default: $HPCQNN_REPO/.venv, made by `make install`)
#
# Safe to source from an interactive shell, `salloc`, or a batch script; it sets no shell
# options and returns non-zero (without exiting the caller) when the venv is missing.

_hpcqnn_env_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export HPCQNN_REPO=${HPCQNN_REPO:-$(dirname "$_hpcqnn_env_dir")}
unset _hpcqnn_env_dir

# --- Site modules -------------------------------------------------------------------------
# On a cluster with environment modules (Lmod), load what the venv was built with BEFORE
# activating it. Uncomment and adapt; `module avail python` / `module spider mpi` list names.
#
# module purge
# module load python/3.11         # the interpreter the venv was created with (python >= 3.10)
#
# Site MPI: only if mpi4py was rebuilt against it (README: Installation details), e.g.
#   pip uninstall -y mpich mpi4py && MPICC=mpicc pip install --no-binary=mpi4py mpi4py
# module load openmpi/4.1          # or mpich / intel-mpi / cray-mpich: the one mpi4py links
#
# GPU nodes (slurm/train_gpu.sbatch): the pip wheels of qiskit-aer-gpu and cupy-cuda12x bring
# their own CUDA 12 runtime libraries and need only an NVIDIA driver for CUDA 12; a CUDA module
# is needed only where the site's driver setup asks for one. Check: python -m hpcqnn.tools.gpucheck
# module load cuda/12.4
# -------------------------------------------------------------------------------------------

HPCQNN_VENV=${HPCQNN_VENV:-$HPCQNN_REPO/.venv}
if [[ -f $HPCQNN_VENV/bin/activate ]]; then
    # shellcheck disable=SC1091
    source "$HPCQNN_VENV/bin/activate"
else
    echo "slurm/env.sh: no virtualenv at $HPCQNN_VENV (run \`make install\` in $HPCQNN_REPO, or set HPCQNN_VENV)" >&2
    # return when sourced (the caller decides), exit when run as a script
    # shellcheck disable=SC2317
    return 1 2>/dev/null || exit 1
fi

# One OpenMP/BLAS thread pool per task, as wide as the CPUs Slurm gave it (hpcqnn sizes Aer's
# threads from the CPUs each rank owns; this keeps NumPy/BLAS from oversubscribing the node).
if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then
    export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
    export OPENBLAS_NUM_THREADS=$SLURM_CPUS_PER_TASK
    export MKL_NUM_THREADS=$SLURM_CPUS_PER_TASK
fi
export PYTHONUNBUFFERED=1  # progress lines reach the Slurm log as they happen
