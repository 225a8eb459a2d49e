#!/usr/bin/env bash
# Run hpcqnn's GPU checks on a GPU node WITHOUT internet, from the repo root:
#     bash tests/offline_gpu/run.sh BUNDLE OUT
# BUNDLE is what tests/offline_gpu/bundle.sh built (on a machine with internet); OUT receives
# env.txt, gpucheck.txt, pytest.txt, gpubench.txt (+ gpubench.json) and summary.txt.
#
# This is only for nodes that cannot reach PyPI (Python 3.12, CuPy for CUDA 13, numpy, h5py,
# mpi4py, scikit-learn and pytest preinstalled; no qiskit, no MPI library), where everything has
# to be carried in (~60 MiB at most). On a normal GPU node do what the README's GPU section says:
# pip install -e '.[gpu]' and python -m hpcqnn.tools.gpucheck.
#
# The bundle's qiskit-aer-gpu wheel is PATCHED to fit the size limit (details in bundle.sh): the
# unused libcusolver/libcusparse dependencies are dropped, the real libcudart.so.12 is added, and
# libcustatevec.so.1 / libcutensornet.so.2 are STUBS whose every function returns an error status.
# So Aer's ordinary GPU statevector method is real, but cuStateVec (cuStateVec_enable=True) and
# method="tensor_network" are unavailable with this bundle and fail with an error.
#
# Steps, each under its own timeout, each going on when an earlier one failed: install (pip into
# /tmp, no network), env, gpucheck, pytest (tests/test_gpu.py tests/test_devices.py), gpubench.
# Timeouts add up to 485 s at worst (a GPU node needs about a minute). One summary line per
# step at the end (also OUT/summary.txt); the exit status is 1 if any step failed.
set -uo pipefail

if [[ $# != 2 ]]; then
    echo "usage: bash tests/offline_gpu/run.sh BUNDLE OUT   (from the repo root)" >&2
    exit 2
fi
BUNDLE=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" && OUT=$(cd "$2" && pwd) || exit 2
[[ -f hpcqnn/gpucheck.py ]] || { echo "run.sh: run it from the repo root" >&2; exit 2; }

SITE=/tmp/hpcqnn-site        # the Python packages of the bundle (pip --target)
MPI_PREFIX=/tmp/hpcqnn-mpich # mpich (pip --prefix: --target would drop lib/libmpi.so.12)
export BUNDLE SITE MPI_PREFIX PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
SUMMARY=()
FAILED=0

# step NAME SECONDS FILE COMMAND...: run COMMAND (a program, or one of the functions below) under a
# timeout, output to the terminal and OUT/FILE
step() {
    local name=$1 limit=$2 file=$3 start rc status
    shift 3
    if declare -F "$1" >/dev/null; then  # timeout runs programs: a function goes through bash -c
        export -f "${1?}"
        set -- bash -c "$1"
    fi
    echo "===== $name: $* (timeout ${limit}s) -> $file"
    start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$file"
    rc=${PIPESTATUS[0]}
    case $rc in
    0) status=ok ;;
    124 | 137) status="TIMED OUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
    esac
    ((rc == 0)) || FAILED=1
    SUMMARY+=("$(printf '%-9s %-22s %4ds  %s' "$name" "$status" $((SECONDS - start)) "$file")")
}
note() {  # note TEXT: appended to the last summary line
    [[ -n $1 ]] && SUMMARY[-1]+="  | $1"
}

# shellcheck disable=SC2317  # (functions run through step, i.e. bash -c)
install_bundle() {
    local pip=(python3 -m pip install -q --disable-pip-version-check --no-index --no-deps
               --no-compile --no-cache-dir --upgrade)
    rm -rf "$SITE" "$MPI_PREFIX"  # no leftovers of an earlier run
    shopt -s nullglob
    local wheels=("$BUNDLE"/*.whl) mpi=("$BUNDLE"/mpi/*.whl)
    ((${#wheels[@]} && ${#mpi[@]})) || { echo "no wheels in $BUNDLE or $BUNDLE/mpi"; return 1; }
    "${pip[@]}" --target "$SITE" "${wheels[@]}" || return 1
    "${pip[@]}" --prefix "$MPI_PREFIX" "${mpi[@]}" || return 1
    echo "installed ${#wheels[@]} wheels into $SITE and ${mpi[*]##*/} into $MPI_PREFIX"
}

# shellcheck disable=SC2317
env_summary() {
    local rc=0
    echo "## nvidia-smi -L"
    nvidia-smi -L || rc=1
    echo "## python, packages, MPI"
    python3 - <<'EOF' || rc=1
import importlib.metadata as md
import os
import sys

print("python", sys.version.split()[0], sys.executable)
for name in ("numpy", "scipy", "h5py", "mpi4py", "scikit-learn", "pytest", "qiskit", "qiskit-aer-gpu",
             "qiskit-addon-cutting", "rustworkx"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
print("MPI4PY_LIBMPI", os.environ.get("MPI4PY_LIBMPI", "(unset)"))
from mpi4py import MPI

print("MPI library:", MPI.Get_library_version().splitlines()[0].strip())
from qiskit_aer import AerSimulator

print("Aer devices:", AerSimulator().available_devices())
EOF
    echo "mpiexec: $(command -v mpiexec || echo 'NOT FOUND')"
    echo "## CuPy"
    python3 -c "import cupy; r = cupy.cuda.runtime
print('cupy', cupy.__version__, 'devices', r.getDeviceCount(), 'runtime', r.runtimeGetVersion(),
      'driver', r.driverGetVersion())" || rc=1
    return "$rc"
}

# 1. install ------------------------------------------------------------------------------------
step install 60 install.txt install_bundle

# MPI: the image's mpi4py has no MPI library to load, or no mpiexec is on PATH -> use the bundle's
# mpich for both (mpi4py's wheels load the library named by MPI4PY_LIBMPI).
if ! timeout 20 python3 -c "from mpi4py import MPI" >/dev/null 2>&1 || ! command -v mpiexec >/dev/null; then
    libmpi=$(find "$MPI_PREFIX" -name libmpi.so.12 2>/dev/null | head -n 1)
    mpiexec=$(find "$MPI_PREFIX" -path '*/bin/mpiexec' 2>/dev/null | head -n 1)
    if [[ -n $libmpi && -n $mpiexec ]]; then
        export MPI4PY_LIBMPI=$libmpi PATH=${mpiexec%/mpiexec}:$PATH
        note "MPI: bundle's mpich (MPI4PY_LIBMPI=$libmpi)"
    else
        note "MPI: none usable and no mpich under $MPI_PREFIX"
    fi
else
    note "MPI: the image's own"
fi

# 2-5. checks -----------------------------------------------------------------------------------
step env 45 env.txt env_summary
note "$(grep -m1 '^Aer devices:' "$OUT/env.txt")"

step gpucheck 60 gpucheck.txt python3 -m hpcqnn.tools.gpucheck
note "$(grep -m1 "^device='auto' here:" "$OUT/gpucheck.txt")"

step pytest 180 pytest.txt python3 -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py tests/test_devices.py
note "$(grep -E '(passed|failed|error|skipped)' "$OUT/pytest.txt" | tail -n 1 | sed 's/^=* *//; s/ *=*$//')"

step gpubench 120 gpubench.txt python3 -m hpcqnn.tools.gpubench --queries 3 --large-qubits 22 --json "$OUT/gpubench.json"
note "$(grep -m1 '^GPU' "$OUT/gpubench.txt")"

# summary -----------------------------------------------------------------------------------------
{
    echo "===== summary ($(hostname), $(date -u +%FT%TZ)); outputs in $OUT"
    printf '%s\n' "${SUMMARY[@]}"
    ((FAILED)) && echo "SOME STEPS FAILED" || echo "ALL STEPS OK"
} | tee "$OUT/summary.txt"
exit "$FAILED"
