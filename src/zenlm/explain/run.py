"""One explanation page of one text: attention, surprisal or attributions, as the model allows."""

from __future__ import annotations

from typing import Any

import torch

from zenlm.explain import figures
from zenlm.explain.attention import AttentionMaps, attention_maps
from zenlm.explain.attribution import Attribution, attribute
from zenlm.explain.page import Page
from zenlm.explain.subject import Subject
from zenlm.explain.surprisal import summary, token_scores
from zenlm.explain.tokens import (
    input_embedding,
    special_ids,
    text_pieces,
    token_string,
    token_strings,
)
from zenlm.nn.attention_probs import self_attentions
from zenlm.tasks.spec import pad_id


def explain_text(subject: Subject, text: str, *, target: str | None = None,
                 max_tokens: int = 64, method: str = "ig", n_steps: int = 50,
                 layer: int | None = None) -> tuple[Page, dict[str, Any]]:
    """The page explaining `text`, and its headline numbers.

    Args:
        subject: The model.
        text: The text to explain.
        target: Label to attribute (classify, ner); default the predicted one.
        max_tokens: Attention maps show at most this many rows/columns (longer texts are
            pooled into bins); a token classifier explains at most this many tokens.
        method: "ig" (integrated gradients) or "gxi" (gradient x input).
        n_steps: Integration points of integrated gradients.
        layer: The layer whose heads are drawn one by one (default the last).
    """
    if max_tokens < 2:
        raise ValueError(f"--max-tokens must be at least 2, got {max_tokens}")
    target_index = subject.label_index(target)
    ids = subject.encode(text)
    n_layers = len(self_attentions(subject.model))
    if layer is not None and not 0 <= layer < n_layers:
        raise ValueError(f"--layer {layer} is not a layer of {subject.source}: it has layers "
                         f"0..{n_layers - 1}")
    tokens = token_strings(subject.tokenizer, ids)
    pieces = text_pieces(subject.tokenizer, text, ids)  # for the coloured text
    page = Page(f"zenlm explain: {subject.source}")
    page.paragraph(f"Model: {subject.source} ({subject.kind}). Text: {len(ids)} tokens.")
    maps, output = attention_maps(subject.model, lambda: subject.run(ids), tokens, max_tokens)
    numbers: dict[str, Any] = {"model": subject.source, "kind": subject.kind,
                               "tokens": len(ids)}
    if subject.kind == "causal":
        numbers |= _surprisal_section(page, subject, output[0], ids, tokens, pieces)
    elif subject.kind == "classify":
        numbers |= _classify_section(page, subject, output[0], ids, tokens, pieces,
                                     target_index, method, n_steps)
    elif subject.kind == "ner":
        numbers |= _ner_section(page, subject, output[0], ids, tokens, target_index,
                                max_tokens, method, n_steps)
    _attention_section(page, maps, layer)
    return page, numbers


def _attention_section(page: Page, maps: AttentionMaps, layer: int | None) -> None:
    L, H = maps.maps.shape[:2]
    page.heading("Attention")
    if maps.pooled:
        page.note(f"The text has {len(maps.tokens)} tokens: the attention maps are pooled into "
                  f"{len(maps.bins)} bins of consecutive tokens (a bin's row is the mean of its "
                  "tokens' rows, its column the sum of its tokens' columns; rows still sum to "
                  "1), and the rollout is computed on the pooled maps. Raise --max-tokens to "
                  "see every token.")
    labels = maps.labels()
    page.image("attention_rollout", figures.heatmap(
        maps.rollout().numpy(), labels, f"Attention rollout over {L} layers", gamma=0.5),
        "Attention rollout (Abnar & Zuidema 2020): each layer's heads averaged, the identity "
        "added for the residual, rows renormalised, multiplied through the layers. Row t: "
        "how much of token t's last-layer representation flows from each token. Colours on "
        "a square-root scale. In a causal LM row t reaches only tokens 0..t, and much of "
        "the mass tends to pile on the first token (an attention sink), which rollout "
        "compounds layer after layer.")
    shown = L - 1 if layer is None else layer
    page.image("attention_layer", figures.heatmap(
        maps.head_average()[shown].numpy(), labels, f"Layer {shown}, mean of {H} heads",
        gamma=0.5),
        f"Layer {shown}'s attention (--layer; default the last), averaged over its heads "
        "(square-root colour scale).")
    page.image("attention_layer_heads", figures.layer_heads(
        maps.maps[shown].numpy(), labels, f"Layer {shown}, every head"),
        f"Layer {shown}'s heads one by one, each on its own square-root colour scale.")
    page.image("attention_heads", figures.head_grid(maps.maps.numpy()),
               f"Every layer (rows, layer 0 at the top) and head (columns 0..{H - 1}, then "
               "their mean); each map is shaded to its own maximum. Query heads: a grouped-"
               "query model's heads that share keys and values are shown separately.")


def _surprisal_section(page: Page, subject: Subject, logits: torch.Tensor, ids: list[int],
                       tokens: list[str], pieces: list[str]) -> dict[str, Any]:
    scores = token_scores(logits, ids, tokens, lambda i: token_string(subject.tokenizer, i))
    totals = summary(scores)
    page.heading("Surprisal")
    page.paragraph(
        "Each token's log-probability given the tokens before it, log p(x_t | x_<t), and "
        "its surprisal -log2 p in bits. The first token has no prefix and is not scored. "
        + (f"Mean {totals['mean_bits']:.3f} bits per token, perplexity "
           f"{totals['perplexity']:.3f} over {totals['scored_tokens']} tokens."
           if totals["scored_tokens"] else ""))
    bits = [s.bits for s in scores]
    page.coloured_tokens(pieces, bits, [
        "not scored" if s.bits is None else f"{s.bits:.2f} bits, rank {s.rank}, top {s.top!r}"
        for s in scores])
    page.image("surprisal", figures.bars([b or 0.0 for b in bits], tokens,
                                         "Surprisal per token", "bits"),
               "Surprisal of each token, in bits (the first token is not scored).")
    page.table(["position", "token", "log p (nats)", "surprisal (bits)", "rank", "model's top"],
               [[s.position, repr(s.token), s.logprob, s.bits, s.rank,
                 None if s.top is None else repr(s.top)] for s in scores])
    return {f"surprisal_{k}": v for k, v in totals.items()}


def _classify_section(page: Page, subject: Subject, logits: torch.Tensor, ids: list[int],
                      tokens: list[str], pieces: list[str], target: int | None, method: str,
                      n_steps: int) -> dict[str, Any]:
    probs = torch.softmax(logits, dim=-1)  # (C,)
    predicted = int(probs.argmax())
    label = predicted if target is None else target
    page.heading("Prediction")
    page.table(["label", "probability", "logit"],
               [[name, float(probs[i]), float(logits[i])] for i, name in enumerate(subject.labels)])
    found = _attribute(subject, ids, [label], method, n_steps)
    numbers = {"predicted": subject.labels[predicted], "explained_label": subject.labels[label]}
    numbers |= _completeness(page, found)
    row = found.scores[0].tolist()
    page.paragraph(f"Attributions to the logit of {subject.labels[label]!r} "
                   f"({'the prediction' if target is None else '--target'}); red pushes "
                   "towards it, blue away.")
    page.coloured_tokens(pieces, row, [f"{t!r}: {v:+.4f}" for t, v in zip(tokens, row,
                                                                          strict=True)],
                         signed=True)
    page.image("attributions", figures.bars(row, tokens, f"Attributions to {subject.labels[label]}",
                                            "attribution", signed=True),
               "Per-token attribution (summed over the embedding dimension).")
    page.table(["position", "token", "attribution"],
               [[t, repr(tok), v] for t, (tok, v) in enumerate(zip(tokens, row, strict=True))])
    return numbers


def _ner_section(page: Page, subject: Subject, logits: torch.Tensor, ids: list[int],
                 tokens: list[str], target: int | None, limit: int, method: str,
                 n_steps: int) -> dict[str, Any]:
    tags = logits.argmax(dim=-1).tolist()  # (T,)
    special = special_ids(subject.tokenizer)
    positions = [t for t, i in enumerate(ids) if i not in special]
    page.heading("Predicted tags")
    page.table(["position", "token", "tag", "probability"],
               [[t, repr(tokens[t]), subject.labels[tags[t]],
                 float(torch.softmax(logits[t], -1)[tags[t]])] for t in positions])
    if len(positions) > limit:
        page.note(f"Attributions are computed for the first {limit} of {len(positions)} tokens "
                  "(--max-tokens); the tags above cover every token.")
        positions = positions[:limit]
    explained = [tags[t] if target is None else target for t in positions]
    found = _attribute(subject, ids, list(zip(positions, explained, strict=True)), method,
                       n_steps)
    numbers = _completeness(page, found)
    page.image("attributions", figures.heatmap(
        found.scores.numpy(), tokens, "Attributions per explained token", xlabel="input token",
        ylabel="explained token: label",
        ylabels=[f"{tokens[t]}: {subject.labels[c]}" for t, c in zip(positions, explained,
                                                                      strict=True)],
        centered=True),
        "Row: one token's label logit ("
        + ("its predicted tag" if target is None else f"--target {subject.labels[target]}")
        + "); columns: each input token's attribution to it (red towards, blue away).")
    return numbers


def _attribute(subject: Subject, ids: list[int], targets: list, method: str,
               n_steps: int) -> Attribution:
    return attribute(subject.model, input_embedding(subject.model), torch.tensor([ids]),
                     targets, pad=pad_id(subject.tokenizer, subject.config),
                     special=special_ids(subject.tokenizer), method=method, n_steps=n_steps)


def _completeness(page: Page, found: Attribution) -> dict[str, Any]:
    """The completeness check of integrated gradients, on the page and in the numbers."""
    page.heading("Attributions")
    error = found.completeness_error()
    if error is None or found.delta is None or found.baseline_output is None:
        page.paragraph("Gradient x input on the token embeddings (captum "
                       "LayerGradientXActivation): one gradient, no completeness guarantee.")
        return {"method": "gradient x input"}
    total, gap = float(found.scores.sum(-1)[0]), float(found.output[0] - found.baseline_output[0])
    page.paragraph(
        "Integrated gradients on the token embeddings (captum LayerIntegratedGradients), from "
        "a baseline with every ordinary token replaced by padding (special tokens kept). "
        f"Completeness: the attributions sum to {total:.5f}; f(text) - f(baseline) = "
        f"{gap:.5f}; captum's convergence delta {float(found.delta[0]):+.2e}. Largest "
        f"relative error over the {len(found.delta)} explained output(s): {error:.2e}.")
    return {"method": "integrated gradients", "completeness_relative_error": error,
            "max_abs_convergence_delta": float(found.delta.abs().max())}
