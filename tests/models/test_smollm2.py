"""The real SmolLM2-135M-Instruct GGUF: zenlm vs transformers on the same weights.

transformers loads the GGUF through its own dequantizer (fp32); zenlm loads it
through zenlm.load (the production GGUF path). Greedy continuations must agree
token for token; where they part, the two best candidates must tie within 1e-4.
"""

from __future__ import annotations

import pytest
import torch

import zenlm

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a hash table is in one paragraph.",
    "Translate to German: The weather is nice today.",
    "List three prime numbers greater than 100.",
]
NEW_TOKENS = 64
TIE = 1e-4


@pytest.fixture(scope="module")
def ours(smollm2_gguf):
    return zenlm.load(smollm2_gguf, quantize=None)


def test_gguf_load_initialises_no_throwaway_weights(smollm2_gguf, monkeypatch):
    """Loading builds the model on the meta device and assigns the file's tensors: no
    random initialisation of real memory first (that doubled load time and memory).
    Load speed itself is measured by `zenlm bench` (benchmarks), not asserted here."""
    from zenlm.models import build

    initialised = []
    original = build._init_weights

    def recording(model, *args, **kwargs):
        initialised.append({p.device.type for p in model.parameters()})
        return original(model, *args, **kwargs)

    monkeypatch.setattr(build, "_init_weights", recording)
    lm = zenlm.load(smollm2_gguf, quantize=None)
    # Every build on the meta device (the GGUF reader also builds one to know the shapes).
    assert initialised and all(devices == {"meta"} for devices in initialised)
    assert {p.device.type for p in lm.model.parameters()} == {"cpu"}


def _chat_ids(lm, prompt):
    return lm.encode_chat([{"role": "user", "content": prompt}])


def test_chat_prompt_tokens_match_transformers(ours, hf_smollm2):
    _, hf_tok = hf_smollm2
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        expected = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(expected, dict) or hasattr(expected, "input_ids"):
            expected = expected["input_ids"]
        assert _chat_ids(ours, prompt) == list(expected)


def test_next_token_logits_within_1e3(ours, hf_smollm2):
    hf, _ = hf_smollm2
    ids = torch.tensor([_chat_ids(ours, PROMPTS[0])])
    with torch.no_grad():
        theirs = hf(ids).logits
    diff = (ours.logits(ids) - theirs).abs().max().item()
    print(f"max |logit diff| over the prompt: {diff:.2e}")
    assert diff <= 1e-3


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_continuation_matches_transformers(ours, hf_smollm2, prompt):
    hf, _ = hf_smollm2
    prompt_ids = _chat_ids(ours, prompt)
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        expected = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                               eos_token_id=None, pad_token_id=0)[0, len(prompt_ids):].tolist()
    got = ours.generate_ids(prompt_ids, max_new_tokens=NEW_TOKENS, stop_token_ids=()).token_ids
    assert len(got) == NEW_TOKENS
    if got == expected:
        return
    # They parted: at the first difference the two candidates must tie in transformers'
    # own logits, given the common prefix.
    first = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
    with torch.no_grad():
        logits = hf(torch.tensor([prompt_ids + got[:first]])).logits[0, -1]
    gap = (logits[expected[first]] - logits[got[first]]).abs().item()
    print(f"{prompt!r}: diverged at token {first} with a logit gap of {gap:.2e} (a tie)")
    assert gap <= TIE, f"diverged at token {first} without a tie (gap {gap})"
