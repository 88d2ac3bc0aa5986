#!/bin/sh
# Every figure and number in docs/results, from the current code, in one command:
#
#   examples/study.sh RUN_DIR [DOCS_DIR]        # DOCS_DIR defaults to docs/results
#   REUSE=1 examples/study.sh RUN_DIR           # sweeps whose results.json exists are not called again
#   STEPS=3 examples/study.sh runs/study        # only step 3 (steps are 1 2 3; step 4 always runs)
#   EPOCHS=3 SEEDS30_EPOCHS=1 examples/study.sh runs/rehearsal /tmp/docs   # a short rehearsal
#
# 1. examples/reproduce.sh: the report's two 12-cell grids (100 epochs, seed 0, all cores), the
#    denoising comparison, the evaluation, their figures and report.md.
# 2. The seeds study at 30 epochs (3 seeds) and the report's grids with successive halving (1 thread).
# 3. The seeds study at 100 epochs (5 seeds) for Adam lr 0.001 and SGD lr 0.1 at h 256 and 512, and the
#    learning rates beyond the grid's edges at h 512 (SGD 0.2 0.5 1.0, Adam 0.0003 0.0001; 3 seeds), 1 thread;
#    the denoising comparison of the 5 seeds of each optimizer's best model (h 512).
# 4. The CSVs, per-epoch curves and figures of whatever RUN_DIR holds copied into DOCS_DIR, then the
#    generated tables of DOCS_DIR/README.md rewritten from those files (examples/study_tables.py).
#
# Every sweep resumes: rerunning the command skips finished cells and trains on from the last saved
# epoch of an interrupted one. Step 1 took 53 minutes on a 2-core CPU; the training time of every
# other file is in docs/results/README.md ("Compute per file"): hours, on such a machine.
set -eu

RUN_DIR=${1:?usage: examples/study.sh RUN_DIR [DOCS_DIR]}
DOCS_DIR=${2:-docs/results}
EPOCHS=${EPOCHS:-100}
SEEDS30_EPOCHS=${SEEDS30_EPOCHS:-30}
REUSE=${REUSE:-0}
STEPS=${STEPS:-1 2 3}
FMAE=${FMAE:-fmae}
PYTHON=${PYTHON:-python3}
HERE=$(dirname "$0")
S="--epochs $EPOCHS --threads 1 --quiet --json"

# run NAME ARGS...: one sweep into RUN_DIR/NAME, its JSON document in RUN_DIR/NAME.json; with REUSE=1 a
# sweep whose results.json exists is not called again. grow NAME ARGS...: the same sweep with more cells,
# always called (its finished cells are skipped, the new ones trained).
run() {
  name=$1
  shift
  if [ "$REUSE" = 1 ] && [ -f "$RUN_DIR/$name/results.json" ]; then
    echo "reusing $RUN_DIR/$name" >&2
    return 0
  fi
  # shellcheck disable=SC2086 # the option lists are meant to split
  $FMAE sweep "$@" --run-dir "$RUN_DIR/$name" > "$RUN_DIR/$name.json"
}
grow() {
  name=$1
  shift
  $FMAE sweep "$@" --run-dir "$RUN_DIR/$name" > "$RUN_DIR/$name.json"
}

mkdir -p "$RUN_DIR" "$DOCS_DIR/figures" "$DOCS_DIR/seeds" "$DOCS_DIR/seeds100/curves" "$DOCS_DIR/edge"

has_step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# 1. the report's grids, denoising, evaluation, figures, report.md
if has_step 1; then
  if [ "$REUSE" = 1 ] && [ -f "$RUN_DIR/report/report.md" ]; then
    echo "reusing $RUN_DIR/report" >&2
  else
    EPOCHS=$EPOCHS FMAE=$FMAE PYTHON=$PYTHON "$HERE/reproduce.sh" "$RUN_DIR/report"
  fi
fi

# 2. seeds at 30 epochs; the grids with successive halving
if has_step 2; then
  run seeds-adam --optim adam --lr 0.001 --hidden 64 128 256 512 --seed 0 1 2 --epochs "$SEEDS30_EPOCHS" --threads 1 --quiet --json
  run seeds-sgd --optim sgd --lr 0.1 --hidden 64 128 256 512 --seed 0 1 2 --epochs "$SEEDS30_EPOCHS" --threads 1 --quiet --json
  for optim in sgd adam; do
    # shellcheck disable=SC2086 # the option lists are meant to split
    run "$optim-sh" --optim "$optim" --lr 0.1 0.01 0.001 --hidden 64 128 256 512 --prune halving $S
  done
fi

# 3. seeds at 100 epochs (h 512 first, so the deciding cells finish first), then beyond the grid's edges
if has_step 3; then
  # shellcheck disable=SC2086
  run seeds100-adam --optim adam --lr 0.001 --hidden 512 --seed 0 1 2 3 4 $S
  # shellcheck disable=SC2086
  run seeds100-sgd --optim sgd --lr 0.1 --hidden 512 --seed 0 1 2 3 4 $S
  # shellcheck disable=SC2086
  grow seeds100-adam --optim adam --lr 0.001 --hidden 256 512 --seed 0 1 2 3 4 $S
  # shellcheck disable=SC2086
  grow seeds100-sgd --optim sgd --lr 0.1 --hidden 256 512 --seed 0 1 2 3 4 $S
  # each optimizer's best denoiser (h = 512), its 5 seeds, at the report's noise and four constants
  if [ "$REUSE" = 1 ] && [ -f "$RUN_DIR/denoise100.json" ]; then
    echo "reusing $RUN_DIR/denoise100.json" >&2
  else
    $FMAE denoise --ckpt "$RUN_DIR"/seeds100-sgd/cells/sgd-lr0.1-h512-s*/model.pt \
      "$RUN_DIR"/seeds100-adam/cells/adam-lr0.001-h512-s*/model.pt --sigma 0.25 0.5 0.75 1 --quiet --json \
      > "$RUN_DIR/denoise100.json"
  fi
  # shellcheck disable=SC2086
  run edge-sgd --optim sgd --lr 0.2 0.5 1.0 --hidden 512 --seed 0 1 2 $S
  # shellcheck disable=SC2086
  run edge-adam --optim adam --lr 0.0003 0.0001 --hidden 512 --seed 0 1 2 $S
fi

# 4. into DOCS_DIR: whatever RUN_DIR holds (the steps run now or before)
copy_csv() {  # SRC DST: paths under an absolute RUN_DIR made relative to it (no machine's paths in docs)
  case $RUN_DIR in
    /*) sed "s#$RUN_DIR/##g" "$1" > "$2" ;;
    *) cp "$1" "$2" ;;
  esac
}
figs=$RUN_DIR/study-figures
rm -rf "$figs" && mkdir -p "$figs"
R=$RUN_DIR/report
if [ -f "$R/report.md" ]; then
  copy_csv "$R/sgd/results.csv" "$DOCS_DIR/sgd-results.csv"
  copy_csv "$R/adam/results.csv" "$DOCS_DIR/adam-results.csv"
  for f in eval.json denoise.json report.md; do
    copy_csv "$R/$f" "$DOCS_DIR/$f"
  done
  cp "$R"/figures/*.png "$DOCS_DIR/figures/"
fi
for optim in adam sgd; do
  if [ -f "$RUN_DIR/seeds-$optim/results.csv" ]; then
    copy_csv "$RUN_DIR/seeds-$optim/results.csv" "$DOCS_DIR/seeds/$optim-cells.csv"
    copy_csv "$RUN_DIR/seeds-$optim/results_groups.csv" "$DOCS_DIR/seeds/$optim-groups.csv"
  fi
  if [ -f "$RUN_DIR/$optim-sh/results.csv" ]; then
    copy_csv "$RUN_DIR/$optim-sh/results.csv" "$DOCS_DIR/seeds/halving-$optim-cells.csv"
  fi
  if [ -f "$RUN_DIR/seeds100-$optim/results.csv" ]; then
    copy_csv "$RUN_DIR/seeds100-$optim/results.csv" "$DOCS_DIR/seeds100/$optim-cells.csv"
    copy_csv "$RUN_DIR/seeds100-$optim/results_groups.csv" "$DOCS_DIR/seeds100/$optim-groups.csv"
    for cell in "$RUN_DIR/seeds100-$optim"/cells/*/; do
      cp "$cell/metrics.csv" "$DOCS_DIR/seeds100/curves/$(basename "$cell").csv"
    done
  fi
  if [ -f "$RUN_DIR/edge-$optim/results.csv" ]; then
    copy_csv "$RUN_DIR/edge-$optim/results.csv" "$DOCS_DIR/edge/$optim-cells.csv"
    copy_csv "$RUN_DIR/edge-$optim/results_groups.csv" "$DOCS_DIR/edge/$optim-groups.csv"
  fi
done
if [ -f "$RUN_DIR/denoise100.json" ]; then
  copy_csv "$RUN_DIR/denoise100.json" "$DOCS_DIR/seeds100/denoise.json"
fi
# plot NAME SWEEP...: `fmae plot` of the seeds (and curves) of these sweeps into RUN_DIR/study-figures/NAME
plot() {
  name=$1
  kinds=$2
  shift 2
  for d in "$@"; do [ -f "$d/results.csv" ] || return 0; done
  # shellcheck disable=SC2086
  $FMAE plot "$@" --kind $kinds --out "$figs/$name" --quiet
}
plot seeds "seeds curves" "$RUN_DIR/seeds-sgd" "$RUN_DIR/seeds-adam"
plot seeds100 "seeds curves" "$RUN_DIR/seeds100-sgd" "$RUN_DIR/seeds100-adam"
plot edge seeds "$RUN_DIR/seeds100-sgd" "$RUN_DIR/edge-sgd" "$RUN_DIR/seeds100-adam" "$RUN_DIR/edge-adam"
for f in seeds/seeds.png:seeds.png seeds/curves.png:seeds-curves.png seeds100/seeds.png:seeds100.png \
         seeds100/curves.png:seeds100-curves.png edge/seeds.png:edge.png; do
  if [ -f "$figs/${f%%:*}" ]; then
    cp "$figs/${f%%:*}" "$DOCS_DIR/figures/${f#*:}"
  fi
done
"$PYTHON" "$HERE/study_tables.py" "$DOCS_DIR" --write
