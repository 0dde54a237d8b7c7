"""Load a trained model back from a run or checkpoint folder, and export it."""

from __future__ import annotations

import json
from pathlib import Path

from zenlm.config import ModelConfig
from zenlm.errors import CheckpointError
from zenlm.models import DecoderLM
from zenlm.models.heads import MaskedLM
from zenlm.tokenizer import Tokenizer
from zenlm.train.checkpoint import latest_checkpoint, load_checkpoint
from zenlm.train.objectives import build_for_objective, resolve_objective


def load_trained(path: str | Path) -> tuple[DecoderLM | MaskedLM, Tokenizer | None]:
    """Model and tokenizer of a run folder (newest checkpoint), checkpoint or HF folder.

    Raises:
        CheckpointError: nothing loadable at `path`.
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run, checkpoint or model folder")
    if (path / "checkpoints").is_dir():
        newest = latest_checkpoint(path / "checkpoints")
        if newest is None:
            raise CheckpointError(f"{path}: the run has no complete checkpoint")
        path = newest
    if (path / "trainer_state.json").is_file():
        run = json.loads((path / "config.json").read_text(encoding="utf-8"))
        model = _build_trained(run)
        load_checkpoint(path, model=model, optimizer=None)
        return model.eval(), Tokenizer.from_folder(path)
    import zenlm

    lm = zenlm.load(str(path), quantize=None)  # exported exactly as trained
    return lm.model, lm._tokenizer


def _build_trained(run: dict) -> DecoderLM | MaskedLM:
    """The module a checkpoint's config.json describes (masked-LM runs have a head)."""
    model_config = ModelConfig.from_dict(run["model"])
    name = run.get("pretrain", {}).get("train", {}).get("objective", "auto")
    return build_for_objective(model_config, resolve_objective(name, model_config))  # type: ignore[return-value]
