"""Sampling from a causal LM: max length, several sequences, temperature, top-k, top-p.

The classic version of this program decodes `argmax(logits)` of one forward pass and
reads it as the whole answer: one token, always the same. Generation is a loop
(prefill the prompt, then one token at a time from a KV cache) and sampling draws each
token from the temperature-scaled, top-k / top-p truncated distribution. zenlm's
`LM.complete` runs that loop for every sequence at once.

    python examples/sampling.py
    python examples/sampling.py --prompt "从前有座山，" --num-return-sequences 2

Prints each sampled sequence with its token count, then the greedy continuation
(temperature 0: the same text on every run), then the reproducibility check.
"""

from __future__ import annotations

import argparse

import zenlm


def sample(lm: zenlm.LM, prompt: str, args: argparse.Namespace) -> list[str]:
    """`args.num_return_sequences` sampled continuations of `prompt`."""
    completions = lm.complete(
        [prompt], max_new_tokens=args.max_new_tokens,
        num_return_sequences=args.num_return_sequences, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    for number, completion in enumerate(completions, 1):
        tokens = len(completion.result.token_ids)
        print(f"[{number}] ({tokens} tokens) {prompt}{completion.text}")
    return [completion.text for completion in completions]


def main(argv: list[str] | None = None) -> None:
    """Sample, decode greedily, and check that a seed reproduces its samples."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompt", default="Once upon a time, in a small village,")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--num-return-sequences", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    lm = zenlm.load(args.model)
    print(f"sampling (temperature {args.temperature}, top-k {args.top_k}, "
          f"top-p {args.top_p}, seed {args.seed}):")
    first = sample(lm, args.prompt, args)
    greedy = lm.generate(args.prompt, max_new_tokens=args.max_new_tokens, temperature=0)
    print(f"greedy: {args.prompt}{greedy}")
    again = [c.text for c in lm.complete(
        [args.prompt], max_new_tokens=args.max_new_tokens,
        num_return_sequences=args.num_return_sequences, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed)]
    print(f"same seed, same samples: {again == first}")


if __name__ == "__main__":
    main()
