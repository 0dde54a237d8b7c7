"""Run in a fresh process (so that ZENLM_CPU applies): the fused int4 decode step against
the eager int4 step and the float32 model holding the same dequantized weights.

    python tests/quant/fused_check.py MODEL_PATH PROMPT_LEN ROWS STEPS TWIN [FREE]

Prints one JSON line: the level, whether the fused step ran, the relative logit errors
(fused vs eager, and with TWIN=1 eager vs float and fused vs float) of every step, the
largest relative difference of a layer's cache slot written (fused vs eager), the
greedy tokens of both int4 steps, and with FREE > 0 (a model with a chat template) the
FREE greedy tokens each step generates on its own from each of CONVERSATIONS.
"""

from __future__ import annotations

import json
import sys

import torch

import zenlm
from zenlm.cpu import cpu_info
from zenlm.generate.core import decode_step, prefill
from zenlm.quant import Int4Linear, Int8Linear, quantize
from zenlm.quant.fused_step import FusedStep


def float_twin(path: str, fast: torch.nn.Module) -> torch.nn.Module:
    """The float32 model whose weights are `fast`'s dequantized ones (the reference)."""
    reference = quantize(zenlm.load(path, quantize=None).model, "none")
    layers = dict(reference.named_modules())
    for name, module in fast.named_modules():
        if isinstance(module, (Int8Linear, Int4Linear)) and name in layers:
            layers[name].weight.copy_(module.dequantized())
    return reference


#: Chats to reply to greedily: the chatbot recipe's (tests/examples/test_recipes.py), whose
#: reply once changed with the fused step, and two more.
CONVERSATIONS = [
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Hello! My name is Ada."}],
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [{"role": "user", "content": "What is the capital of France? Explain its history."}],
]


def free_greedy(lm: zenlm.LM, fused: FusedStep, tokens: int) -> list[dict[str, list[int]]]:
    """Each conversation's `tokens` greedy tokens by the eager and by the fused step."""
    model = lm.model
    runs = []
    for conversation in CONVERSATIONS:
        prompt = lm.encode_chat(conversation)
        run = {}
        for name, step_fn in (("eager", None), ("fused", fused)):
            model.step_fn = step_fn
            cache = model.new_cache(1, len(prompt) + tokens)
            token = prefill(model, [prompt], cache).argmax(-1)
            run[name] = [token.item()]
            for _ in range(tokens - 1):
                token = decode_step(model, token, cache).argmax(-1)
                run[name].append(token.item())
        runs.append(run)
    model.step_fn = fused
    return runs


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def main(path: str, prompt_len: int, rows: int, steps: int, twin: int, free: int = 0) -> None:
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    lm = zenlm.load(path, quantize="int4")
    fast = lm.model
    fused = fast.step_fn
    reference = float_twin(path, fast) if twin else None
    vocab = fast.config.vocab_size
    prompts = torch.randint(3, vocab, (rows, prompt_len)).tolist()
    caches, logits = {}, {}
    models = {"eager": fast, "fused": fast}
    if reference is not None:
        models["float"] = reference
    for name, model in models.items():
        step = fused if name == "fused" else None
        model.step_fn = step
        cache = model.new_cache(rows, prompt_len + steps)
        first = prefill(model, prompts, cache)
        caches[name] = cache
        logits[name] = [first]
    report = {"level": cpu_info().level, "fused": isinstance(fused, FusedStep),
              "fused_vs_eager": [], "eager_vs_float": [], "fused_vs_float": [], "cache": 0.0}
    # Every model is fed the eager model's greedy tokens, so that their steps compare.
    token = logits["eager"][0].argmax(-1)
    greedy = {"eager": [], "fused": []}
    for _ in range(steps):
        position = caches["eager"].uniform
        step = {}
        for name, model in models.items():
            model.step_fn = fused if name == "fused" else None
            step[name] = decode_step(model, token, caches[name])
        report["fused_vs_eager"].append(rel(step["fused"], step["eager"]))
        if reference is not None:
            report["eager_vs_float"].append(rel(step["eager"], step["float"]))
            report["fused_vs_float"].append(rel(step["fused"], step["float"]))
        for mine, theirs in zip(caches["fused"].keys + caches["fused"].values,
                                caches["eager"].keys + caches["eager"].values, strict=True):
            report["cache"] = max(report["cache"],
                                  rel(mine[:, :, position], theirs[:, :, position]))
        for name in greedy:
            greedy[name].append(step[name].argmax(-1).tolist())
        token = step["eager"].argmax(-1)
    report["lengths"] = [caches[n].lengths.tolist() for n in ("eager", "fused")]
    fast.step_fn = fused
    report["greedy"] = greedy
    report["free"] = free_greedy(lm, fused, free) if free else []
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
