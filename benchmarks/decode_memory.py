"""RSS of a bf16 model as it generates, with the KV cache's key multiple at 64 and at 1.

oneDNN compiles a bfloat16 matmul primitive per shape and keeps it; a decode step's
attention has one more key each token. Each configuration runs in its own process:
load SmolLM2 in bf16 mode, warm up with 16 tokens, then generate 128, 256 and 384
tokens from the SmolLM chat prompt, printing VmRSS after each.

    .venv/bin/python benchmarks/decode_memory.py
"""

from __future__ import annotations

import subprocess
import sys

from zenlm.cpu import cpu_info

CHILD = """
import sys, torch
import zenlm
from zenlm.bench import chat_prompt, rss_mb
from zenlm.generate import GenerationConfig, generate
from zenlm.models.decoder import DecoderLM

multiple = int(sys.argv[1])
plain = DecoderLM.new_cache
def new_cache(self, batch, max_len):
    cache = plain(self, batch, max_len)
    cache.key_multiple = multiple
    return cache
DecoderLM.new_cache = new_cache
torch.set_num_threads(2)
lm = zenlm.load("smollm2-135m-instruct", quantize="bf16")
prompt = chat_prompt(lm)
generate(lm.model, prompt, GenerationConfig(max_new_tokens=16, stop_token_ids=()))
print(f"key multiple {multiple}: after warm-up {rss_mb():.0f} MB", flush=True)
for n in (128, 256, 384):
    result = generate(lm.model, prompt, GenerationConfig(max_new_tokens=n, stop_token_ids=()))
    print(f"key multiple {multiple}: after {n} tokens {rss_mb():.0f} MB "
          f"({result.decode_tokens_per_s:.1f} tok/s)", flush=True)
"""


def main() -> None:
    """Run one process per key multiple."""
    print(cpu_info().describe(), flush=True)  # what these figures ran on
    for multiple in (64, 1):
        subprocess.run([sys.executable, "-c", CHILD, str(multiple)], check=True)


if __name__ == "__main__":
    main()
