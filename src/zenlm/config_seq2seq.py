"""config.json <-> ModelConfig fields for the encoder-decoder families (Marian, BART, T5).

Readers return the ModelConfig fields (as a dict; `zenlm.config` builds the dataclass,
so this module needs no import of it), taking transformers' own defaults for keys a
config.json leaves out. A key zenlm cannot express is refused by name, with its value,
rather than silently loaded as a different function. Writers produce the keys
transformers reads back as the same architecture.
"""

from __future__ import annotations

from typing import Any

from zenlm.errors import UnsupportedModelError

#: What the writers take: a `zenlm.config.ModelConfig`. Not imported, even for type
#: checking: `zenlm.config` imports this module, and layers point one way.
ModelConfig = Any

#: BART-family `activation_function` values (transformers' ACT2FN names) -> ours.
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "relu": "relu", "silu": "silu", "swish": "silu"}
_ACTIVATION_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "swish"}

#: Kept for the round trip: training and generation settings transformers reads.
_KEPT = ("architectures", "torch_dtype", "dtype", "transformers_version",
         "attention_dropout", "activation_dropout", "init_std", "forced_bos_token_id",
         "forced_eos_token_id", "initializer_factor")


def _refuse(family: str, key: str, value: Any, valid: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{family} config.json field {key}={value!r} is not supported by zenlm ({valid})"
    )


def _same(hf: dict[str, Any], family: str, encoder_key: str, decoder_key: str,
          default: int) -> int:
    """One value the encoder and the decoder must share (zenlm has one field for both)."""
    encoder, decoder = hf.get(encoder_key, default), hf.get(decoder_key, default)
    if encoder != decoder:
        raise _refuse(family, decoder_key, decoder,
                      f"must equal {encoder_key}={encoder!r}: one value serves both stacks")
    return encoder


def _refuse_true(hf: dict[str, Any], family: str, keys: tuple[str, ...], why: str) -> None:
    for key in keys:
        if hf.get(key):
            raise _refuse(family, key, hf[key], why)


def _activation(hf: dict[str, Any], family: str, default: str) -> str:
    name = hf.get("activation_function", default)
    if name not in _ACTIVATIONS:
        raise _refuse(family, "activation_function", name, f"supported: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _bart_like(hf: dict[str, Any], family: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Fields Marian and BART share: sizes, post-norm LayerNorm blocks with biases, ids."""
    get = {**defaults, **hf}.get
    vocab = get("vocab_size")
    if hf.get("decoder_vocab_size") not in (None, vocab):
        raise _refuse(family, "decoder_vocab_size", hf["decoder_vocab_size"],
                      f"must equal vocab_size={vocab}: zenlm has one vocabulary")
    _refuse_true(hf, family, ("normalize_before", "add_final_layer_norm"),
                 "zenlm reads post-norm BART/Marian blocks only (mBART-style pre-norm is not "
                 "implemented)")
    _refuse_true(hf, family, ("add_bias_logits",), "the logits' bias is final_logits_bias")
    # Older configs spell out what transformers now fixes per family; another value is refused.
    marian = family == "marian"
    for key, expected, meaning in (
            ("static_position_embeddings", marian, "sinusoidal positions"),
            ("normalize_embedding", not marian, "a LayerNorm over the embeddings"),
            ("extra_pos_embeddings", None if marian else 2, "the position offset")):
        if key in hf and expected is not None and hf[key] != expected:
            raise _refuse(family, key, hf[key], f"{family} has {expected!r} ({meaning})")
    if hf.get("is_decoder"):
        raise _refuse(family, "is_decoder", True, "a decoder-only checkpoint")
    return {
        "vocab_size": vocab,
        "d_model": get("d_model"),
        "n_layers": get("encoder_layers"),
        "n_decoder_layers": get("decoder_layers"),
        "n_heads": _same(hf, family, "encoder_attention_heads", "decoder_attention_heads",
                         defaults["encoder_attention_heads"]),
        "d_ff": _same(hf, family, "encoder_ffn_dim", "decoder_ffn_dim",
                      defaults["encoder_ffn_dim"]),
        "norm": "layernorm", "norm_eps": 1e-5, "norm_bias": True,  # torch's LayerNorm default
        "activation": _activation(hf, family, "gelu"),
        "gated_mlp": False, "qkv_bias": True, "attn_out_bias": True, "mlp_bias": True,
        "arch": "encoder-decoder", "pre_norm": False, "final_norm": False,
        "scale_embeddings": bool(get("scale_embedding", False)),
        "dropout": float(get("dropout", 0.1)),  # transformers' default
        "lm_head_bias": True,  # final_logits_bias (zeros unless fine-tuned)
        "tie_embeddings": bool(get("tie_word_embeddings", True)),
        "decoder_start_token_id": get("decoder_start_token_id"),
        "bos_token_id": get("bos_token_id"),
        "eos_token_id": get("eos_token_id"),
        "pad_token_id": get("pad_token_id"),
        "hf_model_type": family,
        "extra": {k: hf[k] for k in _KEPT if k in hf},
    }


#: MarianConfig's defaults (transformers), for keys a config.json leaves out.
_MARIAN_DEFAULTS = {
    "vocab_size": 58101, "max_position_embeddings": 1024, "encoder_layers": 12,
    "encoder_ffn_dim": 4096, "encoder_attention_heads": 16, "decoder_layers": 12,
    "d_model": 1024, "decoder_start_token_id": 58100, "pad_token_id": 58100, "eos_token_id": 0,
}


def read_marian(hf: dict[str, Any]) -> dict[str, Any]:
    """MarianMT and the 2017 Transformer: sinusoidal positions, post-norm blocks.

    Sines then cosines (Marian's layout), no embedding norm; one embedding shared by
    both stacks unless `share_encoder_decoder_embeddings` (or the head's tie) is false.
    """
    fields = _bart_like(hf, "marian", _MARIAN_DEFAULTS)
    fields.update(
        positions="sinusoidal",
        max_seq_len={**_MARIAN_DEFAULTS, **hf}["max_position_embeddings"],
        embed_norm=False,
        # transformers 5 shares the stacks' embedding only along with a tied head
        share_embeddings=bool(hf.get("share_encoder_decoder_embeddings", True))
        and fields["tie_embeddings"],
    )
    return fields


#: BartConfig's defaults (transformers), for keys a config.json leaves out.
_BART_DEFAULTS = {
    "vocab_size": 50265, "max_position_embeddings": 1024, "encoder_layers": 12,
    "encoder_ffn_dim": 4096, "encoder_attention_heads": 16, "decoder_layers": 12,
    "d_model": 1024, "decoder_start_token_id": 2, "pad_token_id": 1, "bos_token_id": 0,
    "eos_token_id": 2,
}
_BART_OFFSET = 2  # BART's position ids start at 2; its table has 2 more rows


def read_bart(hf: dict[str, Any]) -> dict[str, Any]:
    """BART: learned positions from 2, LayerNorm over the embeddings, post-norm blocks.

    transformers 5 ties the stacks' embeddings to `shared` only along with the head,
    so `tie_word_embeddings: false` gives three separate matrices.
    """
    fields = _bart_like(hf, "bart", _BART_DEFAULTS)
    fields.update(
        positions="learned",
        max_seq_len={**_BART_DEFAULTS, **hf}["max_position_embeddings"] + _BART_OFFSET,
        position_offset=_BART_OFFSET,
        embed_norm=True,
        share_embeddings=fields["tie_embeddings"],
    )
    return fields


def write_bart(config: ModelConfig) -> dict[str, Any]:
    """config.json keys of a BartForConditionalGeneration."""
    if config.tie_embeddings and not config.share_embeddings:
        raise UnsupportedModelError(
            "a bart config.json cannot describe share_embeddings=False with "
            "tie_embeddings=True (BART ties its head to the one shared embedding)"
        )
    return {
        "model_type": "bart",
        "architectures": ["BartForConditionalGeneration"],
        **_write_bart_like(config),
        "max_position_embeddings": config.max_seq_len - _BART_OFFSET,
    }


def _write_bart_like(config: ModelConfig) -> dict[str, Any]:
    return {
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "encoder_layers": config.n_layers,
        "decoder_layers": config.decoder_layers,
        "encoder_attention_heads": config.n_heads,
        "decoder_attention_heads": config.n_heads,
        "encoder_ffn_dim": config.d_ff,
        "decoder_ffn_dim": config.d_ff,
        "activation_function": _ACTIVATION_NAMES[config.activation],
        "scale_embedding": config.scale_embeddings,
        "dropout": config.dropout,
        "tie_word_embeddings": config.tie_embeddings,
        "is_encoder_decoder": True,
        "decoder_start_token_id": config.decoder_start_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        # transformers' default (Marian 0, BART 2) would force a foreign id at max length
        "forced_eos_token_id": config.extra.get("forced_eos_token_id", config.eos_token_id),
    }


def write_marian(config: ModelConfig) -> dict[str, Any]:
    """config.json keys of a MarianMTModel."""
    return {
        "model_type": "marian",
        "architectures": ["MarianMTModel"],
        **_write_bart_like(config),
        "decoder_vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_seq_len,
        "share_encoder_decoder_embeddings": config.share_embeddings,
    }


#: What a post-norm BART-family config.json implies; a model that differs in any of
#: these would be written as a different function.
_POST_NORM_TRAITS: dict[str, Any] = {
    "arch": "encoder-decoder", "norm": "layernorm", "norm_bias": True, "norm_eps": 1e-5,
    "pre_norm": False, "final_norm": False, "gated_mlp": False, "qkv_bias": True,
    "attn_out_bias": True, "mlp_bias": True, "relative_buckets": 0, "scale_attention": True,
    "scale_output": False, "type_vocab_size": 0, "sliding_window": None,
}

SEQ2SEQ_TRAITS: dict[str, dict[str, Any]] = {
    "marian": {**_POST_NORM_TRAITS, "positions": "sinusoidal", "embed_norm": False,
               "position_offset": 0},
}

SEQ2SEQ_TRAITS["bart"] = {**_POST_NORM_TRAITS, "positions": "learned", "embed_norm": True,
                          "position_offset": _BART_OFFSET}

#: T5 `feed_forward_proj` -> (our activation, gated, transformers' dense_act_fn).
_T5_FEED_FORWARD = {"relu": ("relu", False, "relu"), "gelu": ("gelu", False, "gelu"),
                    "gated-gelu": ("gelu_tanh", True, "gelu_new")}


def read_t5(hf: dict[str, Any]) -> dict[str, Any]:
    """T5 v1.0 (ReLU, tied head reading d_model^-0.5 x the output) and v1.1 (gated GELU).

    RMSNorm without bias, pre-norm, no absolute positions: a relative position bias
    owned by each stack's first layer; no 1/sqrt(d) score scaling (folded into weights).
    transformers 5 keeps the output rescale as `scale_decoder_outputs`, else it follows
    `tie_word_embeddings`; a head stored apart from the embedding is loaded untied.
    """
    projection = hf.get("feed_forward_proj", "relu")
    if projection not in _T5_FEED_FORWARD:
        raise _refuse("t5", "feed_forward_proj", projection,
                      f"supported: {', '.join(_T5_FEED_FORWARD)}")
    activation, gated, act_name = _T5_FEED_FORWARD[projection]
    for key, expected in (("is_gated_act", gated), ("dense_act_fn", act_name)):
        if hf.get(key, expected) != expected:
            raise _refuse("t5", key, hf[key], f"feed_forward_proj={projection!r} implies "
                          f"{expected!r}; zenlm reads only that combination")
    if hf.get("is_decoder"):
        raise _refuse("t5", "is_decoder", True, "a decoder-only checkpoint")
    tie = hf.get("tie_word_embeddings", True) is not False
    layers = hf.get("num_layers", 6)
    pad = hf.get("pad_token_id", 0)
    d_model, heads, d_kv = hf.get("d_model", 512), hf.get("num_heads", 8), hf.get("d_kv", 64)
    return {
        "vocab_size": hf.get("vocab_size", 32128), "d_model": d_model,
        "n_layers": layers, "n_decoder_layers": hf.get("num_decoder_layers") or layers,
        "n_heads": heads, "head_dim": None if d_kv * heads == d_model else d_kv,
        "d_ff": hf.get("d_ff", 2048), "max_seq_len": hf.get("n_positions", 512),
        "norm": "rmsnorm", "norm_eps": hf.get("layer_norm_epsilon", 1e-6), "norm_bias": False,
        "activation": activation, "gated_mlp": gated,
        "positions": "none", "arch": "encoder-decoder",
        "relative_buckets": hf.get("relative_attention_num_buckets", 32),
        "relative_max_distance": hf.get("relative_attention_max_distance", 128),
        "scale_attention": False,
        "scale_output": bool(hf.get("scale_decoder_outputs", tie)),
        "tie_embeddings": tie, "share_embeddings": True,
        "dropout": float(hf.get("dropout_rate", 0.1)),
        "decoder_start_token_id": hf.get("decoder_start_token_id", pad),
        "bos_token_id": hf.get("bos_token_id"), "eos_token_id": hf.get("eos_token_id", 1),
        "pad_token_id": pad, "hf_model_type": "t5",
        "extra": {k: hf[k] for k in _KEPT if k in hf},
    }


def write_t5(config: ModelConfig) -> dict[str, Any]:
    """config.json keys of a T5ForConditionalGeneration."""
    kind = (config.activation, config.gated_mlp)
    projection = next((name for name, (act, gated, _) in _T5_FEED_FORWARD.items()
                       if (act, gated) == kind), None)
    if projection is None:
        raise UnsupportedModelError(
            f"a t5 config.json cannot describe activation={config.activation!r} with "
            f"gated_mlp={config.gated_mlp}; valid: relu or gelu ungated, gelu_tanh gated"
        )
    return {
        "model_type": "t5",
        "architectures": ["T5ForConditionalGeneration"],
        "vocab_size": config.vocab_size, "d_model": config.d_model,
        "d_kv": config.dim_per_head, "d_ff": config.d_ff, "num_heads": config.n_heads,
        "num_layers": config.n_layers, "num_decoder_layers": config.decoder_layers,
        "n_positions": config.max_seq_len,
        "relative_attention_num_buckets": config.relative_buckets,
        "relative_attention_max_distance": config.relative_max_distance,
        "layer_norm_epsilon": config.norm_eps,
        "dropout_rate": config.dropout,
        "feed_forward_proj": projection,
        "is_gated_act": config.gated_mlp,
        "dense_act_fn": _T5_FEED_FORWARD[projection][2],
        "tie_word_embeddings": config.tie_embeddings,
        "scale_decoder_outputs": config.scale_output,
        "is_encoder_decoder": True,
        "decoder_start_token_id": config.decoder_start_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }


SEQ2SEQ_TRAITS["t5"] = {
    "arch": "encoder-decoder", "norm": "rmsnorm", "norm_bias": False, "pre_norm": True,
    "final_norm": True, "embed_norm": False, "positions": "none", "qkv_bias": False,
    "attn_out_bias": False, "mlp_bias": False, "scale_attention": False,
    "scale_embeddings": False, "lm_head_bias": False, "share_embeddings": True,
    "position_offset": 0, "type_vocab_size": 0, "sliding_window": None,
}

SEQ2SEQ_READERS = {"marian": read_marian, "bart": read_bart, "t5": read_t5}
SEQ2SEQ_WRITERS = {"marian": write_marian, "bart": write_bart, "t5": write_t5}


def check_heads(config: ModelConfig) -> None:
    """Refuse what an encoder-decoder family's config.json cannot hold.

    All have plain multi-head attention, of heads d_model / n_heads wide except T5
    (whose d_kv is free); T5 needs its relative position bias.
    """
    family = config.hf_model_type
    width_ok = family == "t5" or config.dim_per_head * config.n_heads == config.d_model
    if config.kv_heads != config.n_heads or not width_ok:
        raise UnsupportedModelError(
            f"a {family} config.json cannot describe n_kv_heads={config.n_kv_heads}, "
            f"head_dim={config.head_dim} (needs {config.n_heads} key/value heads"
            f"{'' if family == 't5' else ' of d_model / n_heads'})"
        )
    if family == "t5" and not config.relative_buckets:
        raise UnsupportedModelError("a t5 config.json cannot describe relative_buckets=0")
