"""Decode and prefill speed: zenlm vs llama.cpp vs transformers, side by side in one run.

Every peer runs the same GGUF weights (SmolLM2-135M-Instruct, Q4_1), the same chat
prompt and greedy decoding, in its own subprocess (so that memory and thread pools
do not mix), one after another, for several rounds; the table reports each peer's
median and the ratios to llama.cpp (decode) and transformers bf16 (prefill). Every peer's
512-token prefill is the median of three timed runs after a warm-up.

    .venv/bin/python benchmarks/decode.py [--rounds 3] [--new-tokens 128] [--threads 2]
        [--cpu avx2 --llamacpp-path DIR] [--hf-dtype float32|bfloat16] [--modes auto,...]

Modes: zenlm's --quantize modes, with "+compile" (torch.compile the decode step) and/or
"+fused" (int4 decodes through the fused C++ step, the default) or "+unfused" (the eager
forward), e.g. `--modes auto+fused,auto+unfused` for the fused step's before and after.

transformers runs a Hugging Face folder of the same weights (dequantized to float32,
written once by zenlm's own exporter) in --hf-dtype (default: bfloat16 where the CPU has
it natively, its fastest mode there; float32 elsewhere). Its prefill computes the last
position's logits only (`logits_to_keep=1`), as zenlm's does: equal work.

`--cpu LEVEL` measures a narrower CPU on this one: zenlm runs with ZENLM_CPU=LEVEL,
transformers with PyTorch's kernels narrowed the same way (zenlm.cpu), and llama.cpp
from `--llamacpp-path`, a llama-cpp-python built for that level, e.g. for avx2:

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
      -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF" \
      .venv/bin/pip install --no-deps --target /tmp/llama-avx2 llama-cpp-python==0.3.36
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = "smollm2-135m-instruct"
LLAMA = "llama.cpp Q4_1"
ZENLM_MODES = ("auto", "auto+compile", "none", "bf16", "int8", "int4", "int4+compile")
#: A mode's suffixes: "+compile" (torch.compile the decode step), "+fused" (int4 decodes
#: through the fused C++ step: ZENLM_FUSED_STEP=1, the default), "+unfused" (the eager
#: forward, ZENLM_FUSED_STEP=0), e.g. "auto+fused,auto+unfused".
SUFFIXES = ("compile", "fused", "unfused")
PEER_SCRIPT = r'''
import json, random, resource, statistics, sys, time
PREFILL_RUNS = 3  # timed prefills after a warm-up, as zenlm bench: the median counts
kind, path, n_new, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dtype_name = sys.argv[5] if len(sys.argv) > 5 else "bfloat16"
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHAT = [{"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is the capital of France? Explain in detail."}]
random.seed(0)
long = [random.randint(100, 40000) for _ in range(512)]
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if kind == "llamacpp":
    from llama_cpp import Llama
    t0 = time.perf_counter()
    llm = Llama(model_path=path, n_ctx=2048, n_batch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - t0
    prompt = ("<|im_start|>system\n" + CHAT[0]["content"] + "<|im_end|>\n<|im_start|>user\n"
              + CHAT[1]["content"] + "<|im_end|>\n<|im_start|>assistant\n")
    toks = llm.tokenize(prompt.encode(), special=True)
    def greedy(n):
        llm.reset(); llm.eval(toks); out = []; t0 = time.perf_counter()
        for _ in range(n):
            tok = llm.sample(temp=0.0); out.append(tok); llm.eval([tok])
        return out, time.perf_counter() - t0
    greedy(8)
    out, dt = greedy(n_new)
    decode = len(out) / dt
    def prefill_s():
        llm.reset(); t0 = time.perf_counter(); llm.eval(long); return time.perf_counter() - t0
    prefill = 512 / statistics.median([prefill_s() for _ in range(PREFILL_RUNS + 1)][1:])
    text = llm.detokenize(out).decode(errors="replace")
elif kind == "transformers":
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(path)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype_name)).eval()
    load_s = time.perf_counter() - t0
    ids = tok.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt")
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=8, do_sample=False)
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
        decode = (out.shape[1] - ids.shape[1]) / (time.perf_counter() - t0)
        x = torch.tensor([long])
        def prefill_s():
            t0 = time.perf_counter(); model(x, logits_to_keep=1); return time.perf_counter() - t0
        prefill = 512 / statistics.median([prefill_s() for _ in range(PREFILL_RUNS + 1)][1:])
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
print(json.dumps({"load_s": load_s, "decode_tokens_per_s": decode,
                  "prefill_tokens_per_s": prefill, "peak_rss_mb": peak_mb(), "text": text[:80]}))
'''


def run(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run one measurement subprocess; its last stdout line is a JSON object."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peer_envs(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """Each kind of peer's environment for `--cpu` (empty: this CPU as it is)."""
    if not args.cpu:
        return {"zenlm": {}, "transformers": {}, "llamacpp": {}}
    from zenlm.cpu import TORCH_ENV

    llama = {"PYTHONPATH": args.llamacpp_path} if args.llamacpp_path else {}
    return {"zenlm": {"ZENLM_CPU": args.cpu}, "transformers": dict(TORCH_ENV[args.cpu]),
            "llamacpp": llama}


def zenlm_cmd(mode: str, args: argparse.Namespace) -> list[str]:
    """The real CLI: `zenlm bench MODEL --quantize MODE [--compile] --json`."""
    zenlm = str(Path(sys.executable).parent / "zenlm")
    quantize, *suffixes = mode.split("+")
    unknown = set(suffixes) - set(SUFFIXES)
    if unknown:
        raise SystemExit(f"mode {mode!r}: unknown suffix {sorted(unknown)}; valid: {SUFFIXES}")
    return [zenlm, "bench", MODEL, "--quantize", quantize, "--new-tokens", str(args.new_tokens),
            "--threads", str(args.threads), "--json",
            *(["--compile"] if "compile" in suffixes else [])]


def zenlm_env(mode: str, base: dict[str, str]) -> dict[str, str]:
    """A zenlm peer's environment: `base`, ZENLM_FUSED_STEP=1 for "+fused", 0 for "+unfused"."""
    parts = mode.split("+")
    if "fused" in parts or "unfused" in parts:
        return {**base, "ZENLM_FUSED_STEP": "1" if "fused" in parts else "0"}
    return dict(base)


def hf_folder(gguf: Path, out: Path) -> Path:
    """A Hugging Face folder of the GGUF's weights (float32), made by zenlm's exporter."""
    import zenlm
    from zenlm.io.hf import save_hf_model

    lm = zenlm.load(gguf, quantize=None)
    save_hf_model(lm.model, out, tokenizer=lm.tokenizer)
    return out


def main() -> None:
    """Measure every peer for several rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default=",".join(ZENLM_MODES))
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--cpu", default="", help="measure as this zenlm.cpu level (narrower)")
    parser.add_argument("--llamacpp-path", default="",
                        help="a llama-cpp-python built for --cpu's level (see above)")
    parser.add_argument("--hf-dtype", default="", choices=["", "float32", "bfloat16"])
    args = parser.parse_args()

    from zenlm.cpu import cpu_info, forced_level
    from zenlm.io.resolve import resolve_model

    info = cpu_info()
    level = forced_level(args.cpu, info.detected)
    hf_dtype = args.hf_dtype or ("bfloat16" if level == "avx512_bf16" else "float32")
    print(f"CPU: {info.model}, features {' '.join(info.features)}; measured as level {level}"
          f"{' (forced)' if level != info.detected else ''}; llama.cpp from "
          f"{args.llamacpp_path or 'the venv (built native)'}", flush=True)
    gguf = resolve_model(MODEL)
    envs = peer_envs(args)
    peers: dict[str, tuple[list[str], dict]] = {
        f"zenlm {m}": (zenlm_cmd(m, args), zenlm_env(m, envs["zenlm"]))
        for m in args.modes.split(",")
    }
    common = [str(args.new_tokens), str(args.threads)]
    peers[LLAMA] = ([sys.executable, "-c", PEER_SCRIPT, "llamacpp", str(gguf), *common],
                    envs["llamacpp"])
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_transformers:
            folder = hf_folder(gguf, Path(tmp) / "smollm2")
            peers[f"transformers {hf_dtype}"] = (
                [sys.executable, "-c", PEER_SCRIPT, "transformers", str(folder), *common,
                 hf_dtype], envs["transformers"])
        results: dict[str, list[dict]] = {name: [] for name in peers}
        for round_index in range(args.rounds):
            # Every other round in reverse order, so that a slow spell of the shared
            # machine at one end of a round does not always land on the same peer.
            order = list(peers) if round_index % 2 == 0 else list(reversed(peers))
            for name in order:
                results[name].append(run(*peers[name]))
                r = results[name][-1]
                print(f"round {round_index + 1} {name:18s} decode {r['decode_tokens_per_s']:7.1f} "
                      f"prefill {r['prefill_tokens_per_s']:7.0f}", flush=True)
    print_table(results)


def print_table(results: dict[str, list[dict]]) -> None:
    """Medians per peer, with ratios to llama.cpp (decode) and transformers (prefill).

    "Same round" ratios divide each round's figure by the reference's figure of that
    round before taking the median: on a shared machine they cancel slow spells that
    hit both, which ratios of medians do not.
    """
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def same_round(name: str, reference: str, key: str) -> float:
        if reference not in results:
            return float("nan")
        return statistics.median(r[key] / ref[key] for r, ref in
                                 zip(results[name], results[reference], strict=True))

    print("\n| peer | decode tok/s | best round | x llama.cpp, same round (median) "
          "| prefill tok/s (512) | x transformers, same round (median) | load s "
          "| peak RSS MB | RSS while generating MB | limit 1.5 x weights + 250 MB (issue 12) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in results:
        generating = limit = "-"  # only zenlm measures RSS while generating
        if "generate_peak_rss_mb" in results[name][0]:
            generating = f"{median(name, 'generate_peak_rss_mb'):.0f}"
            limit = f"{1.5 * median(name, 'weights_mb') + 250:.0f}"
        best = max(r["decode_tokens_per_s"] for r in results[name])
        decode_ratio = same_round(name, LLAMA, "decode_tokens_per_s")
        hf = next((peer for peer in results if peer.startswith("transformers")), "")
        prefill_ratio = same_round(name, hf, "prefill_tokens_per_s")
        print(f"| {name} | {median(name, 'decode_tokens_per_s'):.1f} | {best:.1f} "
              f"| {decode_ratio:.2f} | {median(name, 'prefill_tokens_per_s'):.0f} "
              f"| {prefill_ratio:.2f} | {median(name, 'load_s'):.2f} "
              f"| {median(name, 'peak_rss_mb'):.0f} | {generating} | {limit} |")


if __name__ == "__main__":
    main()
