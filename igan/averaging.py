"""Parameter averages: historical averaging (a training penalty) and the evaluation EMA."""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn


class HistoricalAverage:
    """Running mean of past parameter values and the penalty ``sum ||theta - mean_past||^2``.

    The mean is kept online (O(parameters) memory): after ``t`` calls to :meth:`update` it equals
    ``(1/t) sum_{i<=t} theta_i``. Before the first update the penalty is 0.
    """

    def __init__(self, parameters: Iterable[nn.Parameter]):
        self.parameters = [p for p in parameters if p.requires_grad]
        self.mean = [torch.zeros_like(p, dtype=torch.float32) for p in self.parameters]
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current parameter values into the running mean."""
        self.count += 1
        for m, p in zip(self.mean, self.parameters):
            m.add_((p.detach().float() - m) / self.count)

    def penalty(self) -> torch.Tensor:
        """``sum_params ||theta - mean_past||^2`` as a scalar tensor with gradient to theta."""
        if self.count == 0:
            return torch.zeros((), device=self.parameters[0].device)
        return sum(((p.float() - m) ** 2).sum() for p, m in zip(self.parameters, self.mean))

    def state_dict(self) -> dict:
        """Running mean and count, for exact resume."""
        return {"mean": [m.clone() for m in self.mean], "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        for m, saved in zip(self.mean, state["mean"]):
            m.copy_(saved)
        self.count = int(state["count"])


class ParameterEMA:
    """Exponential moving average of a module's parameters for evaluation, with bias correction.

    ``avg <- avg + rate * (theta - avg)`` from ``avg = 0``; :attr:`module` holds
    ``avg / (1 - (1 - rate)^t)``, the properly weighted average even early in training (the
    authors' rate 1e-4 otherwise leaves short runs near the initialisation). Buffers are copied.
    """

    def __init__(self, module: nn.Module, rate: float):
        self.rate = float(rate)
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.shadow = [torch.zeros_like(p, dtype=torch.float32) for p in module.parameters()]
        self.steps = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Fold ``module``'s current parameters in and refresh :attr:`module`."""
        self.steps += 1
        correction = 1.0 - (1.0 - self.rate) ** self.steps
        for s, p, e in zip(self.shadow, module.parameters(), self.module.parameters()):
            s.add_(self.rate * (p.detach().float() - s))
            e.copy_(s / correction)
        for b, eb in zip(module.buffers(), self.module.buffers()):
            eb.copy_(b)

    def state_dict(self) -> dict:
        """Shadow values and step count, for exact resume."""
        return {"shadow": [s.clone() for s in self.shadow], "steps": self.steps,
                "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        for s, saved in zip(self.shadow, state["shadow"]):
            s.copy_(saved)
        self.steps = int(state["steps"])
        self.module.load_state_dict(state["module"])
