#!/usr/bin/env bash
# The paper's matrix in its own (shot-based) regime: Iris and digits x 0-3 cuts x 5 seeds, sampled
# with 1000 shots per measurement setting, on 2 ranks (slurm/sampled_matrix.txt, 40 runs), then
# the report with its seed-matrix table and figure (mean +- std over seeds per cut count).
#
#   jobs/sampled_matrix.sh [MATRIX [OUT_ROOT [hpcqnn train args for every line...]]]
#   jobs/sampled_matrix.sh                # slurm/sampled_matrix.txt -> runs/sampled/ (report: runs/sampled/report/)
#   jobs/sampled_matrix.sh my_matrix.txt runs/tiny --set training.epochs=1 --set data.max_train=16
#
# Runs the lines one after another with jobs/sweep.sh (OUT_ROOT/sampled_<i>/), then
# `python -m analysis.report OUT_ROOT/sampled_<i>... --out REPORT_DIR` (REPORT_DIR defaults to
# OUT_ROOT/report), also when some lines failed (exit status 1 then). Resumable: the same command
# again skips finished runs and continues stopped ones (SWEEP_ID is fixed to `sampled`; set
# SWEEP_ID to keep two sweeps apart in one OUT_ROOT).
#
# As a Slurm job array (one task per line, 2 tasks each; from the repository root):
#
#   mkdir -p runs/sampled
#   slurm/submit_sweep.sh --job-name=hpcqnn-sampled slurm/sampled_matrix.txt runs/sampled
#   # when the array is done (`squeue --me` is empty, or add --wait above):
#   python -m analysis.report runs/sampled --out runs/sampled/report
#
# or with the report as a dependent job:
#
#   jid=$(slurm/submit_sweep.sh --parsable --job-name=hpcqnn-sampled slurm/sampled_matrix.txt runs/sampled)
#   sbatch --dependency=afterany:${jid%%;*} --output=runs/sampled-report-%j.out \
#       --wrap="bash -c 'source slurm/env.sh && python -m analysis.report runs/sampled --out runs/sampled/report'"
#
# Task i writes runs/sampled/hpcqnn-sampled-<array job id>_<i>/; a requeued task resumes.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MATRIX=$REPO/slurm/sampled_matrix.txt
OUT_ROOT=runs/sampled
if [[ $# -gt 0 && $1 != -* ]]; then MATRIX=$1; shift; fi
if [[ $# -gt 0 && $1 != -* ]]; then OUT_ROOT=$1; shift; fi
export SWEEP_ID=${SWEEP_ID:-sampled}
REPORT_DIR=${REPORT_DIR:-$OUT_ROOT/report}

"$REPO/jobs/sweep.sh" "$MATRIX" "$OUT_ROOT" "$@"
status=$?
(( status == 2 )) && exit 2  # no matrix file: nothing ran
runs=()
for dir in "$OUT_ROOT/${SWEEP_ID}"_*; do  # the sweep's run directories, not those set aside (.incomplete-N)
    [[ -d $dir && $dir =~ _[0-9]+$ ]] && runs+=("$dir")
done
if [[ ${#runs[@]} -eq 0 ]]; then
    echo "sampled_matrix.sh: no run directory in $OUT_ROOT: no report" >&2
    exit 1
fi
source "$REPO/slurm/env.sh" || exit 1
python -m analysis.report "${runs[@]}" --out "$REPORT_DIR" || status=1
exit "$status"
