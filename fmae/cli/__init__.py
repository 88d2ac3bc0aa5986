"""The CLI wing: the Typer app (app), its error boundary (boundary), multi-value options (parsing),
the option types (options), all terminal output (ui), and one module per command family
(training: train, sweep; inspection: eval, denoise, plot). Nothing outside this wing imports it
but fmae/__main__.py; `[project.scripts] fmae = "fmae.cli:main"`.
"""

from fmae.cli.app import app, main

__all__ = ["app", "main"]
