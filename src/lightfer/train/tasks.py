"""Training objectives as small task modules returning a dict of named, already-weighted losses
(after timm's ``task/distillation.py``): supervised CE / F-PDLS, logit KD (Hinton et al., 2015) and
fine-grained manifold distillation (Hao et al., NeurIPS 2022) with CE + KD + β·MD."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from lightfer.losses import ManifoldDistillation, cross_entropy, kd_kl
from lightfer.train.data import Mix

__all__ = ["SupervisedTask", "DistillationTask", "FeatureHooks", "StopForward", "amp_dtype", "autocast_to"]

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def amp_dtype(amp: str) -> torch.dtype | None:
    """A config's ``amp`` value (none | bf16 | fp16) → the autocast dtype, ``None`` for none."""
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX, as oneDNN reports). Without it, bf16
    autocast is emulated and several times slower than float32 (measured on an AVX2-only AMD EPYC: a training step
    of 128 faces with a dlib-ResNet teacher pair online, 7 s with the pair in bf16 and 1.3 s in float32). ``True``
    when torch cannot tell, so nothing warns wrongly."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def autocast_to(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device_type``; with ``None`` a no-op (an enclosing autocast still applies)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device_type, dtype=dtype)


class StopForward(Exception):
    """Raised by :class:`FeatureHooks` in ``stop`` mode once every hooked module has run."""


class FeatureHooks:
    """Forward hooks that keep the outputs of named sub-modules (the first element of tuples).

    With ``stop`` set, the hook that completes the set raises :class:`StopForward`, cutting the forward pass
    short: :meth:`features` runs a network only as far as the hooked layers (an MD teacher whose logits come
    from a file does not need its last layers)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.model = model
        self.names = list(names)
        self.outputs: dict[str, torch.Tensor] = {}
        self.stop = False
        self._handles = []
        for name in self.names:
            try:
                mod = model.get_submodule(name)
            except AttributeError as e:
                avail = ", ".join(n for n, _ in list(model.named_modules())[1:40])
                raise ValueError(f"no sub-module {name!r} in {type(model).__name__}; some names: {avail}") from e
            self._handles.append(mod.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def fn(_m: nn.Module, _inp: object, out: object) -> None:
            self.outputs[name] = out[0] if isinstance(out, (tuple, list)) else out  # type: ignore[assignment]
            if self.stop and len(self.outputs) == len(self.names):
                raise StopForward
        return fn

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the model on ``x (B, C, H, W)`` only until every hooked module has run; their outputs in order."""
        self.outputs, self.stop = {}, True
        try:
            self.model(x)
        except StopForward:
            pass
        finally:
            self.stop = False
        return self.take()

    def take(self) -> list[torch.Tensor]:
        """Captured features in ``names`` order; clears the store."""
        missing = [n for n in self.names if n not in self.outputs]
        if missing:
            raise RuntimeError(f"hooked modules {missing} did not run in the forward pass")
        out = [self.outputs[n] for n in self.names]
        self.outputs = {}
        return out

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()


class SupervisedTask(nn.Module):
    """``{"ce": criterion(student(x), y)}``; the criterion is CE_ε (hard or soft targets) or F-PDLS."""

    def __init__(self, criterion: Criterion | None = None, smoothing: float = 0.0) -> None:
        super().__init__()
        self.criterion = criterion
        self.smoothing = smoothing

    def base_loss(self, logits: torch.Tensor, target: torch.Tensor, mix: Mix | None = None) -> torch.Tensor:
        """The hard/soft-label term; for a mixed batch (:func:`~lightfer.train.data.mix_batch`) the λ-weighted
        sum of the terms with both images' labels."""
        if mix is not None:
            other = target[mix.perm.to(target.device)]
            return mix.lam * self.base_loss(logits, target) + (1.0 - mix.lam) * self.base_loss(logits, other)
        if self.criterion is not None and target.ndim == 1:
            return self.criterion(logits, target)
        return cross_entropy(logits, target, self.smoothing)

    def forward(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, mix: Mix | None = None,
                **_: object) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``x (B, C, H, W)``, ``target (B,)`` or ``(B, K)`` → (losses, student logits ``(B, K)``)."""
        logits = model(x)
        return {"ce": self.base_loss(logits, target, mix)}, logits


class DistillationTask(SupervisedTask):
    """(1 − α)·CE + α·T²·KL(teacher ‖ student) [+ β·MD over hooked layer pairs].

    Teacher logits come from ``teacher_logits`` (precomputed, ``(B, K)``) or from running ``teacher``
    on ``teacher_x`` under ``no_grad`` — under autocast to ``teacher_amp`` when given (the student keeps the
    caller's precision). With ``md`` set, the teacher always runs (features are needed) — only as far as its
    last hooked layer when the logits are precomputed.
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        temperature: float = 4.0,
        alpha: float = 0.5,
        criterion: Criterion | None = None,
        smoothing: float = 0.0,
        md: ManifoldDistillation | None = None,
        md_beta: float = 1.0,
        md_layers: list[list[str]] | None = None,
        student: nn.Module | None = None,
        teacher_amp: torch.dtype | None = None,
    ) -> None:
        super().__init__(criterion, smoothing)
        self.teacher = teacher
        self.teacher_amp = teacher_amp
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.md, self.md_beta = md, float(md_beta)
        self.student_hooks = self.teacher_hooks = None
        if md is not None:
            if teacher is None or student is None or not md_layers:
                raise ValueError("manifold distillation needs the teacher, the student and md_layers")
            self.student_hooks = FeatureHooks(student, [p[0] for p in md_layers])
            self.teacher_hooks = FeatureHooks(teacher, [p[1] for p in md_layers])

    def train(self, mode: bool = True) -> "DistillationTask":
        """Keep the teacher in eval mode whatever the task's mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                teacher_x: torch.Tensor | None = None, teacher_logits: torch.Tensor | None = None,
                mix: Mix | None = None, **_: object) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Student input ``x (B, C, H, W)``, teacher input ``teacher_x`` (default ``x``) → (losses, logits).
        With ``mix`` the label term is mixed; the KD term needs the teacher's logits of the mixed images."""
        t_feats = None
        if self.md is not None or teacher_logits is None:
            if self.teacher is None:
                raise ValueError("no teacher model and no precomputed teacher logits")
            tx = x if teacher_x is None else teacher_x
            with torch.no_grad(), autocast_to(tx.device.type, self.teacher_amp):
                if self.teacher_hooks is not None and (teacher_logits is not None or self.alpha == 0):
                    t_feats = self.teacher_hooks.features(tx)  # no teacher logits needed: stop early
                else:
                    teacher_logits = self.teacher(tx).float()
        logits = model(x)
        losses = {"ce": (1.0 - self.alpha) * self.base_loss(logits, target, mix)}
        if self.alpha > 0:
            t = self.temperature
            losses["kd"] = self.alpha * t * t * kd_kl(logits, teacher_logits.to(logits.device), t)
        if self.md is not None:
            assert self.student_hooks is not None and self.teacher_hooks is not None
            if t_feats is None:
                t_feats = self.teacher_hooks.take()
            losses["md"] = self.md_beta * self.md(self.student_hooks.take(), t_feats)
        return losses, logits
