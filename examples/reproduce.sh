#!/bin/sh
# Reproduce the report end to end: both grid searches (SGD and Adam, lr {0.1, 0.01, 0.001} x
# h {64, 128, 256, 512}), the denoising comparison of the best SGD and Adam models at several
# sigma, every figure, and RUN_DIR/report.md built from the results.
#
#   examples/reproduce.sh RUN_DIR              # the report's 100 epochs
#   EPOCHS=5 examples/reproduce.sh runs/quick   # a short rehearsal
#
# Re-running the same command resumes: finished cells are skipped. The sweeps run in the portable
# mode (--reproducible, 2 cells at a time), so their losses equal the seed-0 rows of
# docs/results/grid/cells.csv digit for digit, on any x86-64 CPU; examples/study.sh makes all of
# docs/results (3 seeds, halving, learning rates beyond the grid).
set -eu

RUN_DIR=${1:?usage: examples/reproduce.sh RUN_DIR}
EPOCHS=${EPOCHS:-100}
SIGMAS=${SIGMAS:-0.25 0.5 0.75 1}
FMAE=${FMAE:-fmae}
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-python3}

mkdir -p "$RUN_DIR/figures"
start=$(date +%s)

for optim in sgd adam; do
  # shellcheck disable=SC2086 # the grid values are meant to split
  $FMAE sweep --optim "$optim" --lr 0.1 0.01 0.001 --hidden 64 128 256 512 --epochs "$EPOCHS" \
    --reproducible --jobs "$JOBS" --run-dir "$RUN_DIR/$optim" --json > "$RUN_DIR/$optim.json"
done

# shellcheck disable=SC2086
$FMAE denoise --ckpt "$RUN_DIR/sgd/best.pt" "$RUN_DIR/adam/best.pt" --sigma $SIGMAS \
  --out "$RUN_DIR/figures/denoise.png" --curve "$RUN_DIR/figures/denoise-curve.png" --json > "$RUN_DIR/denoise.json"
$FMAE eval --ckpt "$RUN_DIR/sgd/best.pt" "$RUN_DIR/adam/best.pt" --baseline pca --json > "$RUN_DIR/eval.json"
$FMAE plot "$RUN_DIR/sgd" "$RUN_DIR/adam" --train --out "$RUN_DIR/figures" --json > "$RUN_DIR/figures.json"

end=$(date +%s)
"$PYTHON" - "$RUN_DIR" "$EPOCHS" "$((end - start))" <<'PY'
import json, sys
from pathlib import Path

run_dir, epochs, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
load = lambda name: json.loads((run_dir / name).read_text())
fmt = lambda v: "-" if v is None else f"{v:.5f}"
out = [f"# Autoencoders on Fashion-MNIST: the report reproduced ({epochs} epochs)", "",
       f"Made by `examples/reproduce.sh {run_dir}` in {seconds // 60} min {seconds % 60} s.", ""]
for optim in ("sgd", "adam"):
    doc = load(f"{optim}.json")
    out += [f"## {optim.upper()}: final test MSE over the grid", "",
            "| lr \\ h | " + " | ".join(str(h) for h in (64, 128, 256, 512)) + " |", "| --- " * 5 + "|"]
    cells = {(c["lr"], c["hidden"]): c for c in doc["cells"]}
    for lr in (0.1, 0.01, 0.001):
        row = []
        for h in (64, 128, 256, 512):
            c = cells.get((lr, h))
            v = "diverged" if c and c["status"] == "diverged" else fmt(c and c["final_test_loss"])
            v += " (collapsed)" if c and c["status"] == "collapsed" else ""
            row.append(f"**{v}**" if c and c["rank"] == 1 else v)
        out.append(f"| {lr:g} | " + " | ".join(row) + " |")
    b = doc["best"]
    out += ["", f"Best: lr {b['lr']:g}, h {b['hidden']}, final test MSE {fmt(b['final_test_loss'])} "
                f"(best {fmt(b['best_test_loss'])} at epoch {b['best_epoch']}).", ""]
ev = load("eval.json")
out += ["## The best models on the test set", "", "| model | MSE | PSNR (dB) | SSIM | PCA MSE, k = h |",
        "| --- | --- | --- | --- | --- |"]
for c in ev["checkpoints"]:
    out.append(f"| {c['optim'].upper()} lr {c['lr']:g} h {c['hidden']} | {fmt(c['mse'])} | {c['psnr']:.2f} | "
               f"{c['ssim']:.4f} | {fmt(c.get('pca_mse'))} |")
dn = load("denoise.json")
out += ["", f"## Denoising: {dn['noise']} noise, {dn['images']} test images, seed {dn['seed']}", "",
        "| model | sigma | noisy PSNR | output PSNR | gain (dB) | noisy SSIM | output SSIM |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
names = {c["checkpoint"]: f"{c['optim'].upper()} h {c['hidden']}" for c in ev["checkpoints"]}
for r in dn["results"]:
    out.append(f"| {names.get(r['checkpoint'], r['checkpoint'])} | {r['sigma']:g} | {r['noisy']['psnr']:.2f} | "
               f"{r['output']['psnr']:.2f} | {r['gain']['psnr']:+.2f} | {r['noisy']['ssim']:.4f} | "
               f"{r['output']['ssim']:.4f} |")
out += ["", "## Figures", ""]
figures = load("figures.json")["figures"]
figures.update({"denoise": str(run_dir / "figures/denoise.png"),
                "denoise-curve": str(run_dir / "figures/denoise-curve.png")})
for kind, path in figures.items():
    out += [f"### {kind}", "", f"![{kind}](figures/{Path(path).name})", ""]
(run_dir / "report.md").write_text("\n".join(out))
print(run_dir / "report.md")
PY
