"""The optimizers: one spec each (`SPECS`, by name), used by both engines and by the CLI.

A spec (`OptimizerSpec`) owns everything about its optimizer: its name, label, default learning rate
and whether it takes momentum (fmae.config's vocabulary is read from the specs: this module loads
torch only where an optimizer is built), its hyperparameters (`settings`, what
a resume state's param group must carry, and the rest of torch's param group), the per-cell
engine's optimizer (`per_cell`: torch.optim's kernels, below), the stacked engine's update rule
(`stacked`: the same arithmetic over the rows of a [C, P] buffer, below) and the keys of its state
per parameter (`state_keys`). No engine names an optimizer: each asks the spec of its config's
`optim`. Adding one is a spec here (with its per-cell class and its stacked rule) and its tests
(tests/test_optim.py, tests/test_stacked.py).

SGD and Adam with torch's own update kernels, without torch.optim.Optimizer's start-up cost.

Why not torch.optim.SGD/Adam: the base class routes add_param_group, zero_grad, step and
state_dict through torch._disable_dynamo, which imports torch._dynamo on first use: 1.4-1.7 s
on a 2-core machine, most of a one-epoch `fmae train`. These classes keep the update itself
in torch's hands: `step` calls the functional `torch.optim.adam.adam` / `torch.optim.sgd.sgd`
with the arguments torch.optim.Adam/SGD pass for the same settings (foreach picked the same
way, step counters on the CPU), so the parameters are bit for bit those of the stock
optimizers (tests/test_optim.py steps both side by side). Their state_dict has torch's layout,
so resume files written by either load into the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads where an optimizer is built: fmae.config reads the specs' vocabulary torch-free
    import torch

BETAS, EPS = (0.9, 0.999), 1e-8  # Adam's, torch.optim.Adam's defaults


class Optimizer:
    """One parameter group, torch.optim's state_dict layout: {"state": {i: {...}}, "param_groups": [...]}."""

    def __init__(self, params: Iterable[torch.Tensor], defaults: dict[str, Any]) -> None:
        self.params = list(params)
        self.param_groups = [{**defaults, "params": self.params}]
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    def state_dict(self) -> dict[str, Any]:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": {i: dict(self.state[p]) for i, p in enumerate(self.params) if p in self.state},
                "param_groups": [{**group, "params": list(range(len(self.params)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import torch

        (saved,) = state_dict["param_groups"]
        group = self.param_groups[0]
        group.update(saved_group(state_dict, len(self.params), group))
        self.state = {}
        for i, p in zip(saved["params"], self.params):
            if i in state_dict["state"]:
                # torch.optim's policy: step counters stay as saved (on the CPU), the rest follows the parameter;
                # copies, so that stepping never changes the caller's tensors
                self.state[p] = {k: v if not torch.is_tensor(v) else v.clone() if k == "step"
                                 else v.to(dtype=p.dtype if p.is_floating_point() else v.dtype, device=p.device,
                                           copy=True)
                                 for k, v in state_dict["state"][i].items()}


def saved_group(state_dict: dict[str, Any], params: int, group: dict[str, Any]) -> dict[str, Any]:
    """The values a saved state_dict's one param group holds for `group`'s keys (torch.optim's
    load_state_dict takes those), checked to be a group of `params` parameters."""
    (saved,) = state_dict["param_groups"]
    if len(saved["params"]) != params:
        raise ValueError("the optimizer state holds a different number of parameters")
    return {k: v for k, v in saved.items() if k != "params" and k in group}


def state_by_position(state_dict: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """A saved state_dict's per-parameter state by the parameter's position in its group (what
    load_state_dict gives each parameter; {} for None, a fresh start)."""
    if state_dict is None:
        return {}
    (saved,) = state_dict["param_groups"]
    return {pos: state_dict["state"][i] for pos, i in enumerate(saved["params"]) if i in state_dict["state"]}


class SGD(Optimizer):
    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0) -> None:
        super().__init__(params, SGD_SPEC.param_group(lr, momentum))

    def step(self) -> None:
        import torch

        with torch.no_grad():
            from torch.optim.sgd import sgd

            group = self.param_groups[0]
            params = [p for p in self.params if p.grad is not None]
            buffers = [self.state.get(p, {}).get("momentum_buffer") for p in params]
            sgd(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
                momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"],
                maximize=group["maximize"], has_sparse_grad=False, foreach=group["foreach"])
            if group["momentum"] != 0:
                for p, buf in zip(params, buffers):
                    self.state.setdefault(p, {})["momentum_buffer"] = buf


class Adam(Optimizer):
    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        super().__init__(params, ADAM_SPEC.param_group(lr))

    def step(self) -> None:
        import torch

        with torch.no_grad():
            from torch.optim.adam import adam

            group = self.param_groups[0]
            params = [p for p in self.params if p.grad is not None]
            scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            for p in params:
                if p not in self.state:  # what torch.optim.Adam creates on a parameter's first step
                    self.state[p] = {"step": torch.tensor(0.0, dtype=scalar),
                                     "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                     "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            states = [self.state[p] for p in params]
            beta1, beta2 = group["betas"]
            adam(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                 [], [s["step"] for s in states], foreach=group["foreach"], capturable=False, differentiable=False,
                 fused=None, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
                 weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)


# ---------------------------------------------------------------- the stacked engine's update rules
#
# C cells' parameters lie in one flat [C, P] buffer (fmae.training.stacked), a row per cell. These
# classes step rows with torch's update arithmetic, op for op, so that on the CPU a row equals the
# cell stepped alone by SGD/Adam above, bit for bit: the per-cell hyper-parameters are [C, 1]
# tensors holding exactly the float32 scalars torch's kernels would use (Adam's step sizes and bias
# corrections computed in double, as torch.optim.adam computes them, then rounded), so a row's
# elementwise operations are those of its cell alone. A step dispatches a fixed number of
# operations, whatever C is; its per-step scalars live in device tensors (one table per epoch).


class StackedSGD:
    """torch.optim.SGD (momentum, no dampening, no weight decay) over the rows of a [C, P] buffer."""

    def __init__(self, lrs: list[float], momenta: list[float], state: dict[str, torch.Tensor],
                 steps: list[int], like: torch.Tensor) -> None:
        import torch

        shape = (-1, 1)
        self.neg_lr = torch.tensor([-lr for lr in lrs], dtype=like.dtype, device=like.device).view(shape)
        self.momentum = torch.tensor(momenta, dtype=like.dtype, device=like.device).view(shape)
        self.momenta = list(momenta)
        self.buffer = state.get("momentum_buffer") if any(momenta) else None
        if self.buffer is None and any(momenta):
            self.buffer = torch.zeros_like(like)
        self.steps = list(steps)

    def begin_epoch(self, steps: int) -> None:
        """Nothing to precompute: SGD's scalars do not change from step to step."""

    def step(self, params: torch.Tensor, grads: torch.Tensor, j: int) -> None:
        if self.buffer is not None:  # momentum 0 rows: 0 * buf + g is g, torch's update for them
            self.buffer.mul_(self.momentum).add_(grads)
            grads = self.buffer
        params.addcmul_(grads, self.neg_lr)
        self.steps = [s + 1 for s in self.steps]

    def keep(self, index: torch.Tensor, rows: list[int]) -> None:
        self.neg_lr, self.momentum = self.neg_lr.index_select(0, index), self.momentum.index_select(0, index)
        self.momenta = [self.momenta[r] for r in rows]
        self.steps = [self.steps[r] for r in rows]
        if self.buffer is not None:
            self.buffer = self.buffer.index_select(0, index) if any(self.momenta) else None

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {} if self.buffer is None else {"momentum_buffer": self.buffer.clone()}

    def cell_state(self, snapshot: dict[str, torch.Tensor], k: int, steps: int, momentum: float
                   ) -> dict[str, torch.Tensor]:
        """Row k of a snapshot as torch's per-parameter state keys (flat rows; the caller splits them)."""
        return {"momentum_buffer": snapshot["momentum_buffer"][k]} if momentum != 0 else {}


class StackedAdam:
    """torch.optim.Adam (no weight decay, no amsgrad) over the rows of a [C, P] buffer."""

    def __init__(self, lrs: list[float], momenta: list[float], state: dict[str, torch.Tensor],
                 steps: list[int], like: torch.Tensor) -> None:
        import torch

        self.lrs = list(lrs)
        self.exp_avg = state.get("exp_avg", None)
        self.exp_avg_sq = state.get("exp_avg_sq", None)
        if self.exp_avg is None:
            self.exp_avg, self.exp_avg_sq = torch.zeros_like(like), torch.zeros_like(like)
        self.steps = list(steps)
        self._table: torch.Tensor | None = None  # [steps of the epoch, 2, C, 1]: -step size, sqrt(bias correction 2)

    def begin_epoch(self, steps: int) -> None:
        """The epoch's per-step scalars, computed in double as torch.optim.adam does (from the
        step count as a float), rounded to float32 as its kernels round them, in one device tensor."""
        import torch

        beta1, beta2 = BETAS
        rows = []
        for j in range(1, steps + 1):
            sizes, corrections = [], []
            for lr, done in zip(self.lrs, self.steps):
                step = float(done + j)
                sizes.append(-(lr / (1 - beta1**step)))
                corrections.append((1 - beta2**step) ** 0.5)
            rows.append([sizes, corrections])
        like = self.exp_avg
        self._table = torch.tensor(rows, dtype=torch.float64).to(like.dtype).view(steps, 2, -1, 1).to(like.device)

    def step(self, params: torch.Tensor, grads: torch.Tensor, j: int) -> None:
        (beta1, beta2), eps = BETAS, EPS
        neg_step_size, correction = self._table[j]
        self.exp_avg.lerp_(grads, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
        denom = self.exp_avg_sq.sqrt().div_(correction).add_(eps)
        params.addcdiv_(self.exp_avg.mul(neg_step_size), denom)  # p + (s * m) / d: torch's addcdiv_, value=-s
        self.steps = [s + 1 for s in self.steps]

    def keep(self, index: torch.Tensor, rows: list[int]) -> None:
        self.exp_avg, self.exp_avg_sq = self.exp_avg.index_select(0, index), self.exp_avg_sq.index_select(0, index)
        self.lrs, self.steps = [self.lrs[r] for r in rows], [self.steps[r] for r in rows]
        self._table = None

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def cell_state(self, snapshot: dict[str, torch.Tensor], k: int, steps: int, momentum: float
                   ) -> dict[str, torch.Tensor]:
        import torch

        scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        return {"step": torch.tensor(float(steps), dtype=scalar), "exp_avg": snapshot["exp_avg"][k],
                "exp_avg_sq": snapshot["exp_avg_sq"][k]}




# ---------------------------------------------------------------- one spec per optimizer


class OptimizerSpec:
    """One optimizer for both engines: its settings, its per-cell optimizer, its stacked rule and
    the keys of its state per parameter (torch.optim's names)."""

    name: str  # what --optim takes
    label: str  # as the report and the literature write it (figures, tables)
    default_lr: float  # --lr when not given: the report's best rate for it
    momentum: bool  # whether it takes --momentum
    extras: dict[str, Any]  # the rest of torch.optim's param group: keys that do not change the updates

    def settings(self, lr: float, momentum: float = 0.0) -> dict[str, Any]:
        """The hyperparameters of the param group that change the updates (what a resume state must
        carry for this run), as torch.optim names them."""
        raise NotImplementedError

    def state_keys(self, momentum: float) -> tuple[str, ...]:
        """The keys of a parameter's state after a step (torch.optim's state_dict layout)."""
        raise NotImplementedError

    def per_cell(self, params: Iterable[torch.Tensor], lr: float, momentum: float) -> Optimizer:
        """The per-cell engine's optimizer of one model's parameters."""
        raise NotImplementedError

    def stacked(self, lrs: list[float], momenta: list[float], state: dict[str, torch.Tensor], steps: list[int],
                like: torch.Tensor) -> StackedSGD | StackedAdam:
        """The stacked engine's rule for rows of a [C, P] buffer like `like`: each row's lr and
        momentum, its state as [C, P] rows by key (empty: fresh), the steps each row has taken."""
        raise NotImplementedError

    def param_group(self, lr: float, momentum: float = 0.0) -> dict[str, Any]:
        """The param group of a state_dict (without "params"), as torch.optim writes it."""
        return {**self.settings(lr, momentum), **self.extras}

    def resumed_group(self, lr: float, momentum: float, state_dict: dict[str, Any] | None, params: int
                      ) -> dict[str, Any]:
        """The param group of a model of `params` parameters whose optimizer loaded `state_dict` (a
        resume state's "optimizer"; None: a fresh start), as the per-cell optimizer would hold it."""
        group = self.param_group(lr, momentum)
        if state_dict is not None:
            group.update(saved_group(state_dict, params, group))
        return group

    @staticmethod
    def steps_taken(state: dict[Any, dict[str, Any]]) -> int:
        """The steps a resume state's optimizer state (by parameter index) has taken: its first
        parameter's "step" (0 where the optimizer counts none)."""
        saved = state.get(0, {}).get("step")
        return int(saved) if saved is not None else 0


class _SGDSpec(OptimizerSpec):
    name, label, default_lr, momentum = "sgd", "SGD", 0.1, True
    extras = {"foreach": None, "differentiable": False, "fused": None}

    def settings(self, lr: float, momentum: float = 0.0) -> dict[str, Any]:
        return {"lr": lr, "momentum": momentum, "dampening": 0, "weight_decay": 0, "nesterov": False,
                "maximize": False}

    def state_keys(self, momentum: float) -> tuple[str, ...]:
        return ("momentum_buffer",) if momentum != 0 else ()

    def per_cell(self, params: Iterable[torch.Tensor], lr: float, momentum: float) -> SGD:
        return SGD(params, lr=lr, momentum=momentum)

    def stacked(self, lrs: list[float], momenta: list[float], state: dict[str, torch.Tensor], steps: list[int],
                like: torch.Tensor) -> StackedSGD:
        return StackedSGD(lrs, momenta, state, steps, like)


class _AdamSpec(OptimizerSpec):
    name, label, default_lr, momentum = "adam", "Adam", 0.001, False
    extras = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}

    def settings(self, lr: float, momentum: float = 0.0) -> dict[str, Any]:
        return {"lr": lr, "betas": BETAS, "eps": EPS, "weight_decay": 0, "amsgrad": False, "maximize": False}

    def state_keys(self, momentum: float) -> tuple[str, ...]:
        return ("step", "exp_avg", "exp_avg_sq")

    def per_cell(self, params: Iterable[torch.Tensor], lr: float, momentum: float) -> Adam:
        return Adam(params, lr=lr)  # momentum: fmae.config allows none with adam

    def stacked(self, lrs: list[float], momenta: list[float], state: dict[str, torch.Tensor], steps: list[int],
                like: torch.Tensor) -> StackedAdam:
        return StackedAdam(lrs, momenta, state, steps, like)


SGD_SPEC, ADAM_SPEC = _SGDSpec(), _AdamSpec()
SPECS: dict[str, OptimizerSpec] = {spec.name: spec for spec in (ADAM_SPEC, SGD_SPEC)}  # --optim's choices, in order


def spec(name: str) -> OptimizerSpec:
    """The spec of a config's `optim` (a name of SPECS)."""
    return SPECS[name]
