"""Where an int4 model's resident memory goes, stage by stage, while it generates.

One fresh process (as `zenlm bench` runs): Python, `import torch`, `import zenlm` with the
CLI's parser built (every `zenlm` command builds it), `zenlm.load(MODEL, quantize=MODE)`,
a 16-token warm-up, then 128 greedy tokens from the SmolLM chat prompt with the kernel's
high-water mark reset (/proc/self/clear_refs) so that VmHWM is the peak while generating.
RSS is the OS's figure (/proc/self/status, MiB as everywhere in docs/benchmarks.md).
"Weights" are the model's parameters and buffers, each storage once, by kind.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/int4_memory.py [--threads 1]
        [--quantize auto] [--cpu avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r'''
import json, sys
from pathlib import Path

def status():
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}

model, mode, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
stages = [("python", status())]
import torch
stages.append(("import torch", status()))
torch.set_num_threads(threads)
import zenlm
from zenlm.cli import build_parser
build_parser()
stages.append(("import zenlm, CLI parser built", status()))
from zenlm.bench import chat_prompt
from zenlm.generate import GenerationConfig, generate
lm = zenlm.load(model, quantize=mode)
stages.append(("zenlm.load", status()))
prompt = chat_prompt(lm)
generate(lm.model, prompt, GenerationConfig(max_new_tokens=16, stop_token_ids=()))
stages.append(("16-token warm-up", status()))
Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
result = generate(lm.model, prompt, GenerationConfig(max_new_tokens=128, stop_token_ids=()))
stages.append(("128 tokens generated", status()))
kinds, seen = {}, set()
for tensor in [*lm.model.parameters(), *lm.model.buffers()]:
    storage = tensor.untyped_storage()
    if storage.data_ptr() in seen:
        continue
    seen.add(storage.data_ptr())
    kind = str(tensor.dtype).removeprefix("torch.")
    kinds[kind] = kinds.get(kind, 0) + storage.nbytes() / 2**20
print(json.dumps({"stages": stages, "weights": kinds, "decode": result.decode_tokens_per_s,
                  "modules": len(sys.modules), "sympy": "sympy" in sys.modules}))
'''


def main() -> None:
    """Run the measuring process and print its stages and the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quantize", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", default="", help="a narrower zenlm.cpu level (ZENLM_CPU)")
    args = parser.parse_args()
    if args.cpu:
        os.environ["ZENLM_CPU"] = args.cpu  # the child's level, and the one printed
    from zenlm.cpu import cpu_info

    out = subprocess.run(
        [sys.executable, "-c", CHILD, args.model, args.quantize, str(args.threads)],
        capture_output=True, text=True, check=True, timeout=900,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])

    print(cpu_info().describe())
    print("| stage | RSS MiB | anon | file-backed | change |")
    print("| --- | --- | --- | --- | --- |")
    previous = 0.0
    for name, s in figures["stages"]:
        print(f"| {name} | {s['VmRSS']:.0f} | {s['RssAnon']:.0f} | {s['RssFile']:.0f} "
              f"| {s['VmRSS'] - previous:+.0f} |")
        previous = s["VmRSS"]
    weights = sum(figures["weights"].values())
    peak = figures["stages"][-1][1]["VmHWM"]
    parts = ", ".join(f"{kind} {mib:.2f}" for kind, mib in sorted(figures["weights"].items()))
    print(f"\nweights {weights:.1f} MiB ({parts}); peak while generating {peak:.1f} MiB; "
          f"target 1.5 x weights + 250 = {1.5 * weights + 250:.1f} MiB; decode "
          f"{figures['decode']:.1f} tok/s; {figures['modules']} modules imported"
          f"{', sympy among them' if figures['sympy'] else ''}")


if __name__ == "__main__":
    main()
