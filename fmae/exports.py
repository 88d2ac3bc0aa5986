"""`fmae export`: runs and sweeps to TensorBoard or MLflow (fmae.trackers.export), or a model as
safetensors for use without fmae: `model.safetensors` (the weights), `config.json` (the
architecture and the training config) and a `README.md` model card (docs/options.md#fmae-export)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fmae import __version__, atomic, runs
from fmae.config import INPUT_DIM
from fmae.errors import FmaeError
from fmae.execution import TrackerConfig
from fmae.progress import Progress
from fmae.settings import ExportSettings

ARTIFACTS = ("model.safetensors", "config.json", "README.md")


def run_export(settings: ExportSettings, progress: Progress) -> dict[str, Any]:
    """`fmae export KIND PATH... --to DEST`: the --json document of what was exported."""
    if settings.kind != "safetensors":
        from fmae.trackers.export import run_export as to_trackers

        artifacts = settings.artifacts
        config = (TrackerConfig(tensorboard=Path(settings.to), artifacts=artifacts) if settings.kind == "tensorboard"
                  else TrackerConfig(mlflow=settings.to, artifacts=artifacts))
        return to_trackers(settings.paths, config, progress)
    return export_safetensors(settings.paths, Path(settings.to), progress)


def _require() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise FmaeError("fmae export safetensors needs the safetensors package",
                        "pip install 'fmae-cli[safetensors]'") from None
    return safetensors.torch


def export_safetensors(paths: tuple[Path, ...], to: Path, progress: Progress) -> dict[str, Any]:
    """Each model in `paths` as model.safetensors, config.json and README.md: in `to` for one path,
    in `to/<name>` (the run's or the sweep's directory name) for several."""
    from fmae.checkpoints import load_checkpoint, model_file

    st = _require()
    sources = [model_file(p) for p in paths]
    names = [s.parent.name or s.stem for s in sources]
    if len(sources) > 1 and len(set(names)) < len(names):
        raise FmaeError(f"two models would go to the same directory under {to} ({', '.join(names)})",
                        "export them one at a time, each with its own --to")
    rows = []
    with progress:
        for source, name in zip(sources, names):
            raw = source.read_bytes() if source.is_file() else b""
            ckpt = load_checkpoint(source, "model", data=raw or None)
            out = to if len(sources) == 1 else to / name
            if out.exists() and not out.is_dir():
                raise FmaeError(f"{out} exists and is not a directory", "choose another --to")
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise atomic.io_error(out, exc) from None
            weights = {k: v.detach().cpu().contiguous() for k, v in ckpt["state_dict"].items()}
            # one metadata key: safetensors keeps metadata in a hash map, so two keys come out in either
            # order and the same weights would give other bytes (fmae's version is in config.json)
            files = {"model.safetensors": st.save(weights, metadata={"format": "pt"}),
                     "config.json": (json.dumps(card_config(ckpt, source, raw), indent=2) + "\n").encode(),
                     "README.md": model_card(ckpt, source, raw).encode()}
            same = all((out / n).is_file() and (out / n).read_bytes() == b for n, b in files.items())
            for file_name, data in files.items():
                atomic.write_bytes(out / file_name, data)
            progress.message(f"{source} -> {out}" + (" (unchanged)" if same else ""))
            rows.append({"path": str(source), "kind": "model", "to": str(out), "files": list(ARTIFACTS),
                         "unchanged": same})
    return {"schema_version": runs.SCHEMA_VERSION, "tracker": "safetensors", "to": str(to), "exported": rows}


def card_config(ckpt: dict[str, Any], source: Path, raw: bytes) -> dict[str, Any]:
    """config.json: the architecture (enough to rebuild the model in plain PyTorch), the training
    config, the test metrics and where the weights came from."""
    config = ckpt["config"]
    env = ckpt.get("environment") or {}
    return {
        "architecture": {"type": "fmae-autoencoder", "input_dim": INPUT_DIM, "hidden": config.model.hidden,
                         "layers": ["encoder: Linear(784, hidden)", "ReLU",
                                    f"Dropout({config.model.dropout}) (training only)",
                                    "decoder: Linear(hidden, 784)", f"output: {config.model.activation}"],
                         "dropout": config.model.dropout, "activation": config.model.activation,
                         "input": "Fashion-MNIST images as float32 in [0, 1] (pixel / 255), flattened to 784"},
        "training": config.to_dict(),
        "status": ckpt.get("status"),
        "metrics": _metrics(ckpt),
        "provenance": {"checkpoint": str(source), "checkpoint_sha256": hashlib.sha256(raw).hexdigest(),
                       "fmae_version": env.get("fmae"), "exported_by": f"fmae {__version__}",
                       "torch": env.get("torch"), "device": env.get("device"), "engine": env.get("engine"),
                       "threads": env.get("threads"), "data_source": env.get("data_source"),
                       "data_sha256": env.get("data_sha256")},
    }


def _metrics(ckpt: dict[str, Any]) -> dict[str, Any]:
    metrics = ckpt.get("metrics") or {}
    test = [float(x) for x in metrics.get("test_loss") or []]
    train = [float(x) for x in metrics.get("train_loss") or []]
    return {"epochs": len(test), "final_test_mse": runs.finite_or_none(test[-1]) if test else None,
            "final_train_mse": runs.finite_or_none(train[-1]) if train else None,
            "best_test_mse": runs.finite_or_none(min(test)) if test else None}


LOADING = '''```python
import torch
from safetensors.torch import load_file

weights = load_file("model.safetensors")
hidden = weights["encoder.weight"].shape[0]
model = torch.nn.Sequential(
    torch.nn.Linear(784, hidden), torch.nn.ReLU(), torch.nn.Dropout({dropout}),
    torch.nn.Linear(hidden, 784), {output},
)
model.load_state_dict({{"0.weight": weights["encoder.weight"], "0.bias": weights["encoder.bias"],
                       "3.weight": weights["decoder.weight"], "3.bias": weights["decoder.bias"]}})
model.eval()
images = torch.zeros(2, 28, 28, dtype=torch.uint8)  # your 28x28 grey images, 0-255
reconstructions = model(images.float().div(255).reshape(-1, 784)).reshape(-1, 28, 28)
```'''

_OUTPUT = {"relu": "torch.nn.ReLU()", "sigmoid": "torch.nn.Sigmoid()", "identity": "torch.nn.Identity()"}


def model_card(ckpt: dict[str, Any], source: Path, raw: bytes) -> str:
    """README.md: the model card (data, settings, test metrics, provenance, loading without fmae)."""
    doc = card_config(ckpt, source, raw)
    config, m, p = ckpt["config"], doc["metrics"], doc["provenance"]
    fmt = lambda v: "-" if v is None else f"{v:.6f}" if isinstance(v, float) else str(v)  # noqa: E731
    settings = "\n".join(f"| `{k}` | {'none' if v is None else v} |" for k, v in config.flags().items())
    sha = p["data_sha256"] or {}
    return f"""# Fashion-MNIST autoencoder, 784 -> {config.model.hidden} -> 784

A feed-forward autoencoder trained by [fmae](https://pypi.org/project/fmae-cli/) to reconstruct
Fashion-MNIST images: `Linear(784, {config.model.hidden})`, ReLU, dropout {config.model.dropout} (training only),
`Linear({config.model.hidden}, 784)`, output activation `{config.model.activation}`.
{"A denoising autoencoder: trained on " + config.noise.kind + f" noise (sigma {config.noise.sigma}) added to its input."
 if config.noise is not None else "Trained on clean images (input = target)."}

## Files

- `model.safetensors`: the weights (`encoder.weight` [{config.model.hidden}, 784], `encoder.bias`,
  `decoder.weight` [784, {config.model.hidden}], `decoder.bias`), float32, the same tensors as the checkpoint's
- `config.json`: the architecture, the training settings, the metrics and the provenance below

## Data

Fashion-MNIST (Xiao et al., 2017): 60,000 training and 10,000 test images of 28x28 grey pixels,
fed as float32 in [0, 1] (pixel / 255), flattened to 784 values. Trained on the training split,
evaluated on the test split. Read from `{p['data_source'] or '-'}`; sha256 of the files:
{chr(10).join(f"- `{k}`: `{v}`" for k, v in sha.items()) or "- not recorded"}

## Training settings

| setting | value |
| --- | --- |
{settings}

Status: `{doc['status']}` after {m['epochs']} epochs.

## Test metrics

| metric | value |
| --- | --- |
| final test MSE (per pixel) | {fmt(m['final_test_mse'])} |
| best test MSE | {fmt(m['best_test_mse'])} |
| final train MSE | {fmt(m['final_train_mse'])} |

## Provenance

- checkpoint: `{p['checkpoint']}` (sha256 `{p['checkpoint_sha256']}`)
- trained with fmae {p['fmae_version'] or '-'}, torch {p['torch'] or '-'}, on {p['device'] or '-'}
  ({p['engine'] or '-'} engine, {p['threads'] or '-'} threads); exported by {p['exported_by']}

## Loading it in plain PyTorch (without fmae)

{LOADING.format(dropout=config.model.dropout, output=_OUTPUT[config.model.activation])}

It needs only `torch` and `safetensors` (both on PyPI); `safetensors` loads weights without running any code.
"""
