#!/usr/bin/env bash
# Submit slurm/sweep.sbatch as a job array sized from its matrix.
#
#   slurm/submit_sweep.sh [sbatch options...] [MATRIX [OUT_ROOT [hpcqnn train args...]]]
#   slurm/submit_sweep.sh                                   # slurm/sweep_matrix.txt -> runs/
#   slurm/submit_sweep.sh --array=%2 --partition=short my_matrix.txt runs/sweep1
#   slurm/submit_sweep.sh --wait my_matrix.txt runs --set training.epochs=1
#
# Adds --array=0-(task lines - 1) (an --array=%N given here becomes the throttle) and
# --ntasks=<largest RANKS in the matrix> unless --ntasks/-n is given; other sbatch options pass
# through (they come before MATRIX; write them as --name=value, -n N excepted). Prints
# sbatch's output (the array job id).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/launch.sh
source "$HERE/launch.sh"

opts=() throttle='' have_ntasks=''
while [[ $# -gt 0 && $1 == -* ]]; do
    case $1 in
        --array=%*) throttle=${1#--array=} ;;
        --array=*|-a) echo "submit_sweep.sh: the array range comes from the matrix (use --array=%N to throttle)" >&2; exit 2 ;;
        --ntasks=*|-n*) have_ntasks=1; opts+=("$1"); [[ $1 == -n ]] && { shift; opts+=("$1"); } ;;
        --) shift; break ;;
        *) opts+=("$1") ;;
    esac
    shift
done
MATRIX=${1:-$HERE/sweep_matrix.txt}
[[ -f $MATRIX ]] || { echo "submit_sweep.sh: no matrix file $MATRIX" >&2; exit 2; }
tasks=$(hpcqnn_matrix_lines "$MATRIX" | wc -l)
(( tasks > 0 )) || { echo "submit_sweep.sh: $MATRIX has no task lines" >&2; exit 2; }
ranks=$(hpcqnn_matrix_lines "$MATRIX" | awk 'BEGIN {m = 1} $2 > m {m = $2} END {print m}')
opts+=(--array="0-$((tasks - 1))$throttle")
[[ -n $have_ntasks ]] || opts+=(--ntasks="$ranks")
set -- "$MATRIX" "${@:2}"
exec sbatch "${opts[@]}" "$HERE/sweep.sbatch" "$@"
