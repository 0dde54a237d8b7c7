"""Beam search for one prompt, step for step the algorithm of transformers' `_beam_search`.

Each step scores every continuation of every running beam, keeps the best
2 x num_beams candidates, moves those that end (a stop token, or the length limit)
into the finished set with a length-penalised score, and continues with the best
num_beams that did not end. The KV cache rows are reordered to follow the beams.
It drives the generation core's prefill and the model's (compiled) decode step; its
choice of tokens is the beam rule itself, not sampling. The token rules of the config
(min_new_tokens, no_repeat_ngram_size, forced BOS/EOS) act on each beam's
log-probabilities, as transformers' logits processors do.

Length accounting, as in transformers 5 (`_update_finished_beams`: cur_len + 1 -
decoder_prompt_len): the length penalty divides by the number of generated tokens,
the stop token included; neither a decoder-only prompt nor an encoder-decoder's start
token counts. (Older transformers versions divided by the whole decoder length, start
token or prompt included.) test_seq2seq_hf.py checks it against the installed version.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from zenlm.generate.core import decode_step, open_rows, prefill
from zenlm.generate.decode import GenerationConfig, GenerationResult, check_prompts
from zenlm.generate.rules import TokenRules
from zenlm.models import DecoderLM

NEG = -1.0e9  # transformers' "impossible" score


@dataclass
class _Finished:
    tokens: list[int]
    score: float
    stopped: bool


@torch.inference_mode()
def beam_search(
    model: DecoderLM, prompt_ids: Sequence[int], config: GenerationConfig
) -> list[GenerationResult]:
    """The best `num_return_sequences` (<= num_beams) beams, best first.

    Raises:
        ValueError: an invalid config, num_return_sequences > num_beams, or a bad prompt.
    """
    config.validate()
    check_prompts(model, [prompt_ids])
    beams = config.num_beams
    if config.num_return_sequences > beams:
        raise ValueError(
            f"num_return_sequences ({config.num_return_sequences}) must be <= num_beams ({beams})"
        )
    start = time.perf_counter()
    search = _BeamSearch(model, list(prompt_ids), config)
    first_at = search.run()
    end = time.perf_counter()
    return [
        GenerationResult(f.tokens, len(prompt_ids), first_at - start, end - first_at,
                         "stop" if f.stopped else "length")
        for f in search.finished[: config.num_return_sequences]
    ]


class _BeamSearch:
    def __init__(self, model: DecoderLM, prompt: list[int], config: GenerationConfig) -> None:
        self.model, self.config, self.prompt = model, config, prompt
        self.n = config.num_beams
        self.stop_ids = set(config.stop_token_ids)
        self.rules = TokenRules.of(config, self.stop_ids, model.config.vocab_size)
        decoder_prompts, self.cache = open_rows(model, [prompt], config.max_new_tokens,
                                                cross_cache=config.use_cross_cache)
        self.prompt = decoder_prompts[0]  # an encoder-decoder's start token
        self.max_new = min(config.max_new_tokens, self.cache.max_len - len(self.prompt))
        self.running: list[list[int]] = [[] for _ in range(self.n)]
        self.scores = torch.tensor([0.0] + [NEG] * (self.n - 1))  # only beam 0 is real at first
        self.finished: list[_Finished] = []
        self.improvable = True

    def run(self) -> float:
        logits = prefill(self.model, [self.prompt], self.cache)  # (1, V)
        first_at = time.perf_counter()
        self.cache.keep_rows(torch.zeros(self.n, dtype=torch.long))  # n copies of the prompt
        logits = logits.expand(self.n, -1)
        for step in range(self.max_new):
            chosen = self._step(logits, step)
            if not self._should_continue(step + 1):
                break
            self.cache.keep_rows(chosen[0])
            logits = decode_step(self.model, chosen[1], self.cache)  # (n, V)
        self.finished.sort(key=lambda f: -f.score)
        return first_at

    def _step(self, logits: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        V = logits.shape[-1]
        logprobs = torch.log_softmax(logits, dim=-1)  # (n, V)
        if self.rules is not None:  # as transformers: on log-probabilities, not renormalised
            logprobs = torch.stack([
                self.rules.apply(logprobs[b], self.prompt + self.running[b], step,
                                 self.max_new - step) for b in range(self.n)])
        total = logprobs + self.scores[:, None]  # (n, V)
        keep = max(2, 1 + len(self.stop_ids)) * self.n
        top_scores, top_index = total.view(-1).topk(keep)
        beam, token = top_index // V, top_index % V
        last_step = step + 1 >= self.max_new
        ends = torch.tensor([last_step or t in self.stop_ids for t in token.tolist()])
        self._update_finished(top_scores, beam, token, ends, step)
        running = (top_scores + ends.float() * NEG).topk(self.n).indices
        self.running = [self.running[b] + [t] for b, t in
                        zip(beam[running].tolist(), token[running].tolist(), strict=True)]
        self.scores = top_scores[running] + ends[running].float() * NEG
        return beam[running], token[running]

    def _update_finished(
        self, scores: torch.Tensor, beam: torch.Tensor, token: torch.Tensor,
        ends: torch.Tensor, step: int,
    ) -> None:
        full = len(self.finished) >= self.n and self.config.early_stopping
        if full or not self.improvable:
            return
        length = (step + 1) ** self.config.length_penalty
        for i in range(self.n):  # only the best n candidates may finish
            if ends[i]:
                tokens = self.running[int(beam[i])] + [int(token[i])]
                stopped = int(token[i]) in self.stop_ids
                self.finished.append(_Finished(tokens, float(scores[i]) / length, stopped))
        self.finished.sort(key=lambda f: -f.score)
        del self.finished[self.n:]

    def _should_continue(self, generated: int) -> bool:
        if len(self.finished) >= self.n:
            if self.config.early_stopping:
                return False
            # transformers' heuristic: can the best running beam still beat the worst
            # finished one, judged at the current length?
            best_running = float(self.scores[0]) / generated ** self.config.length_penalty
            self.improvable = best_running > self.finished[-1].score
        return self.improvable and generated < self.max_new
