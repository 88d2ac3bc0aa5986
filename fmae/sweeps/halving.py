"""Successive halving over a sweep's cells (`fmae sweep --prune halving`): which cells go on at
each rung, and how a cell left behind is recorded (status `pruned`, its files kept, resumable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fmae import runs
from fmae.errors import FmaeError
from fmae.status import LOST, Status
from fmae.sweeps.directory import CellPlan, summary_or_none


def _losses(plan: CellPlan) -> list[float]:
    """The test loss of each epoch the driver saved (last.pt's history, never metrics.csv, which a
    kill may leave one epoch behind): so a killed and rerun sweep decides as an uninterrupted one."""
    state = plan.resume
    if state is None and plan.run.file("last.pt").exists():  # a finished cell: its state was not loaded
        try:
            state = plan.run.load_last(plan.config)
        except FmaeError:
            return []
    return [test_loss for _, _, test_loss, _ in (state or {}).get("history", [])]


def successive_halving(plans: Sequence[CellPlan], rungs: Sequence[int], eta: int,
                       train_to: Callable[[list[CellPlan], int], None], on_pruned: Callable[[CellPlan], None]) -> None:
    """Train every cell to the first rung, promote the best 1/eta (by test loss at that epoch,
    ties broken by cell name) to the next, and so on; the cells left behind are pruned.

    `train_to(plans, epoch)` trains each plan up to `epoch` (any executor); `on_pruned(plan)` records
    a pruned cell, which keeps its files and resumes later like any unfinished cell. Decisions use
    the loss saved at each rung epoch (last.pt's), so a rerun makes the same ones, and a promoted cell trains
    on from its last.pt exactly as in a full sweep.
    """
    contenders = list(plans)
    for i, rung in enumerate(rungs):
        train_to([p for p in contenders if not p.done and not p.error], rung)
        if i == len(rungs) - 1:
            return
        at_rung = []
        for plan in contenders:
            losses = [] if plan.error else _losses(plan)
            lost = plan.done and (summary_or_none(plan.run) or {}).get("status") in LOST
            if len(losses) >= rung and runs.finite_or_none(losses[rung - 1]) is not None and not lost:
                at_rung.append((losses[rung - 1], plan.name, plan))
        ranked = [plan for _, _, plan in sorted(at_rung, key=lambda t: t[:2])]
        keep = max(1, len(contenders) // eta)
        for plan in ranked[keep:]:
            if not plan.done:
                on_pruned(plan)
        contenders = ranked[:keep]



def prune(plan: CellPlan, device: str) -> None:
    """Record a cell left behind by successive halving: status `pruned`, its files kept."""
    from fmae.training.contract import history_of_state

    history = history_of_state(plan.resume)
    plan.run.write_summary(runs.summarize(plan.config, Status.PRUNED, history, run_dir=plan.run.path,
                                          device=device, wall_seconds=0.0))
    plan.done, plan.resume = True, None  # resumable from its last.pt; kept, every pruned cell's state stayed in memory
