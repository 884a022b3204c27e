"""Logit knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015).

L = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α)·CE_ε(z_s, y); seed 001 uses T = 8, α = 0.4.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightfer.losses.ce import cross_entropy

__all__ = ["LogitKD", "kd_kl"]


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Batch-mean KL(softmax(z_t/T) ‖ softmax(z_s/T)) of ``(B, C)`` logits; the teacher gets no gradient."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    t = float(temperature)
    log_q = F.log_softmax(student_logits.float() / t, dim=1)
    log_p = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


class LogitKD(nn.Module):
    """Hinton KD: returns ``{"ce": (1−α)·CE, "kd": α·T²·KL}``; the total is their sum."""

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, smoothing: float = 0.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.smoothing = float(smoothing)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``student_logits, teacher_logits (B, C)``, ``target (B,)`` or ``(B, C)`` → dict of weighted losses."""
        t = self.temperature
        kd = self.alpha * t * t * kd_kl(student_logits, teacher_logits, t)
        ce = (1.0 - self.alpha) * cross_entropy(student_logits, target, self.smoothing)
        return {"ce": ce, "kd": kd}
