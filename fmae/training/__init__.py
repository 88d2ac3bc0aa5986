"""The training wing: one written contract (fmae.training.contract) and its two implementations,
the per-cell loop (fmae.training.cells) and the stacked engine (fmae.training.stacked).
fmae.engine is the one place that chooses between them; nothing outside the wing sees a stack."""
