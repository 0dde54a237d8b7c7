"""Training: one Trainer, objectives, schedules, atomic checkpoints, distributed setup."""

from zenlm.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from zenlm.train.config import PretrainConfig, load_config
from zenlm.train.objectives import causal_lm_loss, mask_tokens, masked_lm_loss, span_corruption
from zenlm.train.trainer import Trainer, TrainingDiverged, TrainResult

__all__ = [
    "PretrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "causal_lm_loss",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "mask_tokens",
    "masked_lm_loss",
    "save_checkpoint",
    "span_corruption",
]
