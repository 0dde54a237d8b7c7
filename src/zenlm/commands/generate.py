"""`zenlm generate` and `zenlm demo`."""

from __future__ import annotations

import argparse
import json

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
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    dtype: str | None = None,
    quantize: str | None = "auto",
    compile: bool = False,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    stop: list[str] | None = None,
    num_beams: int = 1,
    as_json: bool = False,
) -> int:
    """Generate a continuation of `prompt` (or a chat reply to it) and print it."""
    import zenlm

    lm = zenlm.load(model, dtype=dtype, quantize=quantize, compile=compile)
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        prompt_ids = lm.encode_chat(messages)
    else:
        prompt_ids = lm.encode_prompt(prompt)
    completion = lm.complete(
        [prompt_ids], max_new_tokens=max_new_tokens, temperature=temperature,
        top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
        seed=seed, stop=stop or (), num_beams=num_beams,
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
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    gen.add_argument("--system", default=None, help="system message (with --chat)")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--min-p", type=float, default=0.0)
    gen.add_argument("--repetition-penalty", type=float, default=1.0)
    gen.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    gen.add_argument("--num-beams", type=int, default=1)
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    gen.add_argument("--quantize", choices=QUANTIZE_MODES, default="auto",
                     help="auto: the fastest mode on this CPU (see `zenlm info`)")
    gen.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    gen.add_argument("--json", action="store_true", dest="as_json")
    gen.set_defaults(handler=generate_command)

    demo = commands.add_parser("demo", help="one scripted chat turn, with tokens/s")
    demo.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    demo.add_argument("--max-new-tokens", type=int, default=96)
    demo.set_defaults(handler=demo_command)
