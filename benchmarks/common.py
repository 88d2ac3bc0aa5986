"""What the benchmarks share: the dataset, the torchvision recipe, matmul rates, FLOP counts."""

from __future__ import annotations

import gzip
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from fmae import data

TRAIN_FLOPS_PER_H = 9400  # per sample and epoch (design.md): 4*784*h forward, twice that backward
EVAL_FLOPS_PER_H = 3136


def epoch_flops(hidden: int, n_train: int = 60000, n_test: int = 10000) -> float:
    return hidden * (TRAIN_FLOPS_PER_H * n_train + EVAL_FLOPS_PER_H * n_test)


def matmul_rate(hidden: int, dtype: torch.dtype = torch.float32, batch: int = 1000, repeat: int = 20) -> float:
    """FLOP/s of the matmuls of one training step at these shapes, timed alone (best of 3)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 784, generator=g).to(dtype)
    w1, w2 = torch.rand(hidden, 784, generator=g).to(dtype), torch.rand(784, hidden, generator=g).to(dtype)
    code, grad = torch.rand(batch, hidden, generator=g).to(dtype), torch.rand(batch, 784, generator=g).to(dtype)

    def step() -> None:
        x @ w1.T, code @ w2.T  # forward
        grad @ w2, grad.T @ code, code.T @ x  # backward: d(code), d(w2), d(w1)

    flops = 2 * batch * 784 * hidden * 5
    best = []
    for _ in range(3):
        step()
        t0 = time.perf_counter()
        for _ in range(repeat):
            step()
        best.append((time.perf_counter() - t0) / repeat)
    return flops / min(best)


def raw_copy_for_torchvision() -> Path:
    """torchvision's FashionMNIST wants root/FashionMNIST/raw/<uncompressed files>."""
    src = data.locate(None, download=False)
    root = Path(tempfile.mkdtemp(prefix="fmae-bench-"))
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in data.CHECKSUMS:
        gz, plain = src / (stem + ".gz"), src / stem
        if plain.exists():
            shutil.copy(plain, raw / stem)
        else:
            with gzip.open(gz) as fin, open(raw / stem, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    return root


def torchvision_epoch_seconds(root: Path, hidden: int, optim: str, lr: float, epochs: int = 1) -> float:
    """The plain recipe: datasets.FashionMNIST + ToTensor + DataLoader(batch_size=1000, shuffle=True)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.ToTensor()
    train = DataLoader(datasets.FashionMNIST(root, train=True, transform=tf, download=False),
                       batch_size=1000, shuffle=True)
    test = DataLoader(datasets.FashionMNIST(root, train=False, transform=tf, download=False), batch_size=1000)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, 784),
                          nn.ReLU())
    opt = torch.optim.Adam(model.parameters(), lr=lr) if optim == "adam" else torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for x, _y in train:
            opt.zero_grad()
            loss = loss_fn(model(x), x.flatten(1))
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            sum(float(loss_fn(model(x), x.flatten(1))) for x, _y in test)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def command_line() -> str:
    return "python " + " ".join(sys.argv)
