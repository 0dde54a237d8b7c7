"""Tiny random-weight Hugging Face models of each supported family (test oracles)."""

from __future__ import annotations

import torch
import transformers

VOCAB = 96


def _llama_like(cls, **extra):  # noqa: ANN001, ANN202
    base = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    base.update(extra)
    return cls(**base)


def tiny_configs() -> dict[str, transformers.PretrainedConfig]:
    """One small config per family and per RoPE variant the loaders read."""
    return {
        "gpt2": transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128,
            bos_token_id=1, eos_token_id=2,
        ),
        "llama": _llama_like(transformers.LlamaConfig),
        "llama-tied-mqa": _llama_like(
            transformers.LlamaConfig, num_key_value_heads=1, tie_word_embeddings=True
        ),
        "llama3-rope-scaling": _llama_like(
            transformers.LlamaConfig, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        ),
        "qwen2": _llama_like(transformers.Qwen2Config, tie_word_embeddings=True),
        "qwen2-yarn": _llama_like(
            transformers.Qwen2Config,
            rope_scaling={"rope_type": "yarn", "factor": 4.0,
                          "original_max_position_embeddings": 32},
        ),
        "llama-linear-rope": _llama_like(
            transformers.LlamaConfig, rope_scaling={"rope_type": "linear", "factor": 2.0}
        ),
        "mistral": _llama_like(transformers.MistralConfig, sliding_window=6),
    }


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (biases and norms included) non-trivial random values.

    HF initialises biases to 0 and norms to 1; random values make a wrongly mapped
    bias or norm visible in the logits.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name or "ln_" in name:
                param.copy_(1.0 + 0.2 * noise if name.endswith("weight") else 0.2 * noise)
            else:
                param.copy_(0.15 * noise)
    return model


def tiny_hf_model(name: str, **overrides: object) -> transformers.PreTrainedModel:
    """A randomized tiny model of family `name` (config fields overridden by `overrides`),
    in eval mode, fp32, eager attention."""
    config = tiny_configs()[name]
    for key, value in overrides.items():
        setattr(config, key, value)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return randomize(model).eval()
