"""Seconds per epoch of fmae's engine against the plain torchvision recipe and the FLOP limit.

    python benchmarks/train_speed.py [--epochs 5] [--recipe-epochs 1]

For h = 64 and 512, fp32 and bf16: fmae's seconds per epoch (median over epochs after the
first), the torchvision recipe's (same model, optimizer, files, process), the machine's matmul
rate at these shapes, and the fraction of the FLOP limit (design.md) reached.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    command_line,
    epoch_flops,
    matmul_rate,
    raw_copy_for_torchvision,
    torchvision_epoch_seconds,
)
from fmae import data, engine  # noqa: E402
from fmae.config import ModelConfig, TrainConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--recipe-epochs", type=int, default=1)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    args = parser.parse_args()

    device = torch.device("cpu")
    dataset = data.load(data.locate(None, download=False), device)
    root = raw_copy_for_torchvision()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    rows, final = [], {}
    for hidden in args.hidden:
        recipe = torchvision_epoch_seconds(root, hidden, "adam", 0.001, args.recipe_epochs)
        for precision in args.precision:
            config = TrainConfig(model=ModelConfig(hidden=hidden), optim="adam", epochs=args.epochs,
                                 precision=precision)
            result = engine.train(config, dataset, device)
            per_epoch = statistics.median(m.seconds for m in result.history[1:] or result.history)
            rate = matmul_rate(hidden, torch.float32 if precision == "fp32" else torch.bfloat16)
            limit = epoch_flops(hidden) / rate
            final[(hidden, precision)] = result.history[-1].test_loss
            rows.append((hidden, precision, per_epoch, recipe, recipe / per_epoch, rate / 1e9, limit,
                         limit / per_epoch, result.history[-1].test_loss))
    header = ("h", "precision", "fmae s/epoch", "recipe s/epoch", "speed-up", "matmul GFLOP/s",
              "limit s/epoch", "of limit", f"test MSE @{args.epochs}")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(f"{r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.1f}x | {r[5]:.0f} | {r[6]:.3f} | "
              f"{r[7]:.2f} | {r[8]:.5f}")
    for hidden in args.hidden:
        if (hidden, "fp32") in final and (hidden, "bf16") in final:
            fp32 = next(r for r in rows if r[:2] == (hidden, "fp32"))
            bf16 = next(r for r in rows if r[:2] == (hidden, "bf16"))
            diff = abs(final[(hidden, "bf16")] - final[(hidden, "fp32")]) / final[(hidden, "fp32")]
            print(f"h={hidden}: bf16 is {fp32[2] / bf16[2]:.2f}x the speed of fp32; "
                  f"test loss after {args.epochs} epochs differs by {diff:.2%}")
    print("The limit counts 9,400*h FLOPs per training sample (design.md); autograd skips the input gradient,")
    print("so 10*784*h are executed and a fraction above 1 is possible.")
    print(f"reproduce: {command_line()}")


if __name__ == "__main__":
    main()
