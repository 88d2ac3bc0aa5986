#!/bin/sh
# Every file, figure and number in docs/results, made by the current code in the portable mode
# (--reproducible: the same bits on any x86-64 CPU with AVX2), in one command:
#
#   examples/study.sh RUN_DIR [DOCS_DIR]        # DOCS_DIR defaults to docs/results
#   REUSE=1 examples/study.sh RUN_DIR           # sweeps with a provenance record are not called again
#   STEPS="grid seeds" examples/study.sh RUN    # only these steps (grid seeds halving edge; "docs" always runs)
#   EPOCHS=2 SEEDS="0 1" examples/study.sh runs/rehearsal /tmp/docs   # a short rehearsal
#
# grid     the report's grid, both optimizers, lr 0.1 0.01 0.001 x h 64 128 256 512, seeds 0 1 2,
#          100 epochs; one seed at a time, so that an interrupted study holds whole grids
# seeds    seeds 3 and 4 of each optimizer's best learning rate at h 256 and 512 (5 seeds there)
# halving  the grid of each optimizer again with successive halving (seed 0)
# edge     the learning rates beyond the grid's edges at h 512, seeds 0 1 2
# docs     the evaluation and denoising of the best models, the CSVs (and every cell's per-epoch
#          curve), the figures and a provenance record per file copied into DOCS_DIR, then the
#          generated tables rewritten (examples/study_tables.py)
#
# Every sweep resumes: rerunning the command skips finished cells and trains on from the last saved
# epoch of an interrupted one, so the study may be split over several sittings. On a 2-core CPU with
# AVX-512 the steps' cells trained for 227, 42, 18 and 90 minutes in all (docs/results/README.md,
# "Compute per file"); with --jobs 2 the wall time is a little over half of that.
set -eu

RUN_DIR=${1:?usage: examples/study.sh RUN_DIR [DOCS_DIR]}
DOCS_DIR=${2:-docs/results}
EPOCHS=${EPOCHS:-100}
SEEDS=${SEEDS:-0 1 2}
JOBS=${JOBS:-2}
REUSE=${REUSE:-0}
STEPS=${STEPS:-grid seeds halving edge}
FMAE=${FMAE:-fmae}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
S="--epochs $EPOCHS --reproducible --jobs $JOBS --quiet --json"
COMMIT=$(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo unknown)
GRID="--lr 0.1 0.01 0.001 --hidden 64 128 256 512"

mkdir -p "$RUN_DIR"
has_step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# sweep NAME ARGS...: one sweep into RUN_DIR/NAME, its JSON document in RUN_DIR/NAME.json and its
# provenance (the command, the code's commit, when it ended) in RUN_DIR/NAME.provenance.json; with
# REUSE=1 a sweep that has a provenance record is not called again.
sweep() {
  name=$1
  shift
  if [ "$REUSE" = 1 ] && [ -f "$RUN_DIR/$name.provenance.json" ]; then
    echo "reusing $RUN_DIR/$name" >&2
    return 0
  fi
  # shellcheck disable=SC2086 # the option lists are meant to split
  $FMAE sweep "$@" --run-dir "$RUN_DIR/$name" > "$RUN_DIR/$name.json"
  "$PYTHON" "$HERE/provenance.py" record "$RUN_DIR" "$name" "$COMMIT" fmae sweep "$@" --run-dir "RUN_DIR/$name"
}

if has_step grid; then
  if [ "$REUSE" = 1 ] && [ -f "$RUN_DIR/grid.provenance.json" ]; then
    echo "reusing $RUN_DIR/grid" >&2
  else
    seeds=""
    for s in $SEEDS; do  # seed 0's grid, then seed 1's cells added, ...: finished cells are skipped
      seeds="$seeds $s"
      # shellcheck disable=SC2086
      $FMAE sweep --optim sgd adam $GRID --seed $seeds $S --run-dir "$RUN_DIR/grid" > "$RUN_DIR/grid.json"
    done
    # shellcheck disable=SC2086
    "$PYTHON" "$HERE/provenance.py" record "$RUN_DIR" grid "$COMMIT" fmae sweep --optim sgd adam $GRID --seed $SEEDS $S \
      --run-dir RUN_DIR/grid
  fi
fi
if has_step seeds; then
  # shellcheck disable=SC2086
  sweep seeds-adam --optim adam --lr 0.001 --hidden 512 256 --seed 3 4 $S
  # shellcheck disable=SC2086
  sweep seeds-sgd --optim sgd --lr 0.1 --hidden 512 256 --seed 3 4 $S
fi
if has_step halving; then
  for optim in sgd adam; do
    # shellcheck disable=SC2086
    sweep "$optim-sh" --optim "$optim" $GRID --prune halving $S
  done
fi
if has_step edge; then
  # shellcheck disable=SC2086
  sweep edge-sgd --optim sgd --lr 0.2 0.5 1.0 --hidden 512 --seed $SEEDS $S
  # shellcheck disable=SC2086
  sweep edge-adam --optim adam --lr 0.0003 0.0001 --hidden 512 --seed $SEEDS $S
fi

# docs: the best models evaluated and compared as denoisers, then everything copied into DOCS_DIR
G=$RUN_DIR/grid/cells
if [ -f "$RUN_DIR/grid.provenance.json" ]; then
  best="$G/sgd-lr0.1-h512-s0/model.pt $G/adam-lr0.001-h512-s0/model.pt"
  # shellcheck disable=SC2086
  $FMAE eval --ckpt $best --baseline pca --quiet --json > "$RUN_DIR/eval.json"
  # shellcheck disable=SC2086
  $FMAE denoise --ckpt $best --sigma 0.25 0.5 0.75 1 --out "$RUN_DIR/denoise.png" \
    --curve "$RUN_DIR/denoise-curve.png" --quiet --json > "$RUN_DIR/denoise.json"
  "$PYTHON" "$HERE/provenance.py" command "$RUN_DIR" eval "$COMMIT" fmae eval --ckpt "<the two seed-0 models>" --baseline pca
  "$PYTHON" "$HERE/provenance.py" command "$RUN_DIR" denoise "$COMMIT" fmae denoise --ckpt "<the two seed-0 models>" \
    --sigma 0.25 0.5 0.75 1
  # each optimizer's best model (h 512) over its seeds: the grid's, and seeds 3 4 once made
  extra=""
  if [ -f "$RUN_DIR/seeds-sgd.provenance.json" ] && [ -f "$RUN_DIR/seeds-adam.provenance.json" ]; then
    extra="$RUN_DIR/seeds-sgd/cells/sgd-lr0.1-h512-s*/model.pt $RUN_DIR/seeds-adam/cells/adam-lr0.001-h512-s*/model.pt"
  fi
  # shellcheck disable=SC2086 # the globs are meant to expand
  $FMAE denoise --ckpt "$G"/sgd-lr0.1-h512-s*/model.pt "$G"/adam-lr0.001-h512-s*/model.pt $extra \
    --sigma 0.25 0.5 0.75 1 --quiet --json > "$RUN_DIR/denoise-seeds.json"
  "$PYTHON" "$HERE/provenance.py" command "$RUN_DIR" denoise-seeds "$COMMIT" fmae denoise \
    --ckpt "<the h 512 models of sgd lr 0.1 and adam lr 0.001, every seed>" --sigma 0.25 0.5 0.75 1
fi
# the figures: fmae plot of the sweeps (curves on a log and on a linear axis, heatmap, compare, seeds, recon)
figs=$RUN_DIR/figures
rm -rf "$figs" && mkdir -p "$figs"
if [ -f "$RUN_DIR/grid.provenance.json" ]; then
  $FMAE plot "$RUN_DIR/grid" --train --out "$figs" --quiet
  $FMAE plot "$RUN_DIR/grid" --kind curves compare --linear --out "$figs/linear" --quiet
  cp "$RUN_DIR/denoise.png" "$RUN_DIR/denoise-curve.png" "$figs/"
  "$PYTHON" "$HERE/provenance.py" command "$RUN_DIR" figures "$COMMIT" fmae plot RUN_DIR/grid --train \
    "(and --kind curves compare --linear)"
fi
if [ -f "$RUN_DIR/edge-sgd.provenance.json" ] && [ -f "$RUN_DIR/edge-adam.provenance.json" ]; then
  # every learning rate at h 512, the grid's and beyond its edges: the h 512 cells (training runs) of
  # the grid and of the seeds step, and the edge sweeps
  # shellcheck disable=SC2086 # the globs are meant to expand
  $FMAE plot "$G"/*-h512-s* "$RUN_DIR"/seeds-*/cells/*-h512-s* "$RUN_DIR/edge-sgd" "$RUN_DIR/edge-adam" \
    --kind seeds --out "$figs/edge" --quiet
  "$PYTHON" "$HERE/provenance.py" command "$RUN_DIR" figures-edge "$COMMIT" fmae plot "RUN_DIR/grid/cells/*-h512-s*" \
    "RUN_DIR/seeds-*/cells/*-h512-s*" RUN_DIR/edge-sgd RUN_DIR/edge-adam --kind seeds
fi
"$PYTHON" "$HERE/provenance.py" publish "$RUN_DIR" "$DOCS_DIR"
"$PYTHON" "$HERE/study_tables.py" "$DOCS_DIR" --write
