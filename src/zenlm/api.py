"""The Python API: `zenlm.load(...)` returns an `LM` that tokenizes, scores and generates."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zenlm.config import ModelConfig, from_hf_config
from zenlm.errors import CheckpointError
from zenlm.generate import GenerationConfig, GenerationResult, generate
from zenlm.io.hf import load_hf_model, refuse_pickle
from zenlm.io.resolve import resolve_model
from zenlm.models import DecoderLM
from zenlm.tokenizer import Message, Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LM:
    """A language model with its tokenizer.

    Args:
        model: The network.
        tokenizer: Its tokenizer (None for weights-only folders: `logits` still works).
        source: Where it was loaded from.
        load_s: Seconds the load took.
    """

    def __init__(
        self, model: DecoderLM, tokenizer: Tokenizer | None, source: str = "", load_s: float = 0.0
    ) -> None:
        self.model = model
        self._tokenizer = tokenizer
        self.source = source
        self.load_s = load_s

    @property
    def config(self) -> ModelConfig:
        """The model's configuration."""
        return self.model.config

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer (ValueError if the checkpoint had none)."""
        if self._tokenizer is None:
            raise ValueError(f"{self.source}: this checkpoint has no tokenizer files")
        return self._tokenizer

    @torch.inference_mode()
    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) float32 for ids (B, T); mask (B, T) marks real tokens."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.ndim == 1:
            ids = ids[None]
        return self.model(ids, attention_mask=attention_mask).float()

    def generate_ids(self, prompt_ids: Sequence[int], **options: Any) -> GenerationResult:
        """Generate from token ids; options are GenerationConfig fields."""
        options.setdefault("stop_token_ids", self.stop_token_ids())
        return generate(self.model, list(prompt_ids), GenerationConfig(**options))

    def generate(self, prompt: str, **options: Any) -> str:
        """Continue `prompt` and return the new text, without the stop token.

        Options are GenerationConfig fields: max_new_tokens, temperature, top_k, top_p,
        seed, stop_token_ids.
        """
        result = self.generate_ids(self.encode_prompt(prompt), **options)
        return self.decode_new(result)

    def chat(self, messages: Sequence[Message], **options: Any) -> str:
        """The assistant's reply to `messages`, rendered with the model's chat template."""
        return self.decode_new(self.generate_ids(self.encode_chat(messages), **options))

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a plain prompt (ValueError if it is empty)."""
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        return self.tokenizer.encode(prompt)

    def encode_chat(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of `messages` rendered with the chat template and a generation prompt."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        # The template writes BOS itself when the model wants one.
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode_new(self, result: GenerationResult) -> str:
        """Text of generated tokens, without a final stop token."""
        ids = result.token_ids
        if result.finish_reason == "stop":
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @torch.inference_mode()
    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, normalize: bool = True
    ) -> torch.Tensor:
        """Sentence embeddings (N, d_model) float32, as sentence-transformers computes them.

        Each text's last hidden states are pooled (mean over real tokens for encoders,
        the last token for decoders) and, with `normalize`, scaled to unit L2 norm.
        Texts longer than the model's positions are cut, keeping the final special token.
        """
        from zenlm.models.heads import backbone_states, default_pooling, pool
        from zenlm.tasks.collate import pad_ids, truncate_keep_last

        if isinstance(texts, str):
            raise ValueError("embed takes a list of texts; wrap a single text in a list")
        limit = self.config.max_seq_len - self.config.position_offset
        encoder = self.config.arch == "encoder"
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.config.pad_token_id or 0)
        vectors = []
        for start in range(0, len(texts), batch_size):
            rows = [truncate_keep_last(self.tokenizer.encode(t), limit, encoder)
                    for t in texts[start:start + batch_size]]
            ids, mask = pad_ids(rows, pad)
            hidden = backbone_states(self.model, ids, mask)
            vectors.append(pool(hidden.float(), mask, default_pooling(self.config)))
        out = torch.cat(vectors) if vectors else torch.zeros(0, self.config.d_model)
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def stop_token_ids(self) -> tuple[int, ...]:
        """Ids that end generation: the tokenizer's EOS and config.json's eos_token_id(s)."""
        ids: set[int] = set()
        eos = self.config.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tokenizer is not None and self._tokenizer.eos_token_id is not None:
            ids.add(self._tokenizer.eos_token_id)
        return tuple(sorted(ids))


def load(model: str | Path, dtype: torch.dtype | str | None = None) -> LM:
    """Load a model folder, a .gguf file, a short name or a hub id.

    Args:
        model: See `zenlm.io.resolve.resolve_model`.
        dtype: Parameter dtype: torch.float32 (default), torch.bfloat16, or their names.

    Raises:
        CheckpointError: the files are missing, corrupt, pickles, or inconsistent.
        UnsupportedModelError: the architecture is not implemented.
    """
    start = time.perf_counter()
    torch_dtype = _dtype(dtype)
    path = resolve_model(model)
    refuse_pickle(path)
    if path.is_dir():
        network = load_hf_model(path, torch_dtype)
        tokenizer = _folder_tokenizer(path)
    elif path.suffix.lower() == ".gguf":
        network, tokenizer = _load_gguf(path, torch_dtype)
    else:
        raise CheckpointError(
            f"{path}: not a model folder or a .gguf file (for a .safetensors file, "
            "give the folder holding it and its config.json)"
        )
    return LM(network, tokenizer, str(path), time.perf_counter() - start)


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[DecoderLM, Tokenizer]:
    from zenlm.io.gguf import read_gguf
    from zenlm.io.hf import model_from_hf_tensors

    checkpoint = read_gguf(path, dtype=dtype)
    config = from_hf_config(checkpoint.hf_config)
    return model_from_hf_tensors(config, checkpoint.state_dict, path, dtype), checkpoint.tokenizer


def _folder_tokenizer(folder: Path) -> Tokenizer | None:
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file():
        return Tokenizer.from_folder(folder)
    return None


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]
