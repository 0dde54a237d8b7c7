"""Instruction tuning of decoders: chat-template formatting, assistant-only loss, packing.

Labels are the token ids of assistant turns (their content and end-of-turn tokens) and
IGNORE everywhere else, so the system prompt, the user's words and the template's role
headers carry no loss. Packing concatenates several conversations into one row; a
block-diagonal causal mask and per-conversation position ids keep each conversation
from attending to (or being positioned after) the others, so a packed row gives each
conversation the logits it would get alone. `SPEC` is the sft task.

Under differential privacy (`--dp-epsilon`) the privacy unit is one conversation: rows are
not packed (one conversation per row), a conversation longer than `--max-length` is
truncated as one unit (never split into rows), and the loss is each conversation's mean
over its own assistant tokens, one loss per conversation (`sft_loss_per_example`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zenlm.data import tasks as readers
from zenlm.models.decoder import DecoderLM
from zenlm.tasks.batching import TensorBatch
from zenlm.tasks.collate import pad_labels
from zenlm.tasks.spec import Objective, TaskInfo, TaskSpec, text_input
from zenlm.tokenizer import Message, Tokenizer

IGNORE = -100
PREDICT_BATCH = 16  # conversations that predict generates together
log = logging.getLogger(__name__)


@dataclass
class SFTFeature:
    """Token ids of one conversation, labels (= ids on assistant tokens, IGNORE elsewhere)."""

    ids: list[int]
    labels: list[int]


def assistant_char_spans(tokenizer: Tokenizer, messages: Sequence[Message]) -> tuple[str, list]:
    """The rendered conversation and the [start, end) characters of each assistant turn.

    A turn's span runs from the end of the generation prompt before it to the end of
    the conversation rendered up to and including it.

    Raises:
        ValueError: the template does not render conversations as prefixes of each other.
    """
    full = tokenizer.apply_chat_template(messages, add_generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = (tokenizer.apply_chat_template(messages[:index], add_generation_prompt=True)
                  if index else "")
        upto = tokenizer.apply_chat_template(messages[: index + 1], add_generation_prompt=False)
        if not (full.startswith(before) and full.startswith(upto)):
            raise ValueError("the chat template does not render a conversation's turns as "
                             "prefixes of the whole; cannot find the assistant tokens")
        spans.append((len(before), len(upto)))
    return full, spans


def encode_conversation(
    tokenizer: Tokenizer, messages: Sequence[Message], *, max_length: int = 512
) -> SFTFeature:
    """Tokenize one conversation with its template; label only assistant tokens."""
    text, spans = assistant_char_spans(tokenizer, messages)
    encoding = tokenizer.backend.encode(text, add_special_tokens=False)
    labels = []
    for token, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
        inside = any(a <= start < b for a, b in spans) and end > start
        labels.append(token if inside else IGNORE)
    return SFTFeature(list(encoding.ids[:max_length]), labels[:max_length])


def pack(features: Sequence[SFTFeature], max_length: int) -> list[TensorBatch]:
    """Greedy packing in order: conversations share a row while they fit.

    Returns:
        One TensorBatch per row with 1-D ids, labels and segments (1, 2, ... per
        conversation; a conversation's first token never carries a label, so no target
        crosses from one conversation into the next).
    """
    rows, current = [], []
    for feature in features:
        if current and sum(len(f.ids) for f in current) + len(feature.ids) > max_length:
            rows.append(_row(current))
            current = []
        current.append(feature)
    if current:
        rows.append(_row(current))
    return rows


def _row(features: list[SFTFeature]) -> TensorBatch:
    ids, labels, segments = [], [], []
    for number, feature in enumerate(features, 1):
        ids += feature.ids
        labels += [IGNORE, *feature.labels[1:]]
        segments += [number] * len(feature.ids)
    return TensorBatch(ids=torch.tensor(ids), labels=torch.tensor(labels),
                       segments=torch.tensor(segments))


def collate_sft(rows: list[TensorBatch | SFTFeature], pad_id: int) -> TensorBatch:
    """TensorBatch(ids, labels, segments (B, T)); segment 0 marks padding."""
    rows = [_row([r]) if isinstance(r, SFTFeature) else r for r in rows]
    length = max(len(r.ids) for r in rows)
    return TensorBatch(
        ids=pad_labels([r.ids.tolist() for r in rows], length, pad_id),
        labels=pad_labels([r.labels.tolist() for r in rows], length, IGNORE),
        segments=pad_labels([r.segments.tolist() for r in rows], length, 0),
    )


def segment_positions(segments: torch.Tensor) -> torch.Tensor:
    """(B, T) position of each token within its segment (restarting at 0)."""
    T = segments.shape[1]
    slots = torch.arange(T, device=segments.device).expand_as(segments)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    first = torch.where(starts, slots, torch.zeros_like(slots)).cummax(dim=1).values
    return slots - first


def segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """Boolean (B, 1, T, T): causal within a segment, nothing across segments or padding."""
    T = segments.shape[1]
    same = segments[:, :, None] == segments[:, None, :]  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    mask = (same & causal & (segments[:, None, :] != 0))[:, None]
    return mask | ~mask.any(dim=-1, keepdim=True)  # padding rows: finite, never read


def packed_logits(model: DecoderLM, ids: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) of packed rows: every segment as if it were alone.

    DecoderLM.forward takes a padding mask only; this runs the same parts with a
    block-diagonal mask and per-segment positions.
    """
    positions = segment_positions(segments)
    x = model.embed_inputs(ids, positions)  # (B, T, d)
    rope = model.rope(positions, x.dtype) if model.rope is not None else None
    mask = segment_mask(segments)
    for block in model.blocks:
        x = block(x, mask=mask, rope=rope)
    return model.lm_head(model.head_input(x))


def sft_loss(model: DecoderLM, batch: TensorBatch) -> torch.Tensor:
    """Next-token cross-entropy on assistant tokens only (labels != IGNORE)."""
    logits = packed_logits(model, batch.ids, batch.segments)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch.labels[:, 1:].flatten(),
                           ignore_index=IGNORE)


def sft_loss_per_example(model: DecoderLM, batch: TensorBatch) -> torch.Tensor:
    """Each row's mean assistant-token loss (B,) (the DP-SGD objective).

    Each row must be one conversation, so that a conversation's gradient depends on it
    alone (`sft_loss` divides by the batch's assistant-token count, which couples them;
    a packed row would couple the conversations sharing it).

    Raises:
        ValueError: a row holds several conversations (packed rows).
    """
    if batch.segments.numel() and int(batch.segments.max()) > 1:
        raise ValueError("a training row holds several packed conversations; under "
                         "--dp-epsilon each row must be one conversation (the privacy unit)")
    logits = packed_logits(model, batch.ids, batch.segments)  # (B, T, V)
    targets = batch.labels[:, 1:]  # (B, T-1)
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets,
                             ignore_index=IGNORE, reduction="none")  # (B, T-1)
    counts = (targets != IGNORE).sum(1).clamp(min=1)  # (B,): a row without any: loss 0
    return losses.sum(1) / counts


@torch.inference_mode()
def sft_metrics(model: DecoderLM, features: Sequence[SFTFeature], pad_id: int,
                batch_size: int = 8) -> dict[str, Any]:
    """Loss (mean over assistant tokens), perplexity, token and conversation counts."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(features), batch_size):
        batch = collate_sft(list(features[start:start + batch_size]), pad_id)
        n = int((batch.labels[:, 1:] != IGNORE).sum())
        if n:
            total += float(sft_loss(model, batch)) * n
            count += n
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count,
            "n": len(features)}


class SFTTask(TaskSpec[readers.ChatExample, SFTFeature]):
    """Instruction tuning: chat JSONL in, the decoder itself, assistant-token loss first."""

    name = "sft"
    headline = "loss"
    higher_is_better = False

    def read(self, path: str | Path, labels: Sequence[str] | None = None, *,
             labelled: bool = True) -> list[readers.ChatExample]:
        """Conversations of a chat JSONL file (`labels` does not apply)."""
        return readers.read_chat(path)

    def text_of(self, example: readers.ChatExample) -> str:
        """Every message's content."""
        return " ".join(m["content"] for m in example.messages)

    def encode(self, tokenizer: Any, examples: list[readers.ChatExample], info: TaskInfo, *,
               labelled: bool = True) -> list[SFTFeature]:
        """Templated conversations cut to `info.max_length`, assistant tokens labelled."""
        return [encode_conversation(tokenizer, e.messages, max_length=info.max_length)
                for e in examples]

    def for_training(self, features: list[SFTFeature], info: TaskInfo, *,
                     pack: bool, private: bool = False) -> list:
        """With `pack`, conversations packed into rows of `info.max_length` tokens.

        A `private` run never packs: one conversation per row, the privacy unit (each
        was already cut to `info.max_length` as one unit by `encode`).
        """
        if private:
            if pack:
                log.warning("sft under --dp-epsilon: conversations are not packed (one "
                            "conversation per row, the privacy unit; --pack is ignored)")
            return features
        return pack_rows(features, info.max_length) if pack else features

    def collate(self, features: list, pad_id: int) -> TensorBatch:
        """See `collate_sft`."""
        return collate_sft(features, pad_id)

    def objective(self, class_weights: torch.Tensor | None = None, *,
                  info: TaskInfo | None = None) -> Objective:
        """Next-token cross-entropy on assistant tokens."""
        return sft_loss

    def private_objective(self, info: TaskInfo | None = None) -> Objective:
        """Each conversation's mean assistant-token loss (B,)."""
        return sft_loss_per_example

    def build_model(self, info: TaskInfo, backbone: nn.Module) -> nn.Module:
        """The decoder itself: its LM head is the task head."""
        return backbone

    def evaluate(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                 examples: list[readers.ChatExample], pad_id: int) -> dict[str, Any]:
        """Assistant-token loss and perplexity."""
        return sft_metrics(model, self.encode(tokenizer, examples, info), pad_id)

    def example_from(self, value: Any) -> readers.ChatExample:
        """A user message (str) or a conversation (a list of {"role", "content"})."""
        if isinstance(value, str):
            value = [{"role": "user", "content": text_input(value, self.name)}]
        if not (isinstance(value, list) and value
                and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value)):
            raise ValueError("task 'sft' predicts on a user message (str) or a list of "
                             f"{{'role', 'content'}} messages, got {value!r}")
        return readers.ChatExample(messages=list(value), line=0)

    def predict(self, model: nn.Module, tokenizer: Any, info: TaskInfo, path: str | Path,
                pad_id: int, *, max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
        """A reply per conversation of `path`, cut before its last assistant turn."""
        yield from self.predict_examples(model, tokenizer, info, self.read(path), pad_id,
                                         max_new_tokens=max_new_tokens)

    def predict_examples(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                         examples: list[readers.ChatExample], pad_id: int, *,
                         max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
        """{"messages", "reply"} per conversation, generated greedily in batches.

        The prompt is the conversation up to its last assistant turn (the whole
        conversation when it has none). Decoding one token for a batch of rows costs
        about what it costs for one (the weights are read once), hence the batches.
        """
        from zenlm.api import LM  # the chat front end (template, stops) over the one decoder

        lm = LM(model, tokenizer)
        prompts = [_prompt_of(example.messages) for example in examples]
        for first in range(0, len(prompts), PREDICT_BATCH):
            chunk = prompts[first:first + PREDICT_BATCH]
            with torch.inference_mode():
                replies = lm.complete([lm.encode_chat(p) for p in chunk],
                                      max_new_tokens=max_new_tokens)
            for prompt, reply in zip(chunk, replies, strict=True):
                yield {"messages": prompt, "reply": reply.text}


def _prompt_of(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation up to its last assistant turn (all of it when it has none)."""
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    return messages[:turns[-1]] if turns else messages


pack_rows = pack  # `SFTTask.for_training` has a parameter named `pack`
SPEC = SFTTask()
