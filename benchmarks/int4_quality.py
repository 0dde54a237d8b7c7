"""Where int4's perplexity goes: zenlm fp32, int4 and its parts, and llama.cpp's Q4_1.

On the same 4 x 256 tokens of tinyshakespeare as tests/quant/test_quant.py, from the same
GGUF file: zenlm in float32 (the file's weights dequantized); zenlm int4 both ways it
computes: as a prompt (64+ rows: bfloat16 activations times the dequantized weights) and
as decoding feeds it (8 tokens at a time through the KV cache: zenlm's kernel, int8
activation blocks), the latter also with the kernel switched off (float activations
times the same 4-bit weights) in every layer or only in the head; and llama.cpp's own
evaluation of the file (llama-cpp-python, logits of every position).

    .venv/bin/python benchmarks/int4_quality.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import zenlm
from zenlm.cpu import cpu_info
from zenlm.io.resolve import resolve_model
from zenlm.quant import Int4Linear

MODEL = "smollm2-135m-instruct"


def perplexity(rows: torch.Tensor, logits_of: Callable[[list[int]], torch.Tensor]) -> float:
    """exp(mean next-token NLL) over rows (R, T), logits_of(ids) giving (T, V)."""
    nll, count = 0.0, 0
    for row in rows:
        logits = torch.as_tensor(logits_of(row.tolist())).double()[:-1]
        nll += torch.nn.functional.cross_entropy(logits, row[1:], reduction="sum").item()
        count += len(row) - 1
    return math.exp(nll / count)


def zenlm_logits(lm: zenlm.LM, chunk: int | None = None) -> Callable[[list[int]], torch.Tensor]:
    """Logits (T, V) of one sequence through `lm`: as one prompt, or `chunk` tokens at a
    time through the KV cache (as decoding feeds them: int4 layers below PROMPT_ROWS
    rows take zenlm's kernel, int8 activation blocks; prompts take bfloat16)."""
    def logits(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            if chunk is None:
                return lm.model(torch.tensor([ids]))[0]
            cache = lm.model.new_cache(1, len(ids))
            return torch.cat([lm.model(torch.tensor([ids[start:start + chunk]]), cache=cache)[0]
                              for start in range(0, len(ids), chunk)])
    return logits


def use_kernel(model: torch.nn.Module, on: bool, head: bool) -> None:
    """Switch zenlm's int4 kernel in every int4 layer but the head, and in the head."""
    for module in model.modules():
        if isinstance(module, Int4Linear):
            module.use_kernel = head if module is model.lm_head else on


def main() -> None:
    """Print each configuration's perplexity and its change from float32."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("ZENLM_DATA", "../shared/data"))
    args = parser.parse_args()
    print(cpu_info().describe(), flush=True)  # what these figures ran on
    torch.set_num_threads(2)
    gguf = resolve_model(MODEL)
    text = (Path(args.data) / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    fp32 = zenlm.load(gguf)
    ids = fp32.tokenizer.encode(text[:20000], add_special_tokens=False)
    rows = torch.tensor(ids[: 4 * 256]).view(4, 256)

    results = {"zenlm fp32 (the file's weights, dequantized)": perplexity(rows, zenlm_logits(fp32))}
    int4 = zenlm.load(gguf, quantize="int4")
    results["zenlm int4, as a prompt (bfloat16 activations)"] = perplexity(
        rows, zenlm_logits(int4))
    for name, blocks, head in [
        ("zenlm int4, as decoding (8 tokens at a time: int8 activation blocks)", True, True),
        ("zenlm int4, as decoding, float activations everywhere (kernel off)", False, False),
        ("zenlm int4, as decoding, float activations in the head only", True, False),
    ]:
        use_kernel(int4.model, blocks, head)
        results[name] = perplexity(rows, zenlm_logits(int4, chunk=8))

    import llama_cpp

    llm = llama_cpp.Llama(str(gguf), n_ctx=512, logits_all=True, n_threads=2, verbose=False)

    def llama_logits(ids: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])

    results["llama.cpp Q4_1 (head Q8_0)"] = perplexity(rows, llama_logits)
    reference = next(iter(results.values()))
    print("| model | perplexity | vs fp32 |\n| --- | --- | --- |")
    for name, value in results.items():
        print(f"| {name} | {value:.3f} | {value / reference - 1:+.2%} |")


if __name__ == "__main__":
    main()
