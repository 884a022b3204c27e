"""Training: typed config, tasks (supervised / KD / manifold distillation), engine, checkpoints."""
from lightfer.train.checkpoint import load_checkpoint, load_model_from_checkpoint, save_checkpoint
from lightfer.train.config import ConfigError, TrainConfig, load_config
from lightfer.train.engine import evaluate, main, train_one_epoch

__all__ = ["TrainConfig", "load_config", "ConfigError", "main", "train_one_epoch", "evaluate", "save_checkpoint",
           "load_checkpoint", "load_model_from_checkpoint"]
