"""ModelConfig: every difference between model families as a named field.

The model code never asks "is this Llama?"; it reads fields such as `norm`,
`activation`, `gated_mlp`, `positions` and `qkv_bias`. Translating a Hugging Face
config.json into these fields happens once per family, here, keyed by the file's
own `model_type` (never guessed from a file or folder name). This module imports
no torch so that configs can be read, validated and printed cheaply.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from zenlm.config_seq2seq import SEQ2SEQ_READERS, SEQ2SEQ_TRAITS, SEQ2SEQ_WRITERS, check_heads
from zenlm.errors import UnsupportedModelError

Norm = Literal["layernorm", "rmsnorm"]
Positions = Literal["rope", "learned", "sinusoidal", "none"]
Activation = Literal["gelu", "gelu_tanh", "relu", "silu"]
Arch = Literal["decoder", "encoder", "encoder-decoder"]

#: RoPE scaling types whose inverse frequencies are fixed at build time.
ROPE_SCALING_TYPES = ("default", "linear", "llama3", "yarn")


@dataclass
class ModelConfig:
    """Hyper-parameters and family traits of one Transformer.

    Attributes are grouped by what they shape. Every field a family sets differently
    from the defaults is listed in that family's reader below.
    """

    # --- size
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    n_kv_heads: int | None = None  # None: = n_heads (MHA); 1: MQA; else GQA
    head_dim: int | None = None  # None: d_model // n_heads
    max_seq_len: int = 2048  # longest sequence the positions support

    # --- shape of a block
    norm: Norm = "rmsnorm"
    norm_eps: float = 1e-5
    norm_bias: bool = False  # LayerNorm with a bias (GPT-2, BERT)
    activation: Activation = "silu"
    gated_mlp: bool = True  # SwiGLU-style: down(act(gate(x)) * up(x))
    qkv_bias: bool = False  # Qwen2, GPT-2 and BERT have biases on q/k/v
    attn_out_bias: bool = False
    mlp_bias: bool = False

    # --- positions
    positions: Positions = "rope"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "llama3"|"yarn"|"linear", ...}
    sliding_window: int | None = None  # Mistral: attend to at most this many past tokens

    # --- ends
    tie_embeddings: bool = False  # output head shares the token-embedding matrix

    # --- encoders (BERT family); the defaults describe a decoder
    arch: Arch = "decoder"  # "encoder": bidirectional attention, hidden states out, no LM head
    pre_norm: bool = True  # False: post-norm blocks, norm(x + sublayer(x)) (BERT, RoBERTa)
    final_norm: bool = True  # a norm after the last block (post-norm blocks end normed already)
    embed_norm: bool = False  # LayerNorm over the summed embeddings (BERT, RoBERTa)
    type_vocab_size: int = 0  # segment (token type) embeddings; 0: none
    position_offset: int = 0  # first real token's position id (RoBERTa: padding_idx + 1)
    dropout: float = 0.0  # on each sub-layer's output while training (0: none)

    # --- encoder-decoders (T5, BART, Marian); n_layers counts the encoder's blocks
    n_decoder_layers: int | None = None  # None: = n_layers
    relative_buckets: int = 0  # T5's relative position bias buckets; 0: none
    relative_max_distance: int = 128  # T5: distances past this share the last bucket
    scale_attention: bool = True  # scores / sqrt(head_dim); T5 folds it into its weights
    scale_embeddings: bool = False  # embeddings x sqrt(d_model) (Marian, the 2017 Transformer)
    scale_output: bool = False  # hidden x d_model^-0.5 before a tied head (T5 v1.0)
    lm_head_bias: bool = False  # a bias on the vocabulary logits (BART's final_logits_bias)
    share_embeddings: bool = True  # encoder and decoder read one token embedding
    decoder_start_token_id: int | None = None  # first decoder input of every target

    # --- special token ids (copied from config.json; the tokenizer is the authority)
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    # --- provenance: which Hugging Face family to write back as
    hf_model_type: str = "llama"
    extra: dict[str, Any] = field(default_factory=dict)  # config.json keys kept for the round trip

    def __post_init__(self) -> None:
        self.validate()

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (n_heads for plain multi-head attention)."""
        return self.n_kv_heads or self.n_heads

    @property
    def decoder_layers(self) -> int:
        """Blocks of the decoder (of an encoder-decoder; n_layers otherwise)."""
        if self.arch == "encoder-decoder" and self.n_decoder_layers:
            return self.n_decoder_layers
        return self.n_layers

    @property
    def context_length(self) -> int:
        """Tokens one sequence may hold: max_seq_len, less the first position id.

        Learned positions that start past an offset (BART's 2, RoBERTa's padding id + 1)
        leave that many rows of their table unused by real tokens.
        """
        return self.max_seq_len - self.position_offset

    @property
    def dim_per_head(self) -> int:
        """Size of one attention head."""
        return self.head_dim or self.d_model // self.n_heads

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "set head_dim explicitly"
            )
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.kv_heads}"
            )
        if self.positions == "rope" and self.dim_per_head % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.dim_per_head}")
        if self.positions == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.arch not in ("decoder", "encoder", "encoder-decoder"):
            raise ValueError(f"ModelConfig.arch must be decoder, encoder or encoder-decoder, "
                             f"got {self.arch!r}")
        if self.n_decoder_layers is not None and (
                not isinstance(self.n_decoder_layers, int) or self.n_decoder_layers <= 0):
            raise ValueError(f"ModelConfig.n_decoder_layers must be a positive int, "
                             f"got {self.n_decoder_layers!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.relative_buckets and self.relative_buckets < 4:
            raise ValueError(f"ModelConfig.relative_buckets must be 0 or >= 4, "
                             f"got {self.relative_buckets}")
        rope_type = (self.rope_scaling or {}).get("rope_type", "default")
        if rope_type not in ROPE_SCALING_TYPES:
            raise UnsupportedModelError(
                f"rope_scaling type {rope_type!r} is not supported; "
                f"supported: {', '.join(ROPE_SCALING_TYPES)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (used inside zenlm checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; valid: {sorted(known)}")
        return cls(**data)


# ---------------------------------------------------------------------------
# Hugging Face config.json  <->  ModelConfig, one reader/writer pair per family
# ---------------------------------------------------------------------------
def from_hf_config(hf: dict[str, Any]) -> ModelConfig:
    """Translate a transformers config.json dict into a ModelConfig.

    Raises:
        UnsupportedModelError: if `model_type` is missing or not a supported family.
    """
    model_type = hf.get("model_type")
    reader = _READERS.get(model_type)  # type: ignore[arg-type]
    if reader is None:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(_READERS))}"
        )
    return reader(hf)


def to_hf_config(config: ModelConfig) -> dict[str, Any]:
    """A config.json dict that transformers loads as the same architecture."""
    writer = _WRITERS.get(config.hf_model_type)
    if writer is None:
        raise UnsupportedModelError(
            f"cannot write hf_model_type {config.hf_model_type!r}; "
            f"supported: {', '.join(sorted(_WRITERS))}"
        )
    _require_family_traits(config)
    if config.hf_model_type in SEQ2SEQ_WRITERS:
        check_heads(config)
    return {**config.extra, **writer(config)}


#: Fields a family's config.json cannot express: a model that differs in them would be
#: written as a different function (e.g. a pre-norm encoder as post-norm BERT).
_FAMILY_TRAITS: dict[str, dict[str, Any]] = {
    "llama": {"positions": "rope", "norm": "rmsnorm", "pre_norm": True, "gated_mlp": True,
              "arch": "decoder"},
    "gpt2": {"positions": "learned", "norm": "layernorm", "pre_norm": True, "gated_mlp": False,
             "arch": "decoder"},
    "bert": {"positions": "learned", "norm": "layernorm", "pre_norm": False, "final_norm": False,
             "embed_norm": True, "gated_mlp": False, "arch": "encoder"},
}
for _alias, _family in (("mistral", "llama"), ("qwen2", "llama"), ("roberta", "bert")):
    _FAMILY_TRAITS[_alias] = _FAMILY_TRAITS[_family]
_FAMILY_TRAITS.update(SEQ2SEQ_TRAITS)


def _require_family_traits(config: ModelConfig) -> None:
    traits = _FAMILY_TRAITS.get(config.hf_model_type, {})
    wrong = [f"{name}={getattr(config, name)!r} (needs {value!r})"
             for name, value in traits.items() if getattr(config, name) != value]
    if wrong:
        raise UnsupportedModelError(
            f"a {config.hf_model_type} config.json cannot describe this model: {', '.join(wrong)}"
        )


def _rope_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """RoPE theta and scaling from config.json.

    Both layouts are read: the old one (rope_theta + rope_scaling) and transformers
    5's (rope_parameters).
    """
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    merged = {**scaling, **params}
    rope_type = merged.pop("rope_type", merged.pop("type", "default"))
    if rope_type == "default":
        return {"rope_theta": float(theta), "rope_scaling": None}
    if rope_type in ("llama3", "yarn") and "original_max_position_embeddings" not in merged:
        merged["original_max_position_embeddings"] = hf.get("max_position_embeddings")
    return {"rope_theta": float(theta), "rope_scaling": {"rope_type": rope_type, **merged}}


def _hf_activation(name: str) -> Activation:
    table: dict[str, Activation] = {
        "gelu": "gelu",
        "gelu_new": "gelu_tanh",
        "gelu_pytorch_tanh": "gelu_tanh",
        "gelu_fast": "gelu_tanh",
        "relu": "relu",
        "silu": "silu",
        "swish": "silu",
    }
    if name not in table:
        raise UnsupportedModelError(
            f"activation {name!r} is not supported; supported: {', '.join(table)}"
        )
    return table[name]


_KEPT_KEYS = ("architectures", "torch_dtype", "dtype", "transformers_version")


def _kept(hf: dict[str, Any]) -> dict[str, Any]:
    return {k: hf[k] for k in _KEPT_KEYS if k in hf}


def _read_llama_like(hf: dict[str, Any]) -> ModelConfig:
    """Llama, Mistral and Qwen2 share one layout; their differences are fields."""
    model_type = hf["model_type"]
    n_heads = hf["num_attention_heads"]
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=hf.get("head_dim"),
        d_ff=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        activation=_hf_activation(hf.get("hidden_act", "silu")),
        gated_mlp=True,
        # Qwen2 always has q/k/v biases; Llama declares them with attention_bias.
        qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
        attn_out_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        positions="rope",
        **_rope_fields(hf),
        sliding_window=_sliding_window(hf),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
        hf_model_type=model_type,
        extra=_kept(hf),
    )


def _sliding_window(hf: dict[str, Any]) -> int | None:
    # Qwen2 declares a window but applies it only when use_sliding_window is true.
    if hf["model_type"] == "qwen2" and not hf.get("use_sliding_window", False):
        return None
    return hf.get("sliding_window")


def _write_llama_like(config: ModelConfig) -> dict[str, Any]:
    hf: dict[str, Any] = {
        "model_type": config.hf_model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.dim_per_head,
        "intermediate_size": config.d_ff,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "hidden_act": config.activation,
        "rope_theta": config.rope_theta,
        "rope_scaling": config.rope_scaling,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }
    if config.hf_model_type == "llama":
        hf["attention_bias"] = config.qkv_bias
        hf["mlp_bias"] = config.mlp_bias
    if config.hf_model_type in ("mistral", "qwen2"):
        hf["sliding_window"] = config.sliding_window
    if config.hf_model_type == "qwen2":
        hf["use_sliding_window"] = config.sliding_window is not None
    hf.setdefault("architectures", [_ARCHITECTURES[config.hf_model_type]])
    return hf


def _read_gpt2(hf: dict[str, Any]) -> ModelConfig:
    d_model = hf.get("n_embd", 768)
    unsupported = {
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "scale_attn_weights": True,
    }
    for key, expected in unsupported.items():
        if hf.get(key, expected) != expected:
            raise UnsupportedModelError(f"GPT-2 option {key}={hf[key]!r} is not supported")
    return ModelConfig(
        vocab_size=hf.get("vocab_size", 50257),
        d_model=d_model,
        n_layers=hf.get("n_layer", 12),
        n_heads=hf.get("n_head", 12),
        d_ff=hf.get("n_inner") or 4 * d_model,
        max_seq_len=hf.get("n_positions", 1024),
        norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        norm_bias=True,
        activation=_hf_activation(hf.get("activation_function", "gelu_new")),
        gated_mlp=False,
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        positions="learned",
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
        hf_model_type="gpt2",
        extra=_kept(hf),
    )


_GPT2_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def _write_gpt2(config: ModelConfig) -> dict[str, Any]:
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_embd": config.d_model,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": config.d_ff,
        "n_positions": config.max_seq_len,
        "layer_norm_epsilon": config.norm_eps,
        "activation_function": _GPT2_ACTIVATION[config.activation],
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    }


_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}

def _read_bert(hf: dict[str, Any]) -> ModelConfig:
    """BERT (and MiniLM, which is BERT-shaped): post-norm encoder, learned positions."""
    kind = hf.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise UnsupportedModelError(
            f"position_embedding_type {kind!r} is not supported; supported: absolute"
        )
    kept = {k: hf[k] for k in _ENCODER_KEPT_KEYS if k in hf}
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        d_ff=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 512),
        norm="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        norm_bias=True,
        activation=_hf_activation(hf.get("hidden_act", "gelu")),
        gated_mlp=False,
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        positions="learned",
        arch="encoder",
        pre_norm=False,
        final_norm=False,
        embed_norm=True,
        type_vocab_size=hf.get("type_vocab_size", 2),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id", 0),
        hf_model_type=hf["model_type"],
        extra={**_kept(hf), **kept},
    )


def _read_roberta(hf: dict[str, Any]) -> ModelConfig:
    """RoBERTa is BERT whose position ids start after the padding id."""
    config = _read_bert(hf)
    config.position_offset = hf.get("pad_token_id", 1) + 1
    return config


# Dropout rates matter when fine-tuning with transformers; keep them for the round trip.
_ENCODER_KEPT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range")
_ENCODER_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def _write_bert(config: ModelConfig) -> dict[str, Any]:
    architecture = {"bert": "BertModel", "roberta": "RobertaModel"}[config.hf_model_type]
    return {
        "model_type": config.hf_model_type,
        "architectures": [architecture],
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "intermediate_size": config.d_ff,
        "hidden_act": _ENCODER_ACTIVATION[config.activation],
        "max_position_embeddings": config.max_seq_len,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.norm_eps,
        "position_embedding_type": "absolute",
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }


_READERS: dict[str, Callable[[dict[str, Any]], ModelConfig]] = {
    "llama": _read_llama_like,
    "mistral": _read_llama_like,
    "qwen2": _read_llama_like,
    "gpt2": _read_gpt2,
    "bert": _read_bert,
    "roberta": _read_roberta,
}
_WRITERS: dict[str, Callable[[ModelConfig], dict[str, Any]]] = {
    "llama": _write_llama_like,
    "mistral": _write_llama_like,
    "qwen2": _write_llama_like,
    "gpt2": _write_gpt2,
    "bert": _write_bert,
    "roberta": _write_bert,
    **SEQ2SEQ_WRITERS,
}
for _name, _read in SEQ2SEQ_READERS.items():
    _READERS[_name] = lambda hf, _read=_read: ModelConfig(**_read(hf))


def rope_attention_factor(config: ModelConfig) -> float:
    """YaRN scales cos/sin by this factor (1.0 for every other RoPE type)."""
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type") != "yarn":
        return 1.0
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    factor = scaling["factor"]
    mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")

    def get_mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if mscale and mscale_all_dim:
        return get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
    return get_mscale(factor)
