"""Optimizers and schedules: SAM and the trainer's factories."""
from lightfer.optim.factory import WarmupCosine, create_optimizer, create_scheduler, param_groups_weight_decay
from lightfer.optim.sam import SAM

__all__ = ["SAM", "create_optimizer", "create_scheduler", "WarmupCosine", "param_groups_weight_decay"]
