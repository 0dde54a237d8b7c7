"""The log-likelihood core against transformers' full forward and lm-eval's own HF backend."""

from __future__ import annotations

import random

import pytest
import torch

import zenlm
from zenlm.eval.loglik import Request, encode_request, loglikelihoods

transformers = pytest.importorskip("transformers")

from ..models.tiny_hf import randomize  # noqa: E402
from ..test_tokenizer import SAMPLES  # noqa: E402
from ..tiny_tokenizer import byte_level_bpe  # noqa: E402

MAX_POSITIONS = 48  # small, so that truncation is reachable


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A 2-layer random Llama (GQA) with a byte-level BPE, as a Hugging Face folder."""
    backend = byte_level_bpe(SAMPLES * 20)
    folder = tmp_path_factory.mktemp("tiny_loglik")
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>"
    ).save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=backend.get_vocab_size(), hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS, bos_token_id=0, eos_token_id=1,
        tie_word_embeddings=False,
    )
    model = randomize(transformers.AutoModelForCausalLM.from_config(config), seed=1).eval()
    model.save_pretrained(folder)
    return folder, model


def _reference(hf_model, context: list[int], cont: list[int]) -> tuple[list[float], bool]:
    """lm-eval's recipe on transformers: one full forward of (context + cont)[:-1], float64.

    Returns each token's log-probability, whether all are argmaxes, and the top 3
    (ids, log-probabilities) at each position."""
    whole = (context + cont)[-(MAX_POSITIONS + 1):]
    with torch.no_grad():
        logits = hf_model(torch.tensor([whole[:-1]])).logits[0, -len(cont):].double()
    logp = torch.log_softmax(logits, -1)
    values = logp[torch.arange(len(cont)), torch.tensor(cont)].tolist()
    top = logp.topk(3, dim=-1)
    return (values, bool((logits.argmax(-1) == torch.tensor(cont)).all()),
            (top.indices.tolist(), top.values.tolist()))


def _random_requests(vocab: int, n: int, seed: int, long: bool = False) -> list[Request]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        context = tuple(rng.randrange(vocab) for _ in range(rng.randint(1, 60 if long else 20)))
        conts = tuple(tuple(rng.randrange(vocab) for _ in range(rng.randint(1, 6)))
                      for _ in range(rng.randint(1, 4)))
        out.append(Request(context, conts))
    return out


# quantize None: SDPA as built; "none": zenlm's CPU attention kernels (fused float32)
@pytest.mark.parametrize(("quantize", "batch_size"), [(None, 5), ("none", 1), ("none", 64)])
def test_scores_equal_a_full_forward(tiny_folder, quantize, batch_size):
    folder, hf_model = tiny_folder
    lm = zenlm.load(folder, quantize=quantize)
    requests = _random_requests(hf_model.config.vocab_size, 12, seed=batch_size)
    requests.append(Request(requests[0].context, ((5,), (7, 8, 9))))  # a shared context
    finished = []
    scores = loglikelihoods(lm.model, requests, batch_size=batch_size, token_logprobs=True,
                            top_logprobs=3, progress=finished.append)
    assert sum(finished) == len(requests)
    for request, row in zip(requests, scores, strict=True):
        assert len(row) == len(request.continuations)
        for cont, score in zip(request.continuations, row, strict=True):
            values, greedy, (top_ids, top_values) = _reference(hf_model, list(request.context),
                                                               list(cont))
            assert score.n_tokens == len(cont)
            assert [[t for t, _ in position] for position in score.top_logprobs] == top_ids
            assert [v for position in score.top_logprobs for _, v in position] == \
                pytest.approx([v for position in top_values for v in position], abs=1e-4)
            assert score.token_logprobs == pytest.approx(values, abs=1e-4)
            assert score.logprob == pytest.approx(sum(values), abs=1e-4)
            assert score.is_greedy == greedy


def test_greedy_continuation_is_greedy(tiny_folder):
    folder, hf_model = tiny_folder
    lm = zenlm.load(folder, quantize=None)
    context = [5, 9, 14, 3]
    with torch.no_grad():
        greedy = hf_model.generate(torch.tensor([context]), max_new_tokens=4, do_sample=False,
                                   min_new_tokens=4)[0, 4:].tolist()
    other = greedy[:3] + [(greedy[3] + 1) % hf_model.config.vocab_size]
    best, worse = loglikelihoods(lm.model, [Request(tuple(context), (tuple(greedy),
                                                                     tuple(other)))])[0]
    assert best.is_greedy and not worse.is_greedy
    assert best.logprob > worse.logprob


def test_long_pairs_lose_context_from_the_left_as_lm_eval(tiny_folder):
    folder, hf_model = tiny_folder
    lm = zenlm.load(folder, quantize=None)
    requests = _random_requests(hf_model.config.vocab_size, 6, seed=3, long=True)
    assert any(len(r.context) + 6 > MAX_POSITIONS + 1 for r in requests)
    for request, row in zip(requests, loglikelihoods(lm.model, requests, batch_size=4),
                            strict=True):
        for cont, score in zip(request.continuations, row, strict=True):
            values, _, _ = _reference(hf_model, list(request.context), list(cont))
            assert score.logprob == pytest.approx(sum(values), abs=1e-4)


def test_text_requests_equal_lm_eval_hf_backend(tiny_folder):
    """lm-eval's own HFLM on the same folder: token boundaries, empty context, scores."""
    huggingface = pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance

    folder, _ = tiny_folder
    lm = zenlm.load(folder, quantize=None)
    oracle = huggingface.HFLM(pretrained=str(folder), backend="causal", batch_size=4,
                              device="cpu", dtype="float32")
    cases = [("Question: how do I boil water?\nAnswer:", [" Use a pot.", " Use a sieve."]),
             ("The cat sat on the ", ["mat", "hat and slept"]),  # trailing space moves
             ("", ["Hello world", "<s>Hello"])]  # empty: scored after BOS
    pairs = [(context, choice) for context, choices in cases for choice in choices]
    instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    expected = oracle.loglikelihood(instances, disable_tqdm=True)
    requests = [encode_request(lm.tokenizer, context, choices) for context, choices in cases]
    got = [score for row in loglikelihoods(lm.model, requests, batch_size=3) for score in row]
    for (logprob, greedy), score in zip(expected, got, strict=True):
        assert score.logprob == pytest.approx(logprob, abs=1e-4)
        assert score.is_greedy == greedy


def test_bad_requests_are_named(tiny_folder):
    folder, _ = tiny_folder
    lm = zenlm.load(folder, quantize=None)
    with pytest.raises(ValueError, match="request 1 has an empty context"):
        loglikelihoods(lm.model, [Request((1,), ((2,),)), Request((), ((2,),))])
    with pytest.raises(ValueError, match="request 0, continuation 1 is empty"):
        loglikelihoods(lm.model, [Request((1,), ((2,), ()))])
    with pytest.raises(ValueError, match="continuation 0 has 49 tokens"):
        loglikelihoods(lm.model, [Request((1,), ((2,) * 49,))])
    with pytest.raises(ValueError, match="top_logprobs must be >= 0, got -1"):
        loglikelihoods(lm.model, [Request((1,), ((2,),))], top_logprobs=-1)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        loglikelihoods(lm.model, [Request((1,), ((2,),))], batch_size=0)
    with pytest.raises(ValueError, match="continuation '' has no tokens"):
        encode_request(lm.tokenizer, "A context", ["fine", ""])
