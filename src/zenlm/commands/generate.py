"""`zenlm generate` and `zenlm demo`."""

from __future__ import annotations

import argparse
import json

from zenlm.generate.defaults import SAMPLING_DEFAULTS_MODES
from zenlm.quant import QUANTIZE_MODES

DEMO_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant. Answer in two sentences."},
    {"role": "user", "content": "What is a language model, and what can I use one for?"},
]


def generate_command(
    model: str,
    prompt: str,
    *,
    chat: bool = False,
    system: str | None = None,
    max_new_tokens: int = 128,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    dtype: str | None = None,
    quantize: str | None = "auto",
    compile: bool = False,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    stop: list[str] | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
    min_new_tokens: int = 0,
    no_repeat_ngram_size: int = 0,
    logprobs: int | None = None,
    sampling_defaults: str = "model",
    as_json: bool = False,
) -> int:
    """Generate a continuation of `prompt` (or a chat reply to it) and print it.

    Sampling parameters left out (None) take `sampling_defaults` ("model": the model's
    generation_config.json, else zenlm.generate.defaults.DEFAULT_CHAIN; "openai":
    temperature 1). For an encoder-decoder the prompt is the source text (with --chat:
    the prompt alone, as the last user message).
    """
    import zenlm
    from zenlm.generate.defaults import fill_sampling

    lm = zenlm.load(model, dtype=dtype, quantize=quantize, compile=compile)
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        prompt_ids = lm.encode_chat(messages)
    else:
        prompt_ids = lm.encode_prompt(prompt)
    sampling = fill_sampling(
        dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
             repetition_penalty=repetition_penalty), lm.sampling_defaults(sampling_defaults))
    completion = lm.complete(
        [prompt_ids], max_new_tokens=max_new_tokens, **sampling,
        presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
        seed=seed, stop=stop or (), num_beams=num_beams, length_penalty=length_penalty,
        early_stopping=early_stopping, min_new_tokens=min_new_tokens,
        no_repeat_ngram_size=no_repeat_ngram_size, logprobs=logprobs is not None,
        top_logprobs=logprobs or 0,
    )[0]
    result, text = completion.result, completion.text
    if not as_json:
        print(text)
        return 0
    print(json.dumps({
        "text": text,
        "token_ids": result.token_ids,
        "prompt_tokens": result.prompt_tokens,
        "new_tokens": len(result.token_ids),
        "finish_reason": result.finish_reason,
        "prefill_s": round(result.prefill_s, 6),
        "decode_s": round(result.decode_s, 6),
        "decode_tokens_per_s": round(result.decode_tokens_per_s, 3),
        **({"logprobs": result.logprobs} if result.logprobs is not None else {}),
        **({"top_logprobs": result.top_logprobs} if result.top_logprobs is not None else {}),
    }, ensure_ascii=False))
    return 0


def demo_command(model: str, max_new_tokens: int = 96) -> int:
    """Answer one scripted chat turn and report speed."""
    import zenlm

    lm = zenlm.load(model)
    print(f"loaded {lm.source} in {lm.load_s:.2f} s")
    for message in DEMO_MESSAGES:
        print(f"[{message['role']}] {message['content']}")
    result = lm.generate_ids(lm.encode_chat(DEMO_MESSAGES), max_new_tokens=max_new_tokens)
    print(f"[assistant] {lm.decode_new(result)}")
    print(
        f"{result.prompt_tokens} prompt tokens in {result.prefill_s:.3f} s; "
        f"{len(result.token_ids)} new tokens, {result.decode_tokens_per_s:.1f} tokens/s decoding"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `generate` and `demo`."""
    gen = commands.add_parser("generate", help="continue a prompt or answer a chat message")
    gen.add_argument("model", help="model folder, .gguf file, short name or hub id")
    gen.add_argument("--prompt", required=True,
                     help="the prompt (an encoder-decoder: the source text)")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    gen.add_argument("--system", default=None, help="system message (with --chat)")
    gen.add_argument("--max-new-tokens", type=int, default=128,
                     help="most tokens to generate")
    left_out = " (default: from --sampling-defaults)"
    gen.add_argument("--temperature", type=float, default=None, help="0: greedy" + left_out)
    gen.add_argument("--top-k", type=int, default=None, help="0: off" + left_out)
    gen.add_argument("--top-p", type=float, default=None, help="1: off" + left_out)
    gen.add_argument("--seed", type=int, default=None,
                     help="sampling seed (same seed, same text)")
    gen.add_argument("--min-p", type=float, default=None, help="0: off" + left_out)
    gen.add_argument("--repetition-penalty", type=float, default=None, help="1: off" + left_out)
    gen.add_argument("--presence-penalty", type=float, default=0.0,
                     help="subtracted once from every token already generated (0: off)")
    gen.add_argument("--frequency-penalty", type=float, default=0.0,
                     help="subtracted per occurrence of a generated token (0: off)")
    gen.add_argument("--sampling-defaults", choices=SAMPLING_DEFAULTS_MODES, default="model",
                     help="for sampling options left out: the model's generation_config.json, "
                     "else top-k 40, top-p 0.95, min-p 0.05 "
                     "at temperature 0.2; or openai (temperature 1, nothing else)")
    gen.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    gen.add_argument("--num-beams", type=int, default=1,
                     help="beam search with this many beams (1: sampling or greedy)")
    gen.add_argument("--length-penalty", type=float, default=1.0,
                     help="beam score = sum of logprobs / generated tokens ** this")
    gen.add_argument("--early-stopping", action="store_true",
                     help="beam search ends once num_beams hypotheses are finished")
    gen.add_argument("--min-new-tokens", type=int, default=0,
                     help="no stop token before this many tokens")
    gen.add_argument("--no-repeat-ngram-size", type=int, default=0,
                     help="no n-gram of this size twice (0: off)")
    gen.add_argument("--logprobs", type=int, default=None, metavar="N",
                     help="with --json: each token's log-probability and N alternatives")
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                     help="load the weights in this dtype, as they are (auto then leaves them)")
    gen.add_argument("--quantize", choices=QUANTIZE_MODES, default="auto",
                     help="auto: the fastest mode on this CPU (see `zenlm info`)")
    gen.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    gen.add_argument("--json", action="store_true", dest="as_json",
                     help="print one JSON object: text, token ids, timings")
    gen.set_defaults(handler=generate_command)

    demo = commands.add_parser("demo", help="one scripted chat turn, with tokens/s")
    demo.add_argument("model", nargs="?", default="smollm2-135m-instruct",
                      help="model folder, .gguf file, short name or hub id")
    demo.add_argument("--max-new-tokens", type=int, default=96, help="most tokens to generate")
    demo.set_defaults(handler=demo_command)
