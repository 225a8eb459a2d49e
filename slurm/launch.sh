# The shared body of the sbatch scripts in slurm/ (and the matrix reader and run-directory check
# of jobs/sweep.sh). Source it after slurm/env.sh; it defines functions only.

# hpcqnn_matrix_lines MATRIX: the task lines of a sweep matrix (comments and blank lines dropped).
# A line is `CONFIG RANKS [hpcqnn train args...]`, split on whitespace (no spaces inside an arg).
hpcqnn_matrix_lines() {
    grep -v -E '^[[:space:]]*(#|$)' "$1"
}

# hpcqnn_run_state RUN_DIR: where the run in RUN_DIR stands, as one word on stdout:
#   finished  results.json exists: nothing left to do
#   stopped   checkpoint.npz without results.json: continue it with `hpcqnn train ... --resume`
#   partial   other files only: it stopped before its first checkpoint (`hpcqnn train` refuses a
#             non-empty new run directory)
#   new       absent or empty: start it
# The one place that decides how a run (re)starts: hpcqnn_train_step on a requeue and
# jobs/sweep.sh on a rerun with the same SWEEP_ID.
hpcqnn_run_state() {
    local run_dir=$1
    if [[ -f $run_dir/results.json ]]; then
        echo finished
    elif [[ -f $run_dir/checkpoint.npz ]]; then
        echo stopped
    elif [[ -d $run_dir ]] && [[ -n $(ls -A "$run_dir") ]]; then
        echo partial
    else
        echo new
    fi
}

# hpcqnn_set_aside RUN_DIR: moves a run stopped before its first checkpoint to the first free
# RUN_DIR.incomplete-N (what it logged is kept; the run starts afresh) and prints that path.
hpcqnn_set_aside() {
    local run_dir=$1 n=1
    while [[ -e $run_dir.incomplete-$n ]]; do n=$((n + 1)); done
    mv "$run_dir" "$run_dir.incomplete-$n" && echo "$run_dir.incomplete-$n"
}

# hpcqnn_pmi2_netmod: under `srun --mpi=pmi2` in an allocation of several nodes, makes an MPICH
# that has both netmods (the pip MPICH: `mpichversion --device` says "ch4:ucx ofi") use OFI
# (libfabric tcp) unless MPIR_CVAR_CH4_NETMOD is set. Its default, UCX, exchanges a business
# card of several KiB per rank through PMI as soon as ranks span nodes, in PMI-1 lines longer
# than Slurm's pmi2 plugin reads (slurmstepd logs "mpi/pmi2: value not properly terminated in
# client request") and MPI_Init never returns; OFI's card is a few bytes. Within one node no
# card is exchanged and UCX stays.
hpcqnn_pmi2_netmod() {
    [[ ${HPCQNN_SRUN_MPI:-pmi2} == pmi2 && -z ${MPIR_CVAR_CH4_NETMOD:-} ]] || return 0
    (( ${SLURM_JOB_NUM_NODES:-1} > 1 )) || return 0
    local device
    device=$(mpichversion --device 2>/dev/null) || return 0
    if [[ $device == *ucx* && $device == *ofi* ]]; then
        export MPIR_CVAR_CH4_NETMOD=ofi
        echo "hpcqnn-slurm: MPIR_CVAR_CH4_NETMOD=ofi (MPICH's UCX business cards overflow Slurm's pmi2 across nodes)"
    fi
}

# hpcqnn_fnv1a STRING: the 32-bit FNV-1a hash of STRING in hex, as MPICH computes it (HASH_FNV)
hpcqnn_fnv1a() {
    local s=$1 h=2166136261 i c
    for ((i = 0; i < ${#s}; i++)); do
        printf -v c '%d' "'${s:i:1}"
        h=$(( ((h ^ c) * 16777619) & 0xffffffff ))
    done
    printf '%x' "$h"
}

# hpcqnn_clear_stale_shm: before a requeued job's MPI step, removes on every node of the
# allocation the shared-memory segments an earlier run of this job left in /dev/shm. MPICH
# names a node's segment after the PMI kvsname, which under srun is JOBID.STEPID; a requeued
# job keeps its id and numbers its steps from 0 again, and a run killed by a node failure (or
# by SIGKILL after KillWait) never removed its segments, so the new step would attach to a
# stale one (MPI_Init fails with "Out of memory", or waits on it for ever). Only this job's
# names and this user's files are removed (steps 0-3: the training step, and this one).
hpcqnn_clear_stale_shm() {
    local step hashes=()
    for step in 0 1 2 3; do hashes+=("$(hpcqnn_fnv1a "$SLURM_JOB_ID.$step")"); done
    # shellcheck disable=SC2016
    srun --ntasks-per-node=1 --ntasks="${SLURM_JOB_NUM_NODES:-1}" --kill-on-bad-exit=0 bash -c '
        for h in "$@"; do
            find /dev/shm -maxdepth 1 -user "$(id -u)" \( -name "mpich_shm_${h}_*" -o -name "mpich_vci_${h}_*" \) \
                -printf "hpcqnn-slurm: $(hostname): removing the stale /dev/shm/%f\n" -delete
        done' _ "${hashes[@]}" || echo "hpcqnn-slurm: could not clear stale MPI shared memory (continuing)" >&2
}

# hpcqnn_train_step RUN_DIR NTASKS CONFIG [hpcqnn train args...]
#
# Runs `hpcqnn train` as one job step of NTASKS MPI ranks, writing RUN_DIR. RUN_DIR must be
# stable across requeues (derive it from the job id): on a requeued job (SLURM_RESTART_COUNT > 0)
# a checkpoint there is resumed with --resume. When training stopped early on SIGTERM
# (`--signal=TERM@60` before the time limit, `scancel --signal=TERM`, a preemption notice) rank 0
# wrote a checkpoint and the step exits 0 without results.json: the job then requeues itself
# (`scontrol requeue`, needs --requeue; HPCQNN_REQUEUE=0 turns it off) and continues when it
# starts again.
#
# Launcher: HPCQNN_LAUNCHER=srun (default; `srun --mpi=$HPCQNN_SRUN_MPI`, pmi2 by default,
# which the pip MPICH speaks) or mpiexec (the mpiexec on PATH, i.e. the one of the MPI that
# mpi4py is linked with; inside an allocation it starts its ranks through Slurm itself).
# Extra srun options: the array HPCQNN_SRUN_ARGS, e.g. HPCQNN_SRUN_ARGS=(--gpus-per-task=1).
hpcqnn_train_step() {
    local run_dir=$1 ntasks=$2 config=$3
    shift 3
    local restarts=${SLURM_RESTART_COUNT:-0}
    # an array that may be empty expands as ${a[@]+"${a[@]}"}: bash < 4.4 under set -u calls
    # "${a[@]}" of an empty array an unbound variable
    local resume=() state
    echo "hpcqnn-slurm: job ${SLURM_JOB_ID:-?} (${SLURM_JOB_NAME:-?}) restart $restarts on ${SLURM_JOB_NODELIST:-$(hostname)}: $ntasks ranks, run directory $run_dir"
    state=$(hpcqnn_run_state "$run_dir")
    if [[ $state == finished ]]; then
        echo "hpcqnn-slurm: $run_dir/results.json exists: this run already finished"
        return 0
    fi
    if (( restarts > 0 )); then
        case $state in
            stopped)
                resume=(--resume)
                echo "hpcqnn-slurm: requeued (restart $restarts): resuming from $run_dir/checkpoint.npz"
                ;;
            partial)
                local aside
                aside=$(hpcqnn_set_aside "$run_dir") || return 1
                echo "hpcqnn-slurm: requeued without a checkpoint: moved the partial run to $aside; starting afresh"
                ;;
        esac
    fi
    mkdir -p "$(dirname "$run_dir")"

    local cmd
    case ${HPCQNN_LAUNCHER:-srun} in
        srun)
            cmd=(srun --mpi="${HPCQNN_SRUN_MPI:-pmi2}" --ntasks="$ntasks" --kill-on-bad-exit=1)
            # since Slurm 22.05 srun no longer inherits --cpus-per-task from the allocation
            [[ -n ${SLURM_CPUS_PER_TASK:-} ]] && cmd+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
            cmd+=(${HPCQNN_SRUN_ARGS[@]+"${HPCQNN_SRUN_ARGS[@]}"})
            hpcqnn_pmi2_netmod
            (( restarts > 0 )) && hpcqnn_clear_stale_shm
            ;;
        mpiexec) cmd=(mpiexec -n "$ntasks") ;;
        *) echo "hpcqnn-slurm: HPCQNN_LAUNCHER must be srun or mpiexec, got '$HPCQNN_LAUNCHER'" >&2; return 2 ;;
    esac
    cmd+=(hpcqnn train "$config" --out "$run_dir" ${resume[@]+"${resume[@]}"} "$@")
    echo "hpcqnn-slurm: ${cmd[*]}"
    local rc=0
    "${cmd[@]}" || rc=$?
    if (( rc != 0 )); then
        echo "hpcqnn-slurm: training step failed with exit code $rc" >&2
        return "$rc"
    fi
    if [[ -f $run_dir/results.json ]]; then
        echo "hpcqnn-slurm: finished: $run_dir/results.json"
        return 0
    fi
    if [[ ! -f $run_dir/checkpoint.npz ]]; then
        echo "hpcqnn-slurm: the step ended without results.json or a checkpoint" >&2
        return 1
    fi
    if [[ ${HPCQNN_REQUEUE:-1} == 0 || -z ${SLURM_JOB_ID:-} ]]; then
        echo "hpcqnn-slurm: stopped early with a checkpoint; continue with: sbatch ... or hpcqnn train $config --out $run_dir --resume"
        return 0
    fi
    echo "hpcqnn-slurm: stopped early with a checkpoint: requeueing job $SLURM_JOB_ID to resume"
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        echo "hpcqnn-slurm: scontrol requeue failed (submitted without --requeue, or JobRequeue=0?); resume by hand with --resume" >&2
        return 1
    fi
    return 0
}
