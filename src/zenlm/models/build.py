"""Build a model from a ModelConfig: the one place that reads family fields."""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from zenlm.config import ModelConfig, rope_attention_factor
from zenlm.models.decoder import DecoderLM
from zenlm.models.encoder import EncoderModel
from zenlm.models.seq2seq import Seq2SeqLM
from zenlm.nn import (
    MLP,
    Attention,
    Block,
    LearnedPositions,
    RotaryEmbedding,
    SinusoidalPositions,
    make_norm,
)
from zenlm.nn.positions import RelativePositionBias

Model = DecoderLM | EncoderModel | Seq2SeqLM


def build_model(config: ModelConfig) -> Model:
    """A randomly initialised model of `config`'s shape and `arch` (load weights after)."""
    if config.arch == "encoder":
        return build_encoder(config)
    if config.arch == "encoder-decoder":
        return build_seq2seq(config)
    blocks = [_decoder_block(config) for _ in range(config.n_layers)]
    model = DecoderLM(
        config,
        embed=nn.Embedding(config.vocab_size, config.d_model),
        blocks=blocks,
        final_norm=_norm(config),
        lm_head=nn.Linear(config.d_model, config.vocab_size, bias=False),
        positions=_absolute_positions(config),
        rope=_rope(config),
    )
    _init_weights(model)
    return model


def build_skeleton(config: ModelConfig) -> Model:
    """`config`'s model on the meta device, uninitialised: a frame to assign loaded weights to.

    Initialising meta tensors is not free: torch routes `nn.init` on the meta device
    through `torch._refs`, which imports torch._dynamo and sympy (~75 MB of resident
    memory and ~1 s that a model being loaded for inference never needs).
    """
    with torch.device("meta"), _SkipInit():
        return build_model(config)


class _SkipInit(TorchFunctionMode):
    """Makes every `torch.nn.init` function a no-op inside its `with` block."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def build_encoder(config: ModelConfig) -> EncoderModel:
    """A randomly initialised bidirectional encoder of `config`'s shape."""
    model = EncoderModel(
        config,
        embed=nn.Embedding(config.vocab_size, config.d_model),
        blocks=[_decoder_block(config) for _ in range(config.n_layers)],
        positions=_absolute_positions(config),
        token_types=(
            nn.Embedding(config.type_vocab_size, config.d_model)
            if config.type_vocab_size else None
        ),
        embed_norm=_norm(config) if config.embed_norm else None,
        final_norm=_norm(config) if config.final_norm else None,
    )
    _init_weights(model)
    return model


def build_seq2seq(config: ModelConfig) -> Seq2SeqLM:
    """A randomly initialised encoder-decoder of `config`'s shape."""
    source = nn.Embedding(config.vocab_size, config.d_model)
    target = source if config.share_embeddings else nn.Embedding(config.vocab_size, config.d_model)
    encoder = EncoderModel(
        config,
        embed=source,
        blocks=[_decoder_block(config) for _ in range(config.n_layers)],
        positions=_absolute_positions(config),
        embed_norm=_norm(config) if config.embed_norm else None,
        final_norm=_norm(config) if config.final_norm else None,
        relative_bias=_relative_bias(config, bidirectional=True),
    )
    decoder = DecoderLM(
        config,
        embed=target,
        blocks=[_decoder_block(config, cross=True) for _ in range(config.decoder_layers)],
        final_norm=_norm(config) if config.final_norm else None,
        lm_head=nn.Linear(config.d_model, config.vocab_size, bias=config.lm_head_bias),
        positions=_absolute_positions(config),
        embed_norm=_norm(config) if config.embed_norm else None,
        relative_bias=_relative_bias(config, bidirectional=False),
    )
    model = Seq2SeqLM(config, encoder=encoder, decoder=decoder)
    _init_weights(model)
    if config.scale_embeddings:  # x sqrt(d) then brings embeddings to unit scale (fairseq)
        for embed in {id(source): source, id(target): target}.values():
            nn.init.normal_(embed.weight, mean=0.0, std=config.d_model**-0.5)
    return model


def _decoder_block(config: ModelConfig, *, cross: bool = False) -> Block:
    scale = None if config.scale_attention else 1.0
    attn = Attention(
        config.d_model, config.n_heads, config.kv_heads, config.dim_per_head,
        qkv_bias=config.qkv_bias, out_bias=config.attn_out_bias, scale=scale,
    )
    mlp = MLP(
        config.d_model, config.d_ff,
        activation=config.activation, gated=config.gated_mlp, bias=config.mlp_bias,
    )
    cross_attn = cross_norm = None
    if cross:
        cross_attn = Attention(
            config.d_model, config.n_heads, config.kv_heads, config.dim_per_head,
            qkv_bias=config.qkv_bias, out_bias=config.attn_out_bias, scale=scale,
        )
        cross_norm = _norm(config)
    return Block(attn, _norm(config), mlp, _norm(config), pre_norm=config.pre_norm,
                 cross_attn=cross_attn, cross_norm=cross_norm, dropout=config.dropout)


def _relative_bias(config: ModelConfig, *, bidirectional: bool) -> RelativePositionBias | None:
    if not config.relative_buckets:
        return None
    return RelativePositionBias(config.relative_buckets, config.relative_max_distance,
                                config.n_heads, bidirectional=bidirectional)


def _norm(config: ModelConfig) -> nn.Module:
    return make_norm(config.norm, config.d_model, config.norm_eps, bias=config.norm_bias)


def _absolute_positions(config: ModelConfig) -> nn.Module | None:
    if config.positions == "learned":
        return LearnedPositions(config.max_seq_len, config.d_model)
    if config.positions == "sinusoidal":
        return SinusoidalPositions(config.d_model)
    return None


def _rope(config: ModelConfig) -> RotaryEmbedding | None:
    if config.positions != "rope":
        return None
    return RotaryEmbedding(
        config.dim_per_head, config.rope_theta, config.rope_scaling, rope_attention_factor(config)
    )


def _init_weights(model: nn.Module, std: float = 0.02) -> None:
    """GPT-2 / Llama initialisation: normal(0, 0.02) weights, zero biases, unit norms."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding, LearnedPositions, RelativePositionBias)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def replace_token_embedding(model: Model, weight: torch.Tensor) -> None:
    """Give `model` a trainable token embedding of `weight` (V' x d) and a config of V' tokens.

    A decoder's head tied to the old embedding is tied to the new one; an untied head is the
    caller's to replace (its rows are per token too).
    """
    model.embed = nn.Embedding.from_pretrained(weight, freeze=False)
    head = getattr(model, "lm_head", None)
    if head is not None and model.config.tie_embeddings:
        head.weight = model.embed.weight
    model.config.vocab_size = weight.shape[0]
