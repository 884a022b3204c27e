"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) and its adaptive form ASAM
(Kwon et al., ICML 2021), wrapping any ``torch.optim.Optimizer`` (seed 003).

One update = ascent to ``w + e(w)`` with ``e = ρ·g/‖g‖`` (adaptive: ``e = ρ·|w|²⊙g/‖|w|⊙g‖``),
a second gradient there, then the base optimizer's step from the original ``w``::

    loss_fn(model(x), y).backward(); sam.first_step(zero_grad=True)
    loss_fn(model(x), y).backward(); sam.second_step(zero_grad=True)

or ``sam.step(closure)`` with a closure that zeroes the grads, runs forward + backward, returns the loss.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

__all__ = ["SAM"]


class SAM(Optimizer):
    """SAM around a base optimizer; shares its ``param_groups`` (so LR schedulers work on it).

    Args:
        params: parameters or param groups (ignored when ``base_optimizer`` is an instance).
        base_optimizer: an optimizer class (built on ``params`` with ``**kwargs``) or an instance.
        rho: radius of the ascent step.
        adaptive: ASAM scaling by |w|.
    """

    def __init__(
        self,
        params: Iterable[Any] | None,
        base_optimizer: type[Optimizer] | Optimizer,
        rho: float = 0.05,
        adaptive: bool = False,
        **kwargs: Any,
    ) -> None:
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        if isinstance(base_optimizer, Optimizer):
            if kwargs:
                raise ValueError("pass optimizer kwargs to the base optimizer, not to SAM, when wrapping an instance")
            base = base_optimizer
        else:
            if params is None:
                raise ValueError("SAM needs params when given an optimizer class")
            base = base_optimizer(params, **kwargs)
        super().__init__(base.param_groups, dict(rho=rho, adaptive=adaptive))
        self.base_optimizer = base
        self.param_groups = base.param_groups
        for group in self.param_groups:
            group.setdefault("rho", rho)
            group.setdefault("adaptive", adaptive)
        self.defaults.update(base.defaults)

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        norms = [
            ((p.abs() if g["adaptive"] else 1.0) * p.grad).norm(p=2)
            for g in self.param_groups
            for p in g["params"]
            if p.grad is not None
        ]
        if not norms:
            return torch.zeros(())
        dev = norms[0].device
        return torch.stack([n.to(dev) for n in norms]).norm(p=2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move every parameter to ``w + e(w)`` (the ascent point), remembering ``w``."""
        norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.detach().clone()
                e_w = (p.square() if group["adaptive"] else 1.0) * p.grad * scale.to(p)
                p.add_(e_w)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` and apply the base optimizer with the gradient taken at ``w + e(w)``."""
        for group in self.param_groups:
            for p in group["params"]:
                if "old_p" in self.state[p]:
                    p.copy_(self.state[p].pop("old_p"))
        self.base_optimizer.step()
        self._opt_called = True  # tell LR schedulers an update happened (they watch SAM, not the base)
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """Full SAM update; ``closure`` zeroes grads, runs forward + backward and returns the loss.

        The gradients for the first step must already be there (from a backward before ``step``)."""
        if closure is None:
            raise ValueError("SAM.step needs a closure (or call first_step / second_step yourself)")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state (SAM keeps nothing between updates)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the base optimizer's state."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
