"""Token log-probabilities and surprisal against transformers' log-softmax on SmolLM2."""

from __future__ import annotations

import math

import pytest
import torch

from zenlm.explain.surprisal import summary, token_scores

TEXT = "The cat sat on the mat. Colorless green ideas sleep furiously."


def test_surprisal_equals_transformers_log_softmax(smollm2_subject, hf_smollm2):
    model, hf_tokenizer = hf_smollm2
    ids = hf_tokenizer(TEXT)["input_ids"]
    assert ids == smollm2_subject.tokenizer.encode(TEXT)
    with torch.no_grad():
        expected = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        logits = smollm2_subject.run(ids)[0]
    scores = token_scores(logits, ids, [str(i) for i in ids], str)
    assert scores[0].logprob is None and scores[0].bits is None  # no prefix to predict it from
    for t in range(1, len(ids)):
        oracle = expected[t - 1, ids[t]].item()
        assert scores[t].logprob == pytest.approx(oracle, abs=1e-4)
        assert scores[t].bits == pytest.approx(-oracle / math.log(2), abs=2e-4)
        assert scores[t].rank == int((expected[t - 1] > expected[t - 1, ids[t]]).sum()) + 1
    nats = [-expected[t - 1, ids[t]].item() for t in range(1, len(ids))]
    assert summary(scores)["perplexity"] == pytest.approx(math.exp(sum(nats) / len(nats)),
                                                          rel=1e-4)
