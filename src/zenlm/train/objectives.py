"""Training objectives: causal LM loss, and the data transforms of masked LM and span corruption.

The masking functions work on plain tensors (ids, special-token ids, vocabulary size),
so they do not depend on any model class: an encoder's Trainer objective is
`masked_lm_loss(model, *mask_tokens(...))`. Which objective a run trains, and the module
it trains (a decoder, or an encoder under a masked-LM head), are decided here too, so
that pretraining and loading a run back (train/export.py) share one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zenlm.config import ModelConfig
from zenlm.models import build_model
from zenlm.models.heads import MaskedLM, MaskedLMHead

IGNORE = -100  # label of positions that do not count in the loss (F.cross_entropy default)


OBJECTIVES = ("auto", "causal", "mlm", "span")
#: The architecture each objective trains (and the objective "auto" picks for it).
ARCH_OF = {"causal": "decoder", "mlm": "encoder", "span": "encoder-decoder"}


def resolve_objective(name: str, model_config: ModelConfig) -> str:
    """`train.objective` made concrete: "auto" picks the objective of the model's arch.

    mlm for encoders, causal for decoders, span corruption for encoder-decoders.

    Raises:
        ValueError: an unknown objective, or one the architecture cannot train with.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"train.objective must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    if name == "auto":
        return {arch: objective for objective, arch in ARCH_OF.items()}[model_config.arch]
    wanted = ARCH_OF[name]
    if model_config.arch != wanted:
        raise ValueError(f"train.objective={name} needs model.arch={wanted}, "
                         f"got {model_config.arch}")
    return name


def build_for_objective(model_config: ModelConfig, objective: str,
                        model: torch.nn.Module | None = None,
                        head: MaskedLMHead | None = None) -> torch.nn.Module:
    """The trained module: the model itself, or encoder + masked-LM head for "mlm".

    `model` is the network to train (default: a new one of `model_config`); `head` the
    masked-LM head (default: a new one).
    """
    model = model if model is not None else build_model(model_config)
    return MaskedLM(model, head) if objective == "mlm" else model  # type: ignore[arg-type]


def causal_lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a batch of blocks.

    Args:
        model: Maps ids (B, T) to logits (B, T, V).
        batch: Token ids (B, T + 1): inputs are [:, :-1], targets [:, 1:].

    Returns:
        Scalar loss (float32).
    """
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def seq2seq_cross_entropy(
    model: nn.Module, src_ids: torch.Tensor, src_mask: torch.Tensor | None,
    labels: torch.Tensor, *, start_id: int, label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Teacher-forced, label-smoothed cross-entropy of an encoder-decoder.

    Args:
        model: A Seq2SeqLM: (src_ids, decoder_ids, src_mask=) -> logits (B, T, V).
        src_ids: Source ids (B, S).
        src_mask: (B, S) 1 at real source tokens; None if unpadded.
        labels: Target ids (B, T), IGNORE at padding; the decoder reads them shifted right
            after `start_id` (its right padding needs no mask: under the causal mask no
            real token sees a later one, and padded positions carry no label).
        start_id: The decoder's start token.
        label_smoothing: Weight of the uniform distribution in the target.
    """
    decoder_ids = decoder_inputs(labels, start_id)
    logits = model(src_ids, decoder_ids, src_mask=src_mask)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                           ignore_index=IGNORE, label_smoothing=label_smoothing)


def decoder_inputs(labels: torch.Tensor, start_id: int) -> torch.Tensor:
    """Teacher forcing's decoder inputs (B, T): the start token, then labels (B, T) shifted.

    Inputs after a row's end (its padding) are never seen by its real tokens under the
    causal mask; they are filled with the start id.
    """
    shifted = torch.full_like(labels, start_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE, start_id)


class SpanCorruptionObjective:
    """Trainer objective for encoder-decoders: T5's span corruption of each block.

    Each block loses ~15% of its tokens in spans of mean length 3, each span replaced
    by a sentinel in the source; the target lists each sentinel and the span it hid.
    Like `MaskedLMObjective`, training draws from the Trainer's reseeded global RNG and
    evaluation from the block's content.

    Args:
        sentinel_ids: Ids of the sentinel tokens, in order (T5's <extra_id_0>, ...).
        eos_id: Ends every source and target.
        pad_id: Pads sources (masked) and is the decoder's start token.
        noise_density: Fraction of tokens hidden.
        mean_span_length: Mean length of a hidden span.
    """

    def __init__(self, *, sentinel_ids: Sequence[int], eos_id: int, pad_id: int,
                 noise_density: float = 0.15, mean_span_length: float = 3.0) -> None:
        self.sentinel_ids, self.eos_id, self.pad_id = list(sentinel_ids), eos_id, pad_id
        self.noise_density, self.mean_span_length = noise_density, mean_span_length

    def corrupt(self, ids: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(src_ids, src_mask, labels) of blocks `ids` (B, T), padded per batch."""
        pairs = [span_corruption(row, sentinel_ids=self.sentinel_ids, eos_id=self.eos_id,
                                 noise_density=self.noise_density,
                                 mean_span_length=self.mean_span_length, generator=generator)
                 for row in ids.tolist()]
        S, T = max(len(s) for s, _ in pairs), max(len(t) for _, t in pairs)
        src = torch.full((len(pairs), S), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(pairs), S), dtype=torch.long)
        labels = torch.full((len(pairs), T), IGNORE, dtype=torch.long)
        for row, (source, target) in enumerate(pairs):
            src[row, : len(source)] = torch.tensor(source)
            mask[row, : len(source)] = 1
            labels[row, : len(target)] = torch.tensor(target)
        return src, mask, labels

    def __call__(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Span-corruption loss of blocks (B, T + 1) (the first T tokens of each)."""
        ids = batch[:, :-1].cpu()
        generator = None if model.training else content_generator(ids)
        src, mask, labels = (t.to(batch.device) for t in self.corrupt(ids, generator))
        return seq2seq_cross_entropy(model, src, mask, labels, start_id=self.pad_id)


def masked_lm_loss(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the masked positions only (labels == IGNORE elsewhere).

    A bare `MaskedLM` runs its head on the masked positions alone (~15% of them): the
    vocabulary projection of a small encoder costs as much as its blocks, and the other
    positions' logits would be thrown away. A wrapped model (DDP, FSDP, compiled) is called
    whole, as its wrapper needs.

    Args:
        model: Maps ids (B, T) to logits (B, T, V).
        inputs: Corrupted ids (B, T) from `mask_tokens`.
        labels: Original ids at masked positions, IGNORE elsewhere (B, T).
    """
    if isinstance(model, MaskedLM):
        chosen = labels != IGNORE  # (B, T)
        hidden = model.encoder(inputs)  # (B, T, d)
        logits = model.head(hidden[chosen])  # (N, V), N masked positions
        return F.cross_entropy(logits.float(), labels[chosen])
    logits = model(inputs)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)


class MaskedLMObjective:
    """Trainer objective for encoders: mask a block BERT's way, score the masked tokens.

    Training masks come from torch's global RNG, which the Trainer reseeds from
    (seed, step, rank) at every step, so a resumed run masks exactly as the original.
    In eval mode the mask is a function of the block's content, so every evaluation
    scores the same positions.

    Args:
        mask_id: Id of the [MASK] token.
        vocab_size: Random replacements are drawn from [0, vocab_size).
        special_ids: Ids never masked nor drawn (EOS between documents, PAD...).
        mask_prob: Fraction of tokens chosen.
    """

    def __init__(self, *, mask_id: int, vocab_size: int, special_ids: Sequence[int],
                 mask_prob: float = 0.15) -> None:
        self.mask_id, self.vocab_size = mask_id, vocab_size
        self.special_ids, self.mask_prob = sorted({*special_ids, mask_id}), mask_prob

    def mask(self, ids: torch.Tensor, generator: torch.Generator | None = None) -> tuple[
        torch.Tensor, torch.Tensor
    ]:
        """(inputs, labels) of `ids` (B, T), as `mask_tokens` makes them."""
        return mask_tokens(ids.cpu(), mask_id=self.mask_id, vocab_size=self.vocab_size,
                           special_ids=self.special_ids, mask_prob=self.mask_prob,
                           generator=generator)

    def __call__(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Masked-LM loss of blocks (B, T + 1); the encoder reads the first T tokens."""
        ids = batch[:, :-1]
        generator = None if model.training else content_generator(ids)
        inputs, labels = self.mask(ids, generator)
        return masked_lm_loss(model, inputs.to(batch.device), labels.to(batch.device))


def content_generator(ids: torch.Tensor) -> torch.Generator:
    """A generator seeded by the content of `ids` (same blocks, same draws)."""
    seed = int((ids.long().cpu() * torch.arange(1, ids.numel() + 1).view_as(ids)).sum())
    return torch.Generator().manual_seed(seed % (2**63))


@torch.no_grad()
def masked_lm_accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of masked positions (labels != IGNORE) whose argmax logit is the label."""
    chosen = labels != IGNORE
    predicted = model(inputs).argmax(-1)
    return float((predicted[chosen] == labels[chosen]).float().mean())


def mask_tokens(
    ids: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    mask_prob: float = 0.15,
    word_starts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: choose `mask_prob` of the tokens; of those 80% [MASK], 10% random, 10% kept.

    Args:
        ids: Token ids (B, T).
        mask_id: Id of the [MASK] token.
        vocab_size: Random replacements are drawn from [0, vocab_size), specials excluded.
        special_ids: Ids never chosen (CLS, SEP, PAD...).
        mask_prob: Fraction of (non-special) tokens chosen.
        word_starts: Bool (B, T), True where a word starts, for whole-word masking:
            words are chosen with probability `mask_prob` and all their tokens masked.
        generator: Random source (for reproducible masks).

    Returns:
        (inputs, labels): corrupted ids (B, T) and labels (B, T), the original id at
        chosen positions and IGNORE elsewhere.
    """
    special = torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype))
    chosen = _choose(ids.shape, mask_prob, word_starts, generator) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    roll = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    random_ids = _random_non_special(ids.shape, vocab_size, special_ids, generator)
    return torch.where(to_random, random_ids, inputs), labels


def _choose(shape: torch.Size, prob: float, word_starts: torch.Tensor | None,
            generator: torch.Generator | None) -> torch.Tensor:
    if word_starts is None:
        return torch.rand(shape, generator=generator) < prob
    # Number the words of each row, draw once per word, spread the draw over its tokens.
    word_index = word_starts.long().cumsum(-1) - 1  # (B, T); -1 before the first word
    draws = torch.rand(shape, generator=generator) < prob  # one per possible word slot
    return torch.gather(draws, 1, word_index.clamp(min=0)) & (word_index >= 0)


def _random_non_special(shape: torch.Size, vocab_size: int, special_ids: Sequence[int],
                        generator: torch.Generator | None) -> torch.Tensor:
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[[i for i in special_ids if 0 <= i < vocab_size]] = False
    pool = allowed.nonzero().squeeze(1)
    return pool[torch.randint(len(pool), shape, generator=generator)]


def span_corruption(
    ids: Sequence[int],
    *,
    sentinel_ids: Sequence[int],
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[list[int], list[int]]:
    """T5's span corruption of one sequence.

    About `noise_density` of the tokens, in spans of mean length `mean_span_length`,
    are cut out of the input and each span replaced by one sentinel; the target lists
    each sentinel followed by the span it replaced.

    Example: ids "a b c d e f", spans (b c) and (e) -> input "a <X> d <Y> f", target
    "<X> b c <Y> e".

    Returns:
        (input_ids, target_ids), each ending in `eos_id` when it is given.

    Raises:
        ValueError: more spans than sentinels.
    """
    length = len(ids)
    noise = _span_mask(length, noise_density, mean_span_length, generator)
    inputs, targets, sentinel = [], [], 0
    for index, token in enumerate(ids):
        if noise[index]:
            if index == 0 or not noise[index - 1]:
                if sentinel >= len(sentinel_ids):
                    raise ValueError(f"{sentinel + 1} spans need more than the "
                                     f"{len(sentinel_ids)} sentinel ids given")
                inputs.append(sentinel_ids[sentinel])
                targets.append(sentinel_ids[sentinel])
                sentinel += 1
            targets.append(token)
        else:
            inputs.append(token)
    tail = [eos_id] if eos_id is not None else []
    return [*inputs, *tail], [*targets, *tail]


def _span_mask(length: int, density: float, mean_span: float,
               generator: torch.Generator | None) -> list[bool]:
    """Noise mask of `length` with round(length*density) noise tokens in alternating spans."""
    n_noise = min(max(round(length * density), 1 if length > 1 else 0), length - 1)
    if n_noise == 0:
        return [False] * length
    n_spans = max(1, min(round(n_noise / mean_span), n_noise, length - n_noise))
    noise_lengths = _random_partition(n_noise, n_spans, generator)
    clean_lengths = _random_partition(length - n_noise, n_spans, generator)
    mask: list[bool] = []
    for clean, noisy in zip(clean_lengths, noise_lengths, strict=True):
        mask += [False] * clean + [True] * noisy  # every sequence starts with clean text
    return mask


def _random_partition(total: int, parts: int, generator: torch.Generator | None) -> list[int]:
    """`total` split into `parts` positive integers, uniformly over compositions."""
    cuts = torch.randperm(total - 1, generator=generator)[: parts - 1].sort().values + 1
    edges = [0, *cuts.tolist(), total]
    return [b - a for a, b in zip(edges, edges[1:], strict=False)]
