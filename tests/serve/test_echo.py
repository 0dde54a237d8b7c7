"""`/v1/completions` with `echo` and `logprobs`: the prompt's tokens scored, as OpenAI's legacy
completions API returns them and lm-evaluation-harness's `local-completions` reads them.

The oracle is transformers' own model on the same weights: log-softmax of its logits.
"""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest
import torch

from .conftest import MODEL

transformers = pytest.importorskip("transformers")
openai = pytest.importorskip("openai")

PROMPT = "The cat sat on the mat because"


@pytest.fixture(scope="module")
def hf_tiny(tiny_chat):
    """transformers' model and tokenizer on the tiny server's folder (fp32)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_chat, dtype=torch.float32)
    return model.eval(), transformers.AutoTokenizer.from_pretrained(tiny_chat)


def reference(model, ids: list[int], top: int) -> tuple[list[float], list[list[float]]]:
    """Each token's log-probability after the ones before it, and the top `top` values."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()  # (T-1, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    chosen = logprobs.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    return chosen.tolist(), logprobs.topk(top, dim=-1).values.tolist()


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def post(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/v1/completions", json={"model": MODEL, **body}, timeout=60)


def test_openai_client_parses_echo_scores_equal_to_transformers(tiny_server, tiny_lm, hf_tiny):
    model, _ = hf_tiny
    reply = client(tiny_server).completions.create(
        model=MODEL, prompt=PROMPT, echo=True, logprobs=3, max_tokens=0)
    choice = reply.choices[0]
    assert choice.text == PROMPT and choice.finish_reason == "length"
    ids = tiny_lm.tokenizer.encode(PROMPT)
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.tokens == [tiny_lm.tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    chosen, tops = reference(model, ids, 3)
    assert lp.token_logprobs[1:] == pytest.approx(chosen, abs=1e-4)
    for top, expected in zip(lp.top_logprobs[1:], tops, strict=True):
        # tokens that decode to the same text (pieces of one character) share a key
        assert max(top.values()) == pytest.approx(expected[0], abs=1e-4)
        assert all(min(abs(v - e) for e in expected) < 1e-4 for v in top.values())
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == 0


def test_echo_then_generate_concatenates_prompt_and_completion(tiny_server):
    options = dict(prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2, ignore_eos=True)
    plain = post(tiny_server, **options).json()["choices"][0]
    echoed = post(tiny_server, echo=True, **options).json()["choices"][0]
    assert echoed["text"] == PROMPT + plain["text"]
    lp, gen = echoed["logprobs"], plain["logprobs"]
    assert lp["tokens"][-4:] == gen["tokens"]
    assert lp["token_logprobs"][-4:] == pytest.approx(gen["token_logprobs"], abs=1e-5)
    # offsets: the prompt's tokens from 0, the generated ones after the prompt's text
    assert lp["text_offset"][0] == 0
    assert lp["text_offset"][-4] == len(PROMPT)
    assert lp["text_offset"][-4:] == [o + len(PROMPT) for o in gen["text_offset"]]


@pytest.mark.parametrize("prompt", [PROMPT, "ok", ["Hello world", "naïve café"]])
def test_one_greedy_token_from_the_scoring_pass_equals_generating_it(tiny_server, prompt):
    """lm-eval's request (max_tokens 1, temperature 0) takes its token from the scoring
    pass: the same token, logprob and alternatives as a plain greedy completion."""
    options = dict(prompt=prompt, max_tokens=1, temperature=0, logprobs=2, n=2)
    plain = post(tiny_server, **options).json()
    echoed = post(tiny_server, echo=True, **options).json()
    prompts = [prompt] if isinstance(prompt, str) else prompt
    for p, e in zip(plain["choices"], echoed["choices"], strict=True):
        assert e["text"] == prompts[e["index"] // 2] + p["text"]
        assert e["finish_reason"] == p["finish_reason"]
        assert e["logprobs"]["tokens"][-1] == p["logprobs"]["tokens"][0]
        assert e["logprobs"]["token_logprobs"][-1] == pytest.approx(
            p["logprobs"]["token_logprobs"][0], abs=1e-5)
        assert e["logprobs"]["top_logprobs"][-1] == pytest.approx(p["logprobs"]["top_logprobs"][0],
                                                                  abs=1e-5)
    assert echoed["usage"] == plain["usage"]


def test_lm_eval_payload_of_token_id_prompts(tiny_server, tiny_lm, hf_tiny):
    """What `local-completions` sends for loglikelihood: a batch of token-id prompts,
    max_tokens 1, temperature 0, logprobs 1, echo; it reads token_logprobs[ctxlen:-1]."""
    model, _ = hf_tiny
    prompts = [tiny_lm.tokenizer.encode(t) for t in (PROMPT, "Hello world", "ok")]
    response = post(tiny_server, prompt=prompts, max_tokens=1, temperature=0, logprobs=1,
                    echo=True, seed=1234)
    assert response.status_code == 200, response.text
    choices = sorted(response.json()["choices"], key=lambda c: c["index"])
    assert len(choices) == 3
    for ids, choice in zip(prompts, choices, strict=True):
        lp = choice["logprobs"]
        assert len(lp["token_logprobs"]) == len(ids) + 1  # the prompt, then one new token
        chosen, tops = reference(model, ids, 1)
        assert lp["token_logprobs"][1:-1] == pytest.approx(chosen, abs=1e-4)
        assert [max(top.values()) for top in lp["top_logprobs"][1:-1]] == pytest.approx(
            [t[0] for t in tops], abs=1e-4)


def test_lm_eval_parses_the_response(tiny_server, tiny_lm, hf_tiny):
    """lm-evaluation-harness's own parser on our response: sum and is_greedy."""
    api = pytest.importorskip("lm_eval.models.openai_completions")
    model, _ = hf_tiny
    ids = tiny_lm.tokenizer.encode(PROMPT)
    body = post(tiny_server, prompt=[ids], max_tokens=1, temperature=0, logprobs=1,
                echo=True).json()
    ctxlen = 3
    [(total, greedy)] = api.LocalCompletionsAPI.parse_logprobs(body, ctxlens=[ctxlen])
    chosen, tops = reference(model, ids, 1)
    assert total == pytest.approx(sum(chosen[ctxlen - 1:]), abs=1e-4)
    expected_greedy = all(abs(c - t[0]) < 1e-6 for c, t in zip(chosen[ctxlen - 1:],
                                                                 tops[ctxlen - 1:], strict=True))
    assert greedy == expected_greedy


def test_echo_without_logprobs_and_n_choices(tiny_server):
    body = post(tiny_server, prompt=["Hello", "ok"], echo=True, max_tokens=0, n=2).json()
    assert [c["text"] for c in body["choices"]] == ["Hello", "Hello", "ok", "ok"]
    assert all(c["logprobs"] is None for c in body["choices"])


def test_streamed_echo_equals_the_whole_response(tiny_server):
    options = dict(prompt=PROMPT, echo=True, logprobs=1, max_tokens=3, temperature=0,
                   ignore_eos=True)
    whole = post(tiny_server, **options).json()["choices"][0]
    with httpx.stream("POST", tiny_server.url + "/v1/completions", timeout=60,
                      json={"model": MODEL, "stream": True, **options}) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line)["choices"] for line in lines[:-1]]
    text = "".join(c[0]["text"] for c in chunks if c)
    tokens = [t for c in chunks if c and c[0]["logprobs"] for t in c[0]["logprobs"]["tokens"]]
    scores = [v for c in chunks if c and c[0]["logprobs"]
              for v in c[0]["logprobs"]["token_logprobs"]]
    assert text == whole["text"]
    assert tokens == whole["logprobs"]["tokens"]
    assert scores[0] is None and whole["logprobs"]["token_logprobs"][0] is None
    assert scores[1:] == pytest.approx(whole["logprobs"]["token_logprobs"][1:], abs=1e-5)


def test_streamed_scoring_only_ends_every_choice(tiny_server):
    with httpx.stream("POST", tiny_server.url + "/v1/completions", timeout=60,
                      json={"model": MODEL, "stream": True, "prompt": PROMPT, "echo": True,
                            "logprobs": 0, "max_tokens": 0}) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(line)["choices"][0] for line in lines[:-1]]
    assert chunks[0]["text"] == PROMPT and chunks[-1]["finish_reason"] == "length"


def test_a_prompt_scored_in_pieces_equals_one_pass(tiny_server, tiny_lm, hf_tiny, monkeypatch):
    """Long prompts are scored in pieces, each after all the tokens before it."""
    from zenlm.serve import scoring

    monkeypatch.setattr(scoring, "PIECE_TOKENS", 5)
    ids = tiny_lm.tokenizer.encode(PROMPT * 3)
    assert len(ids) > 15
    body = post(tiny_server, prompt=ids, echo=True, logprobs=1, max_tokens=0).json()
    chosen, tops = reference(hf_tiny[0], ids, 1)
    lp = body["choices"][0]["logprobs"]
    assert lp["token_logprobs"][1:] == pytest.approx(chosen, abs=1e-4)
    assert [max(t.values()) for t in lp["top_logprobs"][1:]] == pytest.approx(
        [t[0] for t in tops], abs=1e-4)


def test_scoring_only_may_fill_the_models_context(tiny_server, tiny_lm):
    context = tiny_lm.config.context_length
    full = post(tiny_server, prompt=[5] * context, echo=True, logprobs=0, max_tokens=0)
    assert full.status_code == 200, full.text
    assert len(full.json()["choices"][0]["logprobs"]["token_logprobs"]) == context
    over = post(tiny_server, prompt=[5] * (context + 1), echo=True, logprobs=0, max_tokens=0)
    assert over.status_code == 400
    assert over.json()["error"]["param"] == "prompt"
    assert str(context) in over.json()["error"]["message"]


@pytest.fixture(scope="module")
def smollm2_server(smollm2_gguf):
    """SmolLM2 served unquantized: the GGUF's weights dequantized, as transformers loads them."""
    import zenlm
    from zenlm.serve import ServeOptions, create_app

    from .conftest import LiveServer

    lm = zenlm.load(smollm2_gguf, quantize=None)
    app = create_app(lambda: lm, ServeOptions(model_name="smollm2", max_batch=2,
                                              kv_budget_mb=16))
    server = LiveServer(app).start()
    yield server
    server.stop()


def test_smollm2_echo_logprobs_equal_transformers(smollm2_server, hf_smollm2):
    model, tokenizer = hf_smollm2
    prompt = "Question: How do I boil an egg?\nAnswer: Put it in boiling water."
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    reply = client(smollm2_server).completions.create(
        model="smollm2", prompt=ids, echo=True, logprobs=2, max_tokens=0)
    lp = reply.choices[0].logprobs
    chosen, tops = reference(model, ids, 2)
    assert lp.token_logprobs[0] is None
    assert lp.token_logprobs[1:] == pytest.approx(chosen, abs=1e-3)
    assert [max(t.values()) for t in lp.top_logprobs[1:]] == pytest.approx(
        [t[0] for t in tops], abs=1e-3)
    assert reply.choices[0].text == tokenizer.decode(ids)
