#!/usr/bin/env bash
# fmae on a machine with a GPU, measured in one run, printed as one table (each row as soon as it
# is measured, so a run cut short keeps its rows):
#   - the report's 24-cell grid (sgd and adam x lr 0.1 0.01 0.001 x h 64 128 256 512), $EPOCHS
#     epochs, with the stacked engine;
#   - the same grid with the per-cell engine, $CELL_EPOCHS epochs;
#   - the 72-cell grid (--seed 1 2 3), $EPOCHS epochs, stacked;
#   - `fmae train` at h $TRAIN_HIDDEN, $EPOCHS epochs;
#   - the loop a user writes by hand (nn.Sequential + torch.optim, the data on the device), per cell;
#   - the device tests, `pytest -m device --device $DEVICE`.
# Columns: wall seconds of the whole command (start-up included), milliseconds per cell-epoch of
# that wall time, and inside the training loop (the `seconds` of every cell's metrics.csv, summed).
#
#   FMAE_DATA_DIR=/path/to/fashion-mnist benchmarks/gpu_check.sh
#
# Needs: PyTorch with CUDA and fmae installed (pip install -e '.[test]'), the four Fashion-MNIST
# files (gzipped or raw) in $FMAE_DATA_DIR; no network. Settings by environment:
#   PYTHON=python3        the interpreter that has torch and fmae
#   DEVICE=cuda           cuda, mps or cpu
#   EPOCHS=100            epochs of the stacked grids and of fmae train
#   CELL_EPOCHS=10        epochs of the per-cell grid
#   HIDDEN="64 128 256 512"  the grids' hidden sizes (the report's by default)
#   TRAIN_HIDDEN=512      hidden size of the fmae train row
#   REF_EPOCHS=3          epochs of each cell of the hand-written loop (the first one is not timed when > 1)
#   DEVICE_TESTS=1        0 leaves out the pytest row
#   OUT=<temp dir>        where the runs go (kept, so the results can be inspected)
# The rehearsal on a machine without a GPU (tests/test_benchmarks.py runs it in CI):
#   DEVICE=cpu EPOCHS=1 CELL_EPOCHS=1 HIDDEN=8 TRAIN_HIDDEN=8 REF_EPOCHS=1 DEVICE_TESTS=0 benchmarks/gpu_check.sh
# `--engine stacked|cells` is passed where `fmae sweep --help` offers it; an fmae without it runs
# its one engine in both rows, and the table says so.
set -euo pipefail

PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-100}
CELL_EPOCHS=${CELL_EPOCHS:-10}
TRAIN_HIDDEN=${TRAIN_HIDDEN:-512}
REF_EPOCHS=${REF_EPOCHS:-3}
DEVICE_TESTS=${DEVICE_TESTS:-1}
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
name = torch.cuda.get_device_name(0) if device == "cuda" else device
print(f"fmae {fmae.__version__}, torch {torch.__version__}, device {device}: {name}")
EOF
if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

calc() { "$PYTHON" -c "print(round($1, 1))"; }  # no bc needed
row() { echo "$1 | $2 | $3 | $4 | $5"; }

if COLUMNS=200 "$PYTHON" -m fmae sweep --help | grep -q -- "--engine"; then
    STACKED=(--engine stacked) CELLS=(--engine cells) STACKED_NAME="stacked" CELLS_NAME="per-cell engine"
else
    STACKED=() CELLS=() STACKED_NAME="default engine (no --engine here)" CELLS_NAME="default engine (no --engine here)"
fi

GRID_CELLS=$((6 * ${#HIDDEN[@]}))
echo
echo "h ${HIDDEN[*]}: $GRID_CELLS-cell grid; device $DEVICE; outputs in $OUT"
echo "what | wall s | ms per cell-epoch | in-loop ms per cell-epoch | result"
echo "--- | --- | --- | --- | ---"

in_loop() {  # ms per cell-epoch inside the training loop: every metrics.csv under $1, its seconds summed
    "$PYTHON" - "$1" <<'EOF'
import csv, pathlib, sys
rows = [r for p in pathlib.Path(sys.argv[1]).rglob("metrics.csv") for r in csv.DictReader(open(p))]
print(round(1000 * sum(float(r["seconds"]) for r in rows) / len(rows), 1) if rows else "-")
EOF
}

best() {  # the best cell of a sweep's --json output
    "$PYTHON" - "$1" <<'EOF'
import json, sys
b = json.load(open(sys.argv[1]))["best"]
print(f"best {b['optim']} lr {b['lr']:g} h {b['hidden']}: test MSE {b['final_test_loss']:.5f}" if b else "no best cell")
EOF
}

measure() {  # name, cell-epochs, result command, then the fmae command line: appends its row
    local name=$1 cell_epochs=$2 result=$3 dir="$OUT/$1" start wall
    shift 3
    start=$EPOCHREALTIME
    if "$PYTHON" -m fmae "$@" --run-dir "$dir" --no-download -q --json >"$OUT/$name.json" 2>"$OUT/$name.err"; then
        wall=$(calc "$EPOCHREALTIME - $start")
        row "fmae $*" "$wall" "$(calc "1000 * $wall / $cell_epochs")" "$(in_loop "$dir")" "$($result "$OUT/$name.json")"
    else
        row "fmae $*" "-" "-" "-" "FAILED: $(tail -n 1 "$OUT/$name.err")"
    fi
}

trained() {  # the result of fmae train's --json output
    "$PYTHON" - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{d['status']}: test MSE {d['final_test_loss']:.5f}")
EOF
}

GRID=(--optim sgd adam --lr 0.1 0.01 0.001 --hidden "${HIDDEN[@]}" --device "$DEVICE")
measure grid-stacked $((GRID_CELLS * EPOCHS)) best sweep "${GRID[@]}" --epochs "$EPOCHS" "${STACKED[@]}"
echo "  ^ $GRID_CELLS cells x $EPOCHS epochs, $STACKED_NAME"
measure grid-cells $((GRID_CELLS * CELL_EPOCHS)) best sweep "${GRID[@]}" --epochs "$CELL_EPOCHS" "${CELLS[@]}"
echo "  ^ $GRID_CELLS cells x $CELL_EPOCHS epochs, $CELLS_NAME"
measure grid-seeds $((3 * GRID_CELLS * EPOCHS)) best sweep "${GRID[@]}" --seed 1 2 3 --epochs "$EPOCHS" "${STACKED[@]}"
echo "  ^ $((3 * GRID_CELLS)) cells x $EPOCHS epochs, $STACKED_NAME"
measure train "$EPOCHS" trained train --hidden "$TRAIN_HIDDEN" --epochs "$EPOCHS" --device "$DEVICE"

# The loop a user writes: nn.Sequential + torch.optim, the dataset on the device as floats,
# fmae's defaults (batch 1000, dropout 0.1, ReLU output, MSE); one cell per (optimizer, hidden size).
start=$EPOCHREALTIME
if ref=$("$PYTHON" - "$DEVICE" "$REF_EPOCHS" "${HIDDEN[@]}" 2>"$OUT/reference.err" <<'EOF'
import statistics, sys, time
import torch
from torch import nn
from fmae import data

device, epochs, hiddens = torch.device(sys.argv[1]), int(sys.argv[2]), [int(h) for h in sys.argv[3:]]
dataset = data.find_and_load(None, download=False, device=device, on_found=lambda _m: None)
train_x = dataset.train_images.reshape(-1, 784).float().div_(255)
test_x = dataset.test_images.reshape(-1, 784).float().div_(255)
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
per_epoch = []
for optim, lr in (("sgd", 0.1), ("adam", 0.001)):
    for h in hiddens:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, h), nn.ReLU(), nn.Dropout(0.1), nn.Linear(h, 784), nn.ReLU()).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=lr) if optim == "sgd" else torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.MSELoss()
        for epoch in range(epochs):
            sync()
            t0 = time.perf_counter()
            model.train()
            for idx in torch.randperm(len(train_x), device=device).split(1000):
                x = train_x[idx]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), x).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                test = sum(float(loss_fn(model(x), x)) * len(x) for x in test_x.split(1000)) / len(test_x)
            sync()
            if epoch > 0 or epochs == 1:  # the first epoch warms up (kernels, allocator) when there are more
                per_epoch.append(time.perf_counter() - t0)
print(f"{1000 * statistics.mean(per_epoch):.1f} {len(per_epoch)}")
EOF
); then
    read -r ms timed <<<"$ref"
    row "reference loop (nn.Sequential + torch.optim), 2 optimizers x h ${HIDDEN[*]}, $REF_EPOCHS epochs" \
        "$(calc "$EPOCHREALTIME - $start")" "-" "$ms" "mean of $timed timed cell-epochs"
else
    row "reference loop (nn.Sequential + torch.optim)" "-" "-" "-" "FAILED: $(tail -n 1 "$OUT/reference.err")"
fi

if [ "$DEVICE_TESTS" = 1 ]; then
    start=$EPOCHREALTIME
    if "$PYTHON" -m pytest -q -p no:cacheprovider -m device --device "$DEVICE" tests >"$OUT/device-tests.log" 2>&1; then
        status="passed: $(tail -n 1 "$OUT/device-tests.log")"
    else
        status="FAILED (see $OUT/device-tests.log)"
    fi
    row "pytest -m device --device $DEVICE" "$(calc "$EPOCHREALTIME - $start")" "-" "-" "$status"
fi
