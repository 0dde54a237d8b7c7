"""One name map per family: Hugging Face tensor names and layouts <-> zenlm's.

A `Rule` maps one Hugging Face tensor to one or more zenlm tensors (GPT-2 fuses
q, k and v into `c_attn`, and stores Linear weights transposed as Conv1D), with
the functions that convert in each direction. Loading and saving both walk the
same rules, so a family's layout is written down exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Split = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
Join = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]


def _same(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (t,)


def _unwrap(ts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return ts[0]


@dataclass(frozen=True)
class Rule:
    """`hf` <-> `ours` (patterns with `{i}` for the layer index)."""

    hf: str
    ours: tuple[str, ...]
    split: Split = _same  # HF tensor -> our tensors
    join: Join = _unwrap  # our tensors -> HF tensor
    # the rule holds only if when(config): loading ignores the name otherwise, saving skips it
    # (a tied tensor has several names; transformers keeps one)
    when: Callable[[Any], bool] | None = None
    regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = re.escape(self.hf).replace(r"\{i\}", r"(?P<i>\d+)")
        object.__setattr__(self, "regex", re.compile(pattern + "$"))


def _one(hf: str, ours: str) -> Rule:
    return Rule(hf, (ours,))


def _transposed(hf: str, ours: str) -> Rule:
    """GPT-2's Conv1D keeps weights as (in, out); nn.Linear as (out, in)."""
    return Rule(hf, (ours,), split=lambda t: (t.t().contiguous(),),
                join=lambda ts: ts[0].t().contiguous())


def _fused_qkv(hf: str, ours_prefix: str, suffix: str, transpose: bool) -> Rule:
    """GPT-2's c_attn: q, k, v concatenated along the output axis."""
    names = tuple(f"{ours_prefix}.{p}.{suffix}" for p in ("q", "k", "v"))
    if transpose:  # weight (in, 3*out)
        return Rule(hf, names,
                    split=lambda t: tuple(x.t().contiguous() for x in t.chunk(3, dim=1)),
                    join=lambda ts: torch.cat([x.t() for x in ts], dim=1).contiguous())
    return Rule(hf, names, split=lambda t: t.chunk(3, dim=0),  # bias (3*out,)
                join=lambda ts: torch.cat(ts, dim=0))


def _llama_rules() -> list[Rule]:
    layer, block = "model.layers.{i}", "blocks.{i}"
    rules = [
        _one("model.embed_tokens.weight", "embed.weight"),
        _one("model.norm.weight", "final_norm.weight"),
        _one("lm_head.weight", "lm_head.weight"),
        _one(f"{layer}.input_layernorm.weight", f"{block}.attn_norm.weight"),
        _one(f"{layer}.post_attention_layernorm.weight", f"{block}.mlp_norm.weight"),
    ]
    for ours in ("q", "k", "v", "o"):
        for kind in ("weight", "bias"):
            hf = f"{layer}.self_attn.{ours}_proj.{kind}"
            rules.append(_one(hf, f"{block}.attn.{ours}.{kind}"))
    for ours in ("gate", "up", "down"):
        for kind in ("weight", "bias"):
            rules.append(_one(f"{layer}.mlp.{ours}_proj.{kind}", f"{block}.mlp.{ours}.{kind}"))
    return rules


def _gpt2_rules() -> list[Rule]:
    layer, block = "transformer.h.{i}", "blocks.{i}"
    rules = [
        _one("transformer.wte.weight", "embed.weight"),
        _one("transformer.wpe.weight", "positions.weight"),
        _one("lm_head.weight", "lm_head.weight"),
        _fused_qkv(f"{layer}.attn.c_attn.weight", f"{block}.attn", "weight", transpose=True),
        _fused_qkv(f"{layer}.attn.c_attn.bias", f"{block}.attn", "bias", transpose=False),
        _transposed(f"{layer}.attn.c_proj.weight", f"{block}.attn.o.weight"),
        _one(f"{layer}.attn.c_proj.bias", f"{block}.attn.o.bias"),
        _transposed(f"{layer}.mlp.c_fc.weight", f"{block}.mlp.up.weight"),
        _one(f"{layer}.mlp.c_fc.bias", f"{block}.mlp.up.bias"),
        _transposed(f"{layer}.mlp.c_proj.weight", f"{block}.mlp.down.weight"),
        _one(f"{layer}.mlp.c_proj.bias", f"{block}.mlp.down.bias"),
    ]
    for kind in ("weight", "bias"):
        rules += [
            _one(f"transformer.ln_f.{kind}", f"final_norm.{kind}"),
            _one(f"{layer}.ln_1.{kind}", f"{block}.attn_norm.{kind}"),
            _one(f"{layer}.ln_2.{kind}", f"{block}.mlp_norm.{kind}"),
        ]
    return rules


def _bert_rules() -> list[Rule]:
    """BERT and RoBERTa share tensor names (post-norm: each LayerNorm follows its sum)."""
    layer, block = "encoder.layer.{i}", "blocks.{i}"
    rules = [
        _one("embeddings.word_embeddings.weight", "embed.weight"),
        _one("embeddings.position_embeddings.weight", "positions.weight"),
        _one("embeddings.token_type_embeddings.weight", "token_types.weight"),
    ]
    for kind in ("weight", "bias"):
        rules += [
            _one(f"embeddings.LayerNorm.{kind}", f"embed_norm.{kind}"),
            _one(f"{layer}.attention.self.query.{kind}", f"{block}.attn.q.{kind}"),
            _one(f"{layer}.attention.self.key.{kind}", f"{block}.attn.k.{kind}"),
            _one(f"{layer}.attention.self.value.{kind}", f"{block}.attn.v.{kind}"),
            _one(f"{layer}.attention.output.dense.{kind}", f"{block}.attn.o.{kind}"),
            _one(f"{layer}.attention.output.LayerNorm.{kind}", f"{block}.attn_norm.{kind}"),
            _one(f"{layer}.intermediate.dense.{kind}", f"{block}.mlp.up.{kind}"),
            _one(f"{layer}.output.dense.{kind}", f"{block}.mlp.down.{kind}"),
            _one(f"{layer}.output.LayerNorm.{kind}", f"{block}.mlp_norm.{kind}"),
        ]
    return rules


def _mlm_head_rules(dense: str, norm: str, decoder: str, bias: str) -> list[Rule]:
    """A masked-LM head: dense -> act -> norm -> decoder (tied to the embedding) + bias."""
    rules = [_one(bias, "bias")]
    for kind in ("weight", "bias"):
        rules += [_one(f"{dense}.{kind}", f"dense.{kind}"), _one(f"{norm}.{kind}", f"norm.{kind}")]
    return rules + [_one(f"{decoder}.weight", "decoder.weight")]


def _shared(config: Any) -> bool:
    return config.share_embeddings


def _per_stack(config: Any) -> bool:
    # transformers 5 ties the stacks' embeddings to `shared` only along with the head
    return not (config.share_embeddings and config.tie_embeddings)


def _untied(config: Any) -> bool:
    return not config.tie_embeddings


def _bart_embedding_rules(prefix: str) -> list[Rule]:
    """Token embeddings and head of BART and Marian (`prefix`: "model.").

    transformers saves a shared, tied embedding once, as `shared`; older checkpoints
    also hold the stacks' and the head's copies of it, ignored then.
    """
    return [
        Rule(f"{prefix}shared.weight", ("encoder.embed.weight",), when=_shared),
        Rule(f"{prefix}encoder.embed_tokens.weight", ("encoder.embed.weight",), when=_per_stack),
        Rule(f"{prefix}decoder.embed_tokens.weight", ("decoder.embed.weight",), when=_per_stack),
        Rule("lm_head.weight", ("decoder.lm_head.weight",), when=_untied),
        # final_logits_bias is a (1, V) buffer added to the logits
        Rule("final_logits_bias", ("decoder.lm_head.bias",), split=lambda t: (t.reshape(-1),),
             join=lambda ts: ts[0][None]),
    ]


def _bart_layer_rules(prefix: str) -> list[Rule]:
    """Post-norm blocks of BART and Marian: each LayerNorm follows its residual sum."""
    rules = []
    for stack in ("encoder", "decoder"):
        layer, block = f"{prefix}{stack}.layers.{{i}}", f"{stack}.blocks.{{i}}"
        parts = [("self_attn_layer_norm", "attn_norm"), ("fc1", "mlp.up"), ("fc2", "mlp.down"),
                 ("final_layer_norm", "mlp_norm")]
        parts += [(f"self_attn.{p}_proj", f"attn.{o}") for p, o in _ATTN_PROJECTIONS]
        if stack == "decoder":
            parts.append(("encoder_attn_layer_norm", "cross_norm"))
            parts += [(f"encoder_attn.{p}_proj", f"cross_attn.{o}") for p, o in _ATTN_PROJECTIONS]
        rules += [_one(f"{layer}.{hf}.{kind}", f"{block}.{ours}.{kind}")
                  for hf, ours in parts for kind in ("weight", "bias")]
    return rules


_ATTN_PROJECTIONS = (("q", "q"), ("k", "k"), ("v", "v"), ("out", "o"))


@dataclass(frozen=True)
class NameMap:
    """The rules of one family, and HF names that are safe to ignore (stale buffers).

    `prefixes` are stripped before matching: a task checkpoint nests the base model
    (BertForMaskedLM stores `bert.encoder...`, BertModel stores `encoder...`).
    """

    rules: tuple[Rule, ...]
    ignored: re.Pattern
    prefixes: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()  # our tensors a checkpoint may leave out: zeros then

    def find(self, hf_name: str) -> tuple[Rule, str | None] | None:
        """The rule matching `hf_name` and its layer index, or None."""
        for prefix in self.prefixes:
            hf_name = hf_name.removeprefix(prefix)
        for rule in self.rules:
            match = rule.regex.match(hf_name)
            if match:
                return rule, match.groupdict().get("i")
        return None


_LLAMA = NameMap(tuple(_llama_rules()), re.compile(r".*rotary_emb\.inv_freq$"))
_GPT2 = NameMap(tuple(_gpt2_rules()), re.compile(r".*\.attn\.(masked_)?bias$"))

# The NSP pooler and pretraining heads are not part of the encoder: zenlm's task heads
# are separate modules (the masked-LM head loads through MLM_HEAD_MAPS below).
_BERT = NameMap(
    tuple(_bert_rules()),
    re.compile(r"(bert\.|roberta\.)?(embeddings\.position_ids|pooler\..*)$|(cls|lm_head)\..*"),
    prefixes=("bert.", "roberta."),
)

NAME_MAPS: dict[str, NameMap] = {"llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "gpt2": _GPT2}
NAME_MAPS.update({"bert": _BERT, "roberta": _BERT})

# Marian's sinusoidal tables are recomputed, not weights (older checkpoints store them).
NAME_MAPS["marian"] = NameMap(
    tuple(_bart_embedding_rules("model.") + _bart_layer_rules("model.")),
    re.compile(r"model\.(en|de)coder\.embed_positions\.weight$"),
    optional=("decoder.lm_head.bias",),
)


def _bart_rules() -> list[Rule]:
    rules = _bart_embedding_rules("model.") + _bart_layer_rules("model.")
    # BART always has `shared`, unused when untied; write one so transformers misses
    # nothing (loading never reaches this rule: the first rule matching a name decides)
    rules.append(Rule("model.shared.weight", ("encoder.embed.weight",),
                      when=lambda c: not _shared(c)))
    for stack in ("encoder", "decoder"):
        rules.append(_one(f"model.{stack}.embed_positions.weight", f"{stack}.positions.weight"))
        rules += [_one(f"model.{stack}.layernorm_embedding.{kind}", f"{stack}.embed_norm.{kind}")
                  for kind in ("weight", "bias")]
    return rules


NAME_MAPS["bart"] = NameMap(tuple(_bart_rules()), re.compile(r"model\.(en|de)coder\.version$"),
                            optional=("decoder.lm_head.bias",))

# The decoder's bias is the same tensor as the head's `bias` (HF ties them); its
# weight is the word embedding, saved only by some checkpoints.
MLM_HEAD_MAPS: dict[str, NameMap] = {
    "bert": NameMap(
        tuple(_mlm_head_rules("cls.predictions.transform.dense",
                              "cls.predictions.transform.LayerNorm",
                              "cls.predictions.decoder", "cls.predictions.bias")),
        re.compile(r"cls\.predictions\.decoder\.bias$|cls\.seq_relationship\..*"),
    ),
    "roberta": NameMap(
        tuple(_mlm_head_rules("lm_head.dense", "lm_head.layer_norm", "lm_head.decoder",
                              "lm_head.bias")),
        re.compile(r"lm_head\.decoder\.bias$"),
    ),
}
