#!/usr/bin/env bash
# The large-QNN benchmark: 20-80 qubits in 10-qubit pieces (one CX cut between neighbouring
# pieces), exact and 1000-shot sampled, at 1, 2 and 4 ranks, then the figures.
#
#   jobs/large_qnn.sh [OUT_DIR]          # default runs/large-<timestamp>
#   WIDTHS="20 40" RANKS="1 2" QUERIES=5 jobs/large_qnn.sh
#
# Every (width, ranks) is its own `mpiexec` so each rank's peak memory belongs to that width
# alone. The addon's pipeline runs beside the 1-rank settings up to 40 qubits (it needs 864
# subexperiments there; about a minute). Then `python -m analysis.large` writes the table and
# plots into OUT_DIR.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-runs/large-$(date +%Y%m%d-%H%M%S)}
WIDTHS=${WIDTHS:-20 30 40 60 80}
RANKS=${RANKS:-1 2 4}
QUERIES=${QUERIES:-10}
source "$REPO/slurm/env.sh"
MPIEXEC=${MPIEXEC:-mpiexec}
mkdir -p "$OUT"
for ranks in $RANKS; do
    for width in $WIDTHS; do
        reference=$([[ $ranks == 1 ]] && echo 1 || echo 0)
        echo "large_qnn.sh: $width qubits on $ranks ranks"
        "$MPIEXEC" -n "$ranks" hpcqnn bench --qubits "$width" --piece-qubits 10 --cuts 1 --layers 2 \
            --shots 1000 --queries "$QUERIES" --reference-queries "$reference" --json "$OUT/q$width-r$ranks.json"
    done
done
python -m analysis.large "$OUT"/q*-r*.json --out "$OUT"
