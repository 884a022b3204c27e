"""Training objectives: CE (label smoothing, soft targets), logit KD, fine-grained manifold
distillation, PDLS / F-PDLS. Every loss is a small ``nn.Module``."""
from lightfer.losses.ce import LabelSmoothingCE, SoftTargetCE, cross_entropy
from lightfer.losses.fpdls import (
    FPDLSLoss,
    confusion_matrix,
    prior_from_confusion,
    prior_from_model,
    prior_from_votes,
    uniform_prior,
)
from lightfer.losses.kd import LogitKD, kd_kl
from lightfer.losses.manifold import ManifoldDistillation, pool_tokens, relation_distance, to_tokens

__all__ = [
    "LabelSmoothingCE", "SoftTargetCE", "cross_entropy", "LogitKD", "kd_kl", "ManifoldDistillation",
    "relation_distance", "to_tokens", "pool_tokens", "FPDLSLoss", "uniform_prior", "prior_from_votes",
    "prior_from_confusion",
    "prior_from_model", "confusion_matrix",
]
