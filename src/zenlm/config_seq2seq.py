"""config.json <-> ModelConfig fields for the encoder-decoder families (Marian, BART, T5).

Readers return the ModelConfig fields (as a dict; `zenlm.config` builds the dataclass,
so this module needs no import of it), taking transformers' own defaults for keys a
config.json leaves out. A key zenlm cannot express is refused by name, with its value,
rather than silently loaded as a different function. Writers produce the keys
transformers reads back as the same architecture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zenlm.errors import UnsupportedModelError

if TYPE_CHECKING:
    from zenlm.config import ModelConfig

#: BART-family `activation_function` values (transformers' ACT2FN names) -> ours.
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "relu": "relu", "silu": "silu", "swish": "silu"}
_ACTIVATION_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "swish"}

#: Kept for the round trip: training and generation settings transformers reads.
_KEPT = ("architectures", "torch_dtype", "dtype", "transformers_version", "dropout",
         "attention_dropout", "activation_dropout", "init_std", "forced_bos_token_id",
         "forced_eos_token_id", "dropout_rate", "initializer_factor")


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
    _refuse_true(hf, family, ("normalize_before", "add_final_layer_norm", "normalize_embedding",
                              "add_bias_logits", "static_position_embeddings"),
                 "zenlm reads post-norm BART/Marian blocks only (mBART-style pre-norm is not "
                 "implemented)")
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
        "tie_word_embeddings": config.tie_embeddings,
        "is_encoder_decoder": True,
        "decoder_start_token_id": config.decoder_start_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
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

SEQ2SEQ_READERS = {"marian": read_marian, "bart": read_bart}
SEQ2SEQ_WRITERS = {"marian": write_marian, "bart": write_bart}


def check_heads(config: ModelConfig) -> None:
    """Encoder-decoder families have plain multi-head attention of d_model / n_heads."""
    if config.kv_heads != config.n_heads or config.dim_per_head * config.n_heads != config.d_model:
        raise UnsupportedModelError(
            f"a {config.hf_model_type} config.json cannot describe n_kv_heads={config.n_kv_heads}"
            f", head_dim={config.head_dim} (needs n_heads={config.n_heads} heads of "
            f"d_model / n_heads)"
        )
