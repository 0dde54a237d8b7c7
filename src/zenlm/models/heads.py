"""Task heads over a backbone's hidden states.

A head is a small module; a task model is "backbone + head" (`SequenceClassifier`,
`TokenClassifier`, `SpanQA`), so full fine-tuning, LoRA and freezing all act on the
same backbone modules. Backbones are `EncoderModel` (hidden states from `forward`)
or `DecoderLM` (from `hidden_states`); `backbone_states` hides that difference.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from zenlm.config import ModelConfig
from zenlm.models.decoder import DecoderLM
from zenlm.models.encoder import EncoderModel
from zenlm.nn import make_norm
from zenlm.nn.mlp import _ACTIVATIONS

Pooling = Literal["cls", "mean", "last"]
Backbone = EncoderModel | DecoderLM


def backbone_states(
    backbone: Backbone,
    ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Last hidden states (B, T, d_model) of an encoder or a decoder (right padding)."""
    if backbone.config.arch == "encoder":
        if backbone.config.type_vocab_size < 2:  # RoBERTa has one segment embedding
            token_type_ids = None
        return backbone(ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    return backbone.hidden_states(ids, attention_mask=attention_mask)


def default_pooling(config: ModelConfig) -> Pooling:
    """Mean pooling for encoders, the last real token for decoders (the only one that saw all)."""
    return "mean" if config.arch == "encoder" else "last"


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, how: Pooling) -> torch.Tensor:
    """Sequence vectors (B, d) from hidden states (B, T, d) and mask (B, T).

    "cls": the first token; "mean": the mean over real tokens; "last": the last real token.
    """
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        weights = mask.to(hidden.dtype)[..., None]  # (B, T, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if how == "last":
        slots = torch.arange(mask.shape[1], device=mask.device)
        last = (slots * mask.bool()).argmax(dim=1)  # (B,) index of the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling must be 'cls', 'mean' or 'last', got {how!r}")


class MaskedLMHead(nn.Module):
    """BERT/RoBERTa masked-LM head: dense -> act -> norm -> decoder (tied) + bias.

    Args:
        config: The encoder's configuration.
        embedding: The encoder's token embedding; the decoder shares its weight.
    """

    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.act = _ACTIVATIONS[config.activation]
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps, bias=config.norm_bias)
        self.decoder = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.decoder.weight = embedding.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, d) -> vocabulary logits (B, T, V)."""
        return self.decoder(self.norm(self.act(self.dense(hidden)))) + self.bias


class MaskedLM(nn.Module):
    """Encoder + masked-LM head: token ids (B, T) -> vocabulary logits (B, T, V).

    The model `zenlm pretrain` trains for `train.objective: mlm`; `encoder` alone is
    what exports as a Hugging Face BertModel.

    Args:
        encoder: The bidirectional encoder.
        head: Its head (default: a new `MaskedLMHead` tied to the encoder's embedding).
    """

    def __init__(self, encoder: EncoderModel, head: MaskedLMHead | None = None) -> None:
        super().__init__()
        self.config = encoder.config
        self.encoder = encoder
        self.head = head or MaskedLMHead(encoder.config, encoder.embed)

    @property
    def blocks(self) -> nn.ModuleList:
        """The encoder's blocks (for gradient checkpointing and sharding)."""
        return self.encoder.blocks

    def forward(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V)."""
        return self.head(self.encoder(ids, attention_mask=attention_mask))


def new_head(d_model: int, n_outputs: int) -> nn.Linear:
    """A linear task head initialised as BERT's: normal(0, 0.02) weights, zero bias."""
    head = nn.Linear(d_model, n_outputs)
    nn.init.normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head


class SequenceClassifier(nn.Module):
    """Backbone -> pooled vector -> dropout -> linear: one label per sequence.

    Args:
        backbone: An EncoderModel or DecoderLM.
        n_labels: Number of classes.
        pooling: "cls", "mean" or "last" (default: `default_pooling(backbone.config)`).
        dropout: Dropout on the pooled vector while training.
    """

    def __init__(
        self, backbone: Backbone, n_labels: int, *, pooling: Pooling | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling: Pooling = pooling or default_pooling(backbone.config)
        self.dropout = nn.Dropout(dropout)
        self.head = new_head(backbone.config.d_model, n_labels)

    def forward(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token ids (B, T) -> class logits (B, n_labels)."""
        pooled = self.pooled(ids, attention_mask, token_type_ids)
        return self.head(self.dropout(pooled.to(self.head.weight.dtype)))

    def pooled(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token ids (B, T) -> the vectors (B, d_model) the head reads."""
        hidden = backbone_states(self.backbone, ids, attention_mask, token_type_ids)
        return pool(hidden, attention_mask, self.pooling)

    @torch.no_grad()
    def set_prototypes(self, prototypes: torch.Tensor, temperature: float = 0.05) -> None:
        """Start the head as a zero-shot classifier by cosine to one vector per class.

        Row c of the head becomes prototype c's direction and the bias zero, so the logits
        are `|pooled| cos(pooled, prototype_c)` over `temperature x` the prototypes' mean
        norm: for a text as long in this space as the prototypes, its cosines over
        `temperature` (0.05: CLIP's and Sentence-Transformers' scale, where cosines of
        related texts differ by a few hundredths).

        Args:
            prototypes: (n_labels, d_model), e.g. the pooled vectors of one text per label.
            temperature: Cosine difference that becomes a logit difference of 1.
        """
        if prototypes.shape != self.head.weight.shape:
            raise ValueError(f"prototypes of shape {tuple(prototypes.shape)} for a head of "
                             f"shape {tuple(self.head.weight.shape)}")
        prototypes = prototypes.float()
        scale = 1.0 / (temperature * prototypes.norm(dim=-1).mean().clamp(min=1e-9))
        directions = prototypes / prototypes.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        self.head.weight.copy_(directions * scale)
        self.head.bias.zero_()


class TokenClassifier(nn.Module):
    """Backbone -> dropout -> linear on every token: one label per token (NER).

    Args:
        backbone: An EncoderModel or DecoderLM.
        n_labels: Number of tags.
        dropout: Dropout on the hidden states while training.
    """

    def __init__(self, backbone: Backbone, n_labels: int, *, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = new_head(backbone.config.d_model, n_labels)

    def forward(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token ids (B, T) -> tag logits (B, T, n_labels)."""
        hidden = backbone_states(self.backbone, ids, attention_mask, token_type_ids)
        return self.head(self.dropout(hidden))


class SpanQA(nn.Module):
    """Backbone -> linear to two scores per token: answer start and end (extractive QA).

    Args:
        backbone: An EncoderModel (questions and passages attend to each other).
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = new_head(backbone.config.d_model, 2)

    def forward(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, T) -> (start logits (B, T), end logits (B, T)); padding at -inf."""
        hidden = backbone_states(self.backbone, ids, attention_mask, token_type_ids)
        logits = self.head(hidden)  # (B, T, 2)
        if attention_mask is not None:
            logits = logits.masked_fill(~attention_mask.bool()[..., None], float("-inf"))
        return logits[..., 0], logits[..., 1]
