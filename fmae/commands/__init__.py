"""The commands of the CLI, one module per family; cli.py registers them on the app.

A command is its signature, its calls into the library and its render (through ui.emit).
"""
