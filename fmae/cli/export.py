"""`fmae export`: runs and sweeps that exist, logged to TensorBoard or MLflow (fmae.trackers.export):
signature -> one library call -> render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from fmae.cli.options import Json, MlflowArtifacts, Quiet
from fmae.config import TrackerConfig


def export(
    tracker: Annotated[Literal["tensorboard", "mlflow"], typer.Argument(
        help="Where to: tensorboard (event files under --to DIR) or mlflow (the tracking URI --to).")],
    paths: Annotated[list[Path], typer.Argument(help="Run or sweep directories (made by fmae train or fmae sweep).",
                                                show_default=False)],
    to: Annotated[str, typer.Option("--to", metavar="DIR|URI", help="TensorBoard's log directory, or MLflow's "
                                    "tracking URI (sqlite:///mlflow.db, file:DIR, http://host:port).",
                                    show_default=False)],
    mlflow_artifacts: MlflowArtifacts = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Log existing runs and sweeps to TensorBoard or MLflow, as --tensorboard/--mlflow would have.

    The same layout as live logging; exporting again adds only what is new.
    Example: fmae export mlflow runs/sweep-sgd-adam --to sqlite:///mlflow.db
    """
    from fmae.cli.ui import Feedback, emit
    from fmae.trackers.export import run_export

    config = (TrackerConfig(tensorboard=Path(to), artifacts=mlflow_artifacts) if tracker == "tensorboard"
              else TrackerConfig(mlflow=to, artifacts=mlflow_artifacts))
    emit(run_export(tuple(paths), config, Feedback(quiet=quiet)), json_out, _print_export)


def _print_export(doc: dict[str, Any]) -> None:
    from fmae.cli.ui import print_table

    print_table(f"fmae export {doc['tracker']} -> {doc['to']}", ["path", "kind", "runs", "epochs"],
                [[r["path"], r["kind"], r["runs"], r["epochs"]] for r in doc["exported"]])
