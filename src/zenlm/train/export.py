"""Load a trained model back from a run or checkpoint folder, and export it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from zenlm.config import ModelConfig, to_hf_config
from zenlm.errors import CheckpointError, UnsupportedModelError
from zenlm.io.hf import convert_to_hf, save_hf_model
from zenlm.io.names import MLM_HEAD_MAPS
from zenlm.models import DecoderLM
from zenlm.models.heads import MaskedLM
from zenlm.tokenizer import Tokenizer
from zenlm.train.checkpoint import latest_checkpoint, load_checkpoint
from zenlm.train.objectives import build_for_objective, resolve_objective

#: How transformers names a family's masked-LM class and the prefix of its encoder's tensors.
_MASKED_LM = {"bert": ("BertForMaskedLM", "bert."), "roberta": ("RobertaForMaskedLM", "roberta.")}


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


def save_trained(
    model: torch.nn.Module, folder: str | Path, tokenizer: Tokenizer | None = None
) -> Path:
    """Write a trained model as a Hugging Face folder transformers loads.

    A decoder becomes its family's *ForCausalLM (or BertModel for a bare encoder); a
    masked LM becomes BertForMaskedLM / RobertaForMaskedLM, head included.
    """
    if isinstance(model, MaskedLM):
        return save_masked_lm(model, folder, tokenizer)
    return save_hf_model(model, folder, tokenizer=tokenizer)  # type: ignore[arg-type]


def save_masked_lm(model: MaskedLM, folder: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Encoder and masked-LM head as one *ForMaskedLM folder (config.json + safetensors).

    The head's decoder weight is not written: transformers ties it to the word
    embedding, as zenlm's head does.

    Raises:
        UnsupportedModelError: the encoder's family has no masked-LM class.
    """
    family = model.config.hf_model_type
    if family not in _MASKED_LM:
        raise UnsupportedModelError(
            f"cannot export a masked LM of hf_model_type {family!r}; "
            f"supported: {', '.join(sorted(_MASKED_LM))}"
        )
    architecture, prefix = _MASKED_LM[family]
    hf_config = {**to_hf_config(model.config), "architectures": [architecture]}
    hf_config["torch_dtype"] = str(model.encoder.embed.weight.dtype).removeprefix("torch.")
    tensors = {prefix + name: t for name, t in convert_to_hf(model.encoder).items()}
    tensors.update(_head_tensors(model, family))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder


def _head_tensors(model: MaskedLM, family: str) -> dict[str, torch.Tensor]:
    """The head's tensors under their HF names (the loader's rules walked backwards)."""
    state = {k: v for k, v in model.head.state_dict().items() if k != "decoder.weight"}
    out = {}
    for rule in MLM_HEAD_MAPS[family].rules:
        if all(name in state for name in rule.ours):
            out[rule.hf] = rule.join(tuple(state[name] for name in rule.ours))
    return {k: v.detach().contiguous() for k, v in out.items()}
