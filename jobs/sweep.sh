#!/usr/bin/env bash
# The sweep of slurm/sweep.sbatch on a workstation: no Slurm, one matrix line after another,
# each under `mpiexec -n RANKS` (the venv's MPICH).
#
#   jobs/sweep.sh [MATRIX [OUT_ROOT [hpcqnn train args for every line...]]]
#   jobs/sweep.sh                                              # slurm/sweep_matrix.txt -> runs/
#   jobs/sweep.sh slurm/sweep_matrix.txt runs --set training.epochs=1
#   SWEEP_ID=sweep-20260101-120000 jobs/sweep.sh ...           # continue an interrupted sweep
#
# Line i (0-based, comments and blank lines skipped) of MATRIX — `CONFIG RANKS [args...]` —
# writes OUT_ROOT/<SWEEP_ID>_<i>/ (SWEEP_ID defaults to sweep-<timestamp>). Rerun with the same
# SWEEP_ID to continue: finished lines (results.json) are skipped, stopped ones (checkpoint.npz,
# e.g. after Ctrl-C) resume with --resume, and ones stopped before their first checkpoint are
# moved to <dir>.incomplete-N and start afresh. Exits non-zero if any line failed; the others
# still run.
# More ranks than cores works (idle ranks wait without spinning) but times then mean little.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MATRIX=$REPO/slurm/sweep_matrix.txt
OUT_ROOT=runs
if [[ $# -gt 0 && $1 != -* ]]; then MATRIX=$1; shift; fi
if [[ $# -gt 0 && $1 != -* ]]; then OUT_ROOT=$1; shift; fi
[[ -f $MATRIX ]] || { echo "sweep.sh: no matrix file $MATRIX" >&2; exit 2; }

source "$REPO/slurm/env.sh" || exit 1
source "$REPO/slurm/launch.sh"
MPIEXEC=${MPIEXEC:-mpiexec}
SWEEP_ID=${SWEEP_ID:-sweep-$(date +%Y%m%d-%H%M%S)}
# a leftover launcher environment (e.g. running inside an salloc shell) would confuse mpiexec
unset PMI_FD PMI_RANK PMI_SIZE PMI_JOBID

mapfile -t LINES < <(hpcqnn_matrix_lines "$MATRIX")
echo "sweep.sh: $SWEEP_ID: ${#LINES[@]} runs from $MATRIX into $OUT_ROOT/"
failed=()
for ((i = 0; i < ${#LINES[@]}; i++)); do  # by count: an empty LINES is safe under set -u on any bash
    read -r config ranks rest <<<"${LINES[$i]}"
    read -r -a extra <<<"${rest:-}"
    run_dir=$OUT_ROOT/${SWEEP_ID}_$i
    resume=()
    case $(hpcqnn_run_state "$run_dir") in  # slurm/launch.sh: the same check as a requeued job
        finished)
            echo "sweep.sh: [$i] ${LINES[$i]}: already finished ($run_dir)"
            continue
            ;;
        stopped) resume=(--resume) ;;
        partial)  # stopped before its first checkpoint: `hpcqnn train` refuses a non-empty --out
            aside=$(hpcqnn_set_aside "$run_dir") || { failed+=("$i"); continue; }
            echo "sweep.sh: [$i] no checkpoint in $run_dir: moved it to $aside; starting afresh"
            ;;
    esac
    cmd=("$MPIEXEC" -n "$ranks" hpcqnn train "$config" --out "$run_dir" ${resume[@]+"${resume[@]}"} ${extra[@]+"${extra[@]}"} "$@")
    echo "sweep.sh: [$i] ${cmd[*]}"
    if ! "${cmd[@]}" </dev/null; then  # mpiexec would otherwise read the terminal
        echo "sweep.sh: [$i] failed: ${LINES[$i]}" >&2
        failed+=("$i")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "sweep.sh: $SWEEP_ID: ${#failed[@]} of ${#LINES[@]} runs failed (lines ${failed[*]}); rerun with SWEEP_ID=$SWEEP_ID to retry them" >&2
    exit 1
fi
echo "sweep.sh: $SWEEP_ID: all ${#LINES[@]} runs finished in $OUT_ROOT/${SWEEP_ID}_*"
