"""Adam with cosine-annealed step sizes, for the registration levels.

A few lines of our own rather than ``torch.optim``: the first ``torch.optim``
optimiser of a process imports ``torch._dynamo`` (about a second), which a
registration that takes a few seconds should not pay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FINAL_STEP_FRACTION = 0.05


class AnnealedAdam:
    """Adam (Kingma & Ba, 2015) whose step sizes decay by a cosine from 100 % to 5 % over ``iterations``.

    ``groups`` pairs each leaf tensor (``requires_grad``) with its initial step
    size; ``step`` uses the gradients left in ``.grad`` by ``backward``.
    """

    def __init__(self, groups: Sequence[tuple[torch.Tensor, float]], *, iterations: int,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.groups = [(parameter, float(step)) for parameter, step in groups]
        self.iterations = max(int(iterations), 1)
        self.betas = betas
        self.eps = eps
        self.count = 0
        self.first = [torch.zeros_like(parameter) for parameter, _ in self.groups]
        self.second = [torch.zeros_like(parameter) for parameter, _ in self.groups]

    def zero_grad(self) -> None:
        for parameter, _ in self.groups:
            parameter.grad = None

    def annealing(self) -> float:
        """Fraction of the initial step size used by the next step."""
        progress = min(self.count, self.iterations) / self.iterations
        return FINAL_STEP_FRACTION + (1.0 - FINAL_STEP_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * progress))

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        scale = self.annealing()
        self.count += 1
        correction1 = 1.0 - beta1**self.count
        correction2 = 1.0 - beta2**self.count
        for (parameter, step), first, second in zip(self.groups, self.first, self.second):
            if parameter.grad is None:
                continue
            first.mul_(beta1).add_(parameter.grad, alpha=1.0 - beta1)
            second.mul_(beta2).addcmul_(parameter.grad, parameter.grad, value=1.0 - beta2)
            denominator = (second / correction2).sqrt_().add_(self.eps)
            parameter.addcdiv_(first, denominator, value=-step * scale / correction1)
