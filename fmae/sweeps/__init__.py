"""The sweeps wing: a grid of training cells in one directory.

directory (the sweep directory: checked, reset, planned into cells), run (the cells trained on an
executor, and `run_sweep`, a whole sweep from settings to its results), halving (successive
halving between rungs), results (ranked rows, results.csv/json, best.pt).
"""
