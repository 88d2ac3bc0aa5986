"""SGD and Adam with torch's own update kernels, without torch.optim.Optimizer's start-up cost.

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
from typing import Any

import torch


def settings(optim: str, lr: float, momentum: float = 0.0) -> dict[str, Any]:
    """The hyperparameters of an optimizer's param group that change its updates (what a resume
    state must carry for this run), as torch.optim names them."""
    if optim == "sgd":
        return {"lr": lr, "momentum": momentum, "dampening": 0, "weight_decay": 0, "nesterov": False,
                "maximize": False}
    return {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "maximize": False}


class _Optimizer:
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
        (saved,) = state_dict["param_groups"]
        if len(saved["params"]) != len(self.params):
            raise ValueError("the optimizer state holds a different number of parameters")
        group = self.param_groups[0]
        group.update({k: v for k, v in saved.items() if k != "params" and k in group})
        self.state = {}
        for i, p in zip(saved["params"], self.params):
            if i in state_dict["state"]:
                # torch.optim's policy: step counters stay as saved (on the CPU), the rest follows the parameter;
                # copies, so that stepping never changes the caller's tensors
                self.state[p] = {k: v if not torch.is_tensor(v) else v.clone() if k == "step"
                                 else v.to(dtype=p.dtype if p.is_floating_point() else v.dtype, device=p.device,
                                           copy=True)
                                 for k, v in state_dict["state"][i].items()}


class SGD(_Optimizer):
    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0) -> None:
        super().__init__(params, {**settings("sgd", lr, momentum), "foreach": None, "differentiable": False,
                                  "fused": None})

    @torch.no_grad()
    def step(self) -> None:
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


class Adam(_Optimizer):
    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        super().__init__(params, {**settings("adam", lr), "foreach": None, "capturable": False,
                                  "differentiable": False, "fused": None})

    @torch.no_grad()
    def step(self) -> None:
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
