#!/usr/bin/env bash
# fmae on a machine with an NVIDIA GPU: the test suite's device tests on cuda, then the report's
# 24-cell grid (sgd and adam x lr 0.1 0.01 0.001 x h 64 128 256 512, 100 epochs) timed in
# lockstep, and with --executor ray --gpus-per-cell 0.25 where Ray is installed. Prints one table.
#
#   FMAE_DATA_DIR=/path/to/fashion-mnist benchmarks/gpu_check.sh
#
# Needs: PyTorch with CUDA and fmae installed (pip install -e '.[test]'), the four Fashion-MNIST
# files (gzipped or raw) in $FMAE_DATA_DIR; no network. Settings by environment:
#   PYTHON=python3   the interpreter that has torch and fmae
#   EPOCHS=100       epochs of the grid
#   DEVICE=cuda      DEVICE=cpu EPOCHS=1 HIDDEN=8 rehearses the whole script on a machine without a GPU
#   HIDDEN="64 128 256 512"   the grid's hidden sizes (the report's by default)
#   OUT=<temp dir>   where the sweep directories go (kept, so the results can be inspected)
set -euo pipefail

PYTHON=${PYTHON:-python3}
EPOCHS=${EPOCHS:-100}
DEVICE=${DEVICE:-cuda}
read -r -a HIDDEN <<<"${HIDDEN:-64 128 256 512}"
: "${FMAE_DATA_DIR:?set FMAE_DATA_DIR to the folder holding the four Fashion-MNIST files}"
export FMAE_DATA_DIR
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/fmae-gpu-check.XXXXXX")}
mkdir -p "$OUT"

"$PYTHON" - "$DEVICE" <<'EOF'
import sys, torch, fmae
device = sys.argv[1]
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (is this the CUDA build of torch? see nvidia-smi)")
name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
print(f"fmae {fmae.__version__}, torch {torch.__version__}, device {device}: {name}")
EOF
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

row() { echo "$1 | $2 | $3 | $4"; }  # each row as soon as it is measured: a cut-off run keeps its rows
calc() { "$PYTHON" -c "print(round($1, 1))"; }  # no bc needed

GRID_CELLS=$((6 * ${#HIDDEN[@]}))
echo
echo "$GRID_CELLS-cell grid (h ${HIDDEN[*]}), $EPOCHS epochs ($((GRID_CELLS * EPOCHS)) cell-epochs), device $DEVICE; outputs in $OUT"
echo "what | wall s | ms per cell-epoch | result"
echo "--- | --- | --- | ---"

# The device tests: lockstep equals solo, a sweep in lockstep equals its --jobs 2 run, on $DEVICE.
start=$EPOCHREALTIME
if "$PYTHON" -m pytest -q -p no:cacheprovider -m device --device "$DEVICE" tests >"$OUT/device-tests.log" 2>&1; then
    status="passed"
else
    status="FAILED (see $OUT/device-tests.log)"
fi
row "pytest -m device --device $DEVICE" "$(calc "$EPOCHREALTIME - $start")" "-" "$status"

GRID=(--optim sgd adam --lr 0.1 0.01 0.001 --hidden "${HIDDEN[@]}" --epochs "$EPOCHS" --no-download -q --json)
CELL_EPOCHS=$((GRID_CELLS * EPOCHS))

best() {  # the best cell of a sweep's --json output
    "$PYTHON" - "$1" <<'EOF'
import json, sys
b = json.load(open(sys.argv[1]))["best"]
print(f"best {b['optim']} lr {b['lr']:g} h {b['hidden']}: test MSE {b['final_test_loss']:.5f}")
EOF
}

sweep() {  # name, then fmae sweep options: appends a row with wall seconds and ms per cell-epoch
    local name=$1 dir="$OUT/$1" start wall
    shift
    start=$EPOCHREALTIME
    if "$PYTHON" -m fmae sweep "${GRID[@]}" "$@" --run-dir "$dir" >"$OUT/$name.json" 2>"$OUT/$name.err"; then
        wall=$(calc "$EPOCHREALTIME - $start")
        row "fmae sweep ... $*" "$wall" "$(calc "1000 * $wall / $CELL_EPOCHS")" "$(best "$OUT/$name.json")"
    else
        row "fmae sweep ... $*" "-" "-" "FAILED: $(tail -n 1 "$OUT/$name.err")"
    fi
}

sweep lockstep --device "$DEVICE"
if "$PYTHON" -c "import ray" >/dev/null 2>&1; then
    if [ "$DEVICE" = cuda ]; then
        sweep ray --executor ray --gpus-per-cell 0.25
    else
        sweep ray --executor ray
    fi
else
    row "fmae sweep ... --executor ray" "-" "-" "not run: Ray is not installed (pip install -e '.[ray]')"
fi

