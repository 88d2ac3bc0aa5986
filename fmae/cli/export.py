"""`fmae export`: runs and sweeps that exist, logged to TensorBoard or MLflow, or a model as safetensors
(fmae.exports): signature -> settings -> one library call -> render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from fmae.cli.options import Json, MlflowArtifacts, Quiet
from fmae.settings import ExportSettings


def export(
    tracker: Annotated[Literal["tensorboard", "mlflow", "safetensors"], typer.Argument(
        help="Where to: tensorboard (event files under --to DIR), mlflow (the tracking URI --to), or safetensors "
             "(model.safetensors, config.json and a README.md model card in --to DIR).")],
    paths: Annotated[list[Path], typer.Argument(help="Run or sweep directories (made by fmae train or fmae sweep); "
                                                "for safetensors also checkpoints (model.pt, best.pt).",
                                                show_default=False)],
    to: Annotated[str, typer.Option("--to", metavar="DIR|URI", help="TensorBoard's log directory, MLflow's "
                                    "tracking URI (sqlite:///mlflow.db, file:DIR, http://host:port), or the "
                                    "directory for the safetensors files.", show_default=False)],
    mlflow_artifacts: MlflowArtifacts = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Log existing runs and sweeps to TensorBoard or MLflow, or export a model as safetensors.

    The same layout as live logging; exporting again adds only what is new.
    Example: fmae export mlflow runs/sweep-sgd-adam --to sqlite:///mlflow.db
    Example: fmae export safetensors runs/sweep-sgd-adam --to hub/fmae-sgd (its best.pt)
    """
    from fmae.cli.ui import Feedback, emit
    from fmae.exports import run_export

    settings = ExportSettings(tracker, tuple(paths), to, mlflow_artifacts)
    emit(run_export(settings, Feedback(quiet=quiet)), json_out, _print_export)


def _print_export(doc: dict[str, Any]) -> None:
    from fmae.cli.ui import print_table

    if doc["tracker"] == "safetensors":
        print_table(f"fmae export safetensors -> {doc['to']}", ["model", "to", "files"],
                    [[r["path"], r["to"], "unchanged" if r["unchanged"] else ", ".join(r["files"])]
                     for r in doc["exported"]])
        return
    print_table(f"fmae export {doc['tracker']} -> {doc['to']}", ["path", "kind", "runs", "epochs", "new values"],
                [[r["path"], r["kind"], r["runs"], r["epochs"], r["new_values"] or "none: all there"]
                 for r in doc["exported"]])
