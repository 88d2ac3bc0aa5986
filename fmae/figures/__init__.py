"""The figures wing: choice (what each figure shows, from runs and sweeps; no matplotlib), plots
(pure functions from data to a matplotlib Figure, and its bytes), seeds (the seeds figure)."""
