"""The Typer app: the group (fmae.cli.boundary's error boundary), --version, and the commands,
one module per family (fmae.cli.training: train, sweep; fmae.cli.inspection: eval, denoise, plot).

No torch, torchvision or matplotlib import at module level: --help, --version and shell
completion must stay fast.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fmae import __version__
from fmae.cli.boundary import FmaeGroup
from fmae.cli.parsing import multi_value

app = typer.Typer(
    cls=FmaeGroup,
    name="fmae",
    help="Train, sweep, evaluate and apply feed-forward autoencoders on Fashion-MNIST.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rendering help with rich costs ~0.25 s of imports
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from fmae.errors import stdout_error

        if sys.stdout is None:
            raise stdout_error(None)
        try:
            typer.echo(f"fmae {__version__}")
        except OSError as exc:
            raise stdout_error(exc) from None
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Train, sweep, evaluate and apply feed-forward autoencoders on Fashion-MNIST."""


SHORT = {
    "train": "Train one autoencoder into a run directory.",
    "sweep": "Train a grid: optimizers x rates x sizes x seeds.",
    "eval": "Measure checkpoints: MSE, PSNR, SSIM, per class.",
    "denoise": "Compare checkpoints as filters of noise.",
    "plot": "Draw curves, reconstructions, heatmaps, seeds.",
    "export": "Send runs to TensorBoard, MLflow or safetensors.",
}


def _register() -> None:
    """The commands, in the order --help lists them."""
    from fmae.cli import export, inspection, training
    from fmae.cli.options import SWEEP_LISTS

    # short_help: the one line `fmae --help` lists, whole at 80 columns (click cuts a docstring's to fit)
    app.command(cls=multi_value("--fail-on"), short_help=SHORT["train"])(training.train)
    app.command(cls=multi_value(*SWEEP_LISTS), short_help=SHORT["sweep"])(training.sweep)
    app.command("eval", cls=multi_value("--ckpt"), short_help=SHORT["eval"])(inspection.eval_)
    app.command(cls=multi_value("--ckpt", "--sigma", "--index"), short_help=SHORT["denoise"])(inspection.denoise)
    app.command(cls=multi_value("--kind"), short_help=SHORT["plot"])(inspection.plot)
    app.command(short_help=SHORT["export"])(export.export)


_register()


def main() -> None:
    app(prog_name="fmae")
