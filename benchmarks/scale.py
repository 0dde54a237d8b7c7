"""How cost grows: long contexts and a 1.1B model, zenlm vs llama.cpp side by side in one run.

Two parts, each peer in its own subprocess, one after another for several rounds (every
other round in reverse order); the tables report medians and same-round ratios to llama.cpp:

- `smollm2-4k`: SmolLM2-135M-Instruct (the Q4_1 GGUF), 64 greedy tokens decoded after a
  prompt of 4,032 tokens of tinyshakespeare (../shared/data, or $ZENLM_DATA), i.e. 4,096
  tokens of context; each peer's prefill time too.
- `tinyllama`: a random-weight Llama of TinyLlama-1.1B's shape (22 layers, d_model 2048,
  32 query / 4 KV heads, FFN 5632, vocab 32000, untied head) written as GGUF through the
  production path and run by both from the same file: Q4_1 and Q8_0; 64 greedy tokens
  after a short prompt, and the load time.

    .venv/bin/python benchmarks/scale.py [--rounds 3] [--threads 2] [--only smollm2-4k|tinyllama]
        [--cpu avx2 --llamacpp-path DIR] [--work /tmp/zenlm-scale] [--no-compile]

zenlm runs in its default mode (`zenlm.load(path)`: quantize="auto"), and for SmolLM2 also
with compile=True. Both peers decode exactly 64 tokens (no stop token) from the same
prompt ids (the 1.1B part: random ids, its weights being random). `--cpu` and
`--llamacpp-path` work as in benchmarks/decode.py (zenlm gets ZENLM_CPU=LEVEL, llama.cpp is
imported from DIR, a llama-cpp-python built for that level).

The 1.1B files are made once by benchmarks/scale_files.py and kept in `--work` (outside
git; about 4 GB): build_model (the config's init, normal(0, 0.02)) with a byte-level BPE
tokenizer trained on tinyshakespeare -> save_hf_model -> `zenlm export --to gguf --type f16`
and `--type q8_0` (the real CLI) -> llama.cpp's own quantizer f16 -> Q4_1 (its default
per-tensor choices, as in a Q4_1 file from the hub: the output matrix becomes Q6_K). The
exporter pads the tokenizer's 8,192 tokens to the model's 32,000 with unused slots.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from scale_files import TINYLLAMA  # benchmarks/, this script's folder

SMOLLM2 = "smollm2-135m-instruct"
DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
NEW_TOKENS = 64
CONTEXT = 4096  # SmolLM2 part: prompt + new tokens
SHORT_PROMPT = 32  # tinyllama part

PEER_SCRIPT = r'''
import json, random, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
n_prompt, n_new, threads, compile_ = (int(a) for a in sys.argv[3:7])
def prompt_ids(vocab):  # the same ids for both peers of one model
    import os
    if os.environ.get("SCALE_PROMPT_IDS"):  # tokens of real text, tokenized by the parent
        return json.load(open(os.environ["SCALE_PROMPT_IDS"]))[:n_prompt]
    rng = random.Random(0)
    return [rng.randint(100, min(vocab, 40000) - 1) for _ in range(n_prompt)]
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if kind == "llamacpp":
    from llama_cpp import Llama
    t0 = time.perf_counter()
    llm = Llama(model_path=path, n_ctx=n_prompt + n_new, n_batch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - t0
    ids, mode = prompt_ids(llm.n_vocab()), "llama.cpp"
    def greedy():
        # As zenlm's generate times it: prefill = the prompt and the first token's
        # choice, decode = the other n_new - 1 tokens.
        llm.reset(); t0 = time.perf_counter(); llm.eval(ids)
        out = [llm.sample(temp=0.0)]; t1 = time.perf_counter()
        for _ in range(n_new - 1):
            llm.eval([out[-1]]); out.append(llm.sample(temp=0.0))
        return out, t1 - t0, (n_new - 1) / (time.perf_counter() - t1)
    greedy()  # warm-up: the same work once
    out, prefill_s, decode = greedy()
else:
    import torch
    import zenlm
    from zenlm.generate import GenerationConfig, generate
    from zenlm.quant.auto import chosen_mode
    torch.set_num_threads(threads)
    lm = zenlm.load(path, compile=bool(compile_))
    load_s, mode = lm.load_s, (chosen_mode("auto") or "none") + (" compiled" if compile_ else "")
    ids = prompt_ids(lm.config.vocab_size)
    config = GenerationConfig(max_new_tokens=n_new, stop_token_ids=())  # exactly n_new
    generate(lm.model, ids, config)  # warm-up (and compilation): the same work once
    result = generate(lm.model, ids, config)
    out, prefill_s, decode = result.token_ids, result.prefill_s, result.decode_tokens_per_s
print(json.dumps({"load_s": load_s, "prefill_s": prefill_s, "decode_tokens_per_s": decode,
                  "new_tokens": len(out), "prompt_tokens": len(ids), "mode": mode,
                  "peak_rss_mb": peak_mb(), "first_tokens": list(out[:8])}))
'''


def run(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run one measurement subprocess; its last stdout line is a JSON object."""
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                         timeout=3600)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peer_cmd(kind: str, path: Path, n_prompt: int, args: argparse.Namespace,
             compile_: bool = False) -> tuple[list[str], dict[str, str]]:
    """One peer's command line and environment (see `--cpu`, `--llamacpp-path`)."""
    env: dict[str, str] = {}
    if kind == "zenlm" and args.cpu:
        env["ZENLM_CPU"] = args.cpu
    if kind == "llamacpp" and args.llamacpp_path:
        env["PYTHONPATH"] = args.llamacpp_path
    cmd = [sys.executable, "-c", PEER_SCRIPT, kind, str(path), str(n_prompt), str(NEW_TOKENS),
           str(args.threads), str(int(compile_))]
    return cmd, env


Peers = dict[str, tuple[list[str], dict[str, str]]]


def measure(peers: Peers, rounds: int) -> dict[str, list[dict]]:
    """Every peer once per round; every other round in reverse order, so that a slow
    spell of the shared machine at one end of a round does not always hit the same peer."""
    results: dict[str, list[dict]] = {name: [] for name in peers}
    for round_index in range(rounds):
        order = list(peers) if round_index % 2 == 0 else list(reversed(peers))
        for name in order:
            r = run(*peers[name])
            if r["new_tokens"] != NEW_TOKENS:
                raise RuntimeError(f"{name} decoded {r['new_tokens']} tokens, not {NEW_TOKENS}")
            results[name].append(r)
            print(f"round {round_index + 1} {name:28s} decode {r['decode_tokens_per_s']:7.2f} "
                  f"tok/s  prefill {r['prefill_s']:6.2f} s ({r['prompt_tokens']} tokens)  "
                  f"load {r['load_s']:5.2f} s  [{r['mode']}]", flush=True)
    return results


def print_table(title: str, results: dict[str, list[dict]], reference: dict[str, str]) -> None:
    """One Markdown row per peer; `reference[name]` is the llama.cpp peer name is divided by."""
    print(f"\n{title}\n")
    print("| peer | runs as | decode tok/s (median) | best round | x llama.cpp, same round "
          "(median) | load s | prefill s | peak RSS MB | first greedy tokens = llama.cpp's |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rows in results.items():
        print(table_row(name, rows, results[reference[name]]))


def table_row(name: str, rows: list[dict], ref: list[dict]) -> str:
    """Medians of a peer's rounds, and its same-round ratio to `ref`'s rounds.

    Same-round ratios divide each round's figure by the reference's figure of that round
    before taking the median: on a shared machine they cancel slow spells that hit both.
    """
    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    ratio = statistics.median(r["decode_tokens_per_s"] / q["decode_tokens_per_s"]
                              for r, q in zip(rows, ref, strict=True))
    best = max(r["decode_tokens_per_s"] for r in rows)
    # A check that both ran the same model, not a speed figure: random weights (and
    # random prompt ids) give flat logits, so rounding differences may make greedy
    # choices part early; after real text they should agree for a while.
    agree = min(leading_matches(r["first_tokens"], q["first_tokens"])
                for r, q in zip(rows, ref, strict=True))
    return (f"| {name} | {rows[0]['mode']} | {median('decode_tokens_per_s'):.2f} | {best:.2f} "
            f"| {ratio:.2f} | {median('load_s'):.2f} | {median('prefill_s'):.2f} "
            f"| {median('peak_rss_mb'):.0f} | {agree} of {len(rows[0]['first_tokens'])} |")


def leading_matches(ours: list[int], theirs: list[int]) -> int:
    """How many tokens two greedy sequences share before they first differ."""
    for index, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return index
    return min(len(ours), len(theirs))


def smollm2_part(args: argparse.Namespace) -> None:
    """SmolLM2-135M at 4,096 tokens of context (or --context)."""
    from zenlm.io.resolve import resolve_model

    gguf = resolve_model(SMOLLM2)
    n_prompt = args.context - NEW_TOKENS
    os.environ["SCALE_PROMPT_IDS"] = text_prompt(gguf, n_prompt, Path(args.work))
    peers: Peers = {"zenlm auto": peer_cmd("zenlm", gguf, n_prompt, args)}
    if not args.no_compile:
        peers["zenlm auto+compile"] = peer_cmd("zenlm", gguf, n_prompt, args, compile_=True)
    peers["llama.cpp Q4_1"] = peer_cmd("llamacpp", gguf, n_prompt, args)
    results = measure(peers, args.rounds)
    print_table(f"SmolLM2-135M-Instruct Q4_1, {NEW_TOKENS} tokens decoded after {n_prompt} "
                f"({args.context} of context), {args.threads} threads",
                results, {name: "llama.cpp Q4_1" for name in peers})


def text_prompt(gguf: Path, n_prompt: int, work: Path) -> str:
    """A JSON file of the first `n_prompt` tokens of tinyshakespeare under the model's own
    tokenizer (both peers read the file: the same ids), so that the greedy tokens after
    it compare two readings of real text rather than of noise."""
    import zenlm

    text = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    ids = zenlm.load(str(gguf), quantize=None).tokenizer.encode(text[:20 * n_prompt])
    if len(ids) < n_prompt:
        raise SystemExit(f"tinyshakespeare gave {len(ids)} tokens, fewer than {n_prompt}")
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"smollm2-prompt-{n_prompt}.json"
    path.write_text(json.dumps(ids[:n_prompt]))
    return str(path)


def tinyllama_part(args: argparse.Namespace) -> None:
    """The 1.1B shape from the same Q4_1 and Q8_0 files."""
    files = tinyllama_files(args)
    peers: Peers = {}
    reference: dict[str, str] = {}
    for qtype, path in files.items():
        peers[f"zenlm auto ({qtype} file)"] = peer_cmd("zenlm", path, SHORT_PROMPT, args)
        peers[f"llama.cpp {qtype}"] = peer_cmd("llamacpp", path, SHORT_PROMPT, args)
        reference.update({f"zenlm auto ({qtype} file)": f"llama.cpp {qtype}",
                          f"llama.cpp {qtype}": f"llama.cpp {qtype}"})
    results = measure(peers, args.rounds)
    print_table(f"Random-weight Llama, TinyLlama-1.1B shape ({args.layers} layers), batch 1, "
                f"{NEW_TOKENS} tokens decoded after {SHORT_PROMPT}, {args.threads} threads",
                results, reference)


def tinyllama_files(args: argparse.Namespace) -> dict[str, Path]:
    """The Q4_1 and Q8_0 GGUF files of the 1.1B shape, made (in a subprocess) if missing."""
    folder = Path(args.work) / f"tinyllama-L{args.layers}"
    files = {"Q4_1": folder / "model-q4_1.gguf", "Q8_0": folder / "model-q8_0.gguf"}
    if not all(path.is_file() for path in files.values()):
        # In a process of its own: building holds ~4.4 GB of float32 weights, which the
        # measuring parent should not keep mapped.
        subprocess.run([sys.executable, str(Path(__file__).with_name("scale_files.py")),
                        str(folder), str(args.layers), str(args.threads)], check=True)
    for qtype, path in files.items():
        print(f"{qtype}: {path} ({path.stat().st_size / 2**20:.0f} MB; "
              f"{tensor_types(path)})", flush=True)
    return files


def tensor_types(path: Path) -> str:
    """How many tensors of each ggml type a GGUF file holds, e.g. `Q4_1 x154, F32 x45`."""
    import gguf

    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return ", ".join(f"{name} x{n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def main() -> None:
    """Print the CPU, then measure the parts asked for and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["smollm2-4k", "tinyllama"], default=None)
    parser.add_argument("--work", default="/tmp/zenlm-scale",
                        help="where the generated 1.1B-shape files are kept between runs")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip zenlm auto+compile in the SmolLM2 part")
    parser.add_argument("--cpu", default="", help="measure as this zenlm.cpu level (narrower)")
    parser.add_argument("--llamacpp-path", default="",
                        help="a llama-cpp-python built for --cpu's level (see decode.py)")
    # Reduced sizes to check the script end to end on a busy machine (not for figures).
    parser.add_argument("--context", type=int, default=CONTEXT, help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=TINYLLAMA["n_layers"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.context, args.layers = 1, 512, 2
    if args.context <= NEW_TOKENS:
        raise SystemExit(f"--context must exceed the {NEW_TOKENS} new tokens, got {args.context}")

    from zenlm.cpu import cpu_info, forced_level

    info = cpu_info()
    level = forced_level(args.cpu, info.detected)
    print(f"CPU: {info.model}, {info.cores} cores, features {' '.join(info.features)}; "
          f"measured as level {level}{' (forced)' if level != info.detected else ''}; "
          f"llama.cpp from {args.llamacpp_path or 'the venv (built native)'}", flush=True)
    if args.only in (None, "smollm2-4k"):
        smollm2_part(args)
    if args.only in (None, "tinyllama"):
        tinyllama_part(args)


if __name__ == "__main__":
    main()
