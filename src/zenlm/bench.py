"""Measure a model's speed and memory: load time, prefill and decode tokens/s, RSS.

Decoding as the peers' scripts in ../shared/anchors measure it: a warm-up, then greedy
decoding of the SmolLM chat prompt (decode time excludes the prompt's prefill). The
512-token prefill of random token ids is the median of three runs after a warm-up (the
anchors time one run; benchmarks/decode.py gives every peer the same three).
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from zenlm.api import LM, load
from zenlm.cpu import cpu_info
from zenlm.generate import GenerationConfig, generate
from zenlm.quant.auto import chosen_mode

CHAT = [
    {"role": "system",
     "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
    {"role": "user", "content": "What is the capital of France? Explain in detail."},
]


@dataclass
class BenchResult:
    """What `zenlm bench` reports (all rates in tokens per second)."""

    model: str
    quantize: str
    compiled: bool
    threads: int
    load_s: float
    prompt_tokens: int
    new_tokens: int
    decode_tokens_per_s: float
    prefill_tokens: int
    prefill_tokens_per_s: float
    weights_mb: float
    peak_rss_mb: float  # the process's high-water mark, loading included
    generate_peak_rss_mb: float  # the highest RSS sampled while generating
    text: str
    cpu: dict = field(default_factory=lambda: cpu_info().summary())  # what the figures ran on

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return asdict(self)


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (or its peak, field="VmHWM") in MB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def weights_mb(model: torch.nn.Module) -> float:
    """Bytes of parameters and buffers, each storage counted once (tied weights)."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total / 2**20


class _PeakRss:
    """The peak RSS over a `with` block (`peak`, MB), and the peak before it (`before`).

    Resets the kernel's high-water mark on entry (writing 5 to /proc/self/clear_refs)
    and reads it on exit: exact, and no sampling thread waking every few milliseconds
    on the cores the measured threads need. NaN where the reset is not possible.
    """

    def __enter__(self) -> _PeakRss:
        self.before = rss_mb("VmHWM")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._reset = True
        except OSError:
            self._reset = False
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = rss_mb("VmHWM") if self._reset else float("nan")


def chat_prompt(lm: LM) -> list[int]:
    """The peers' benchmark prompt, through the model's chat template when it has one."""
    if lm.tokenizer.chat_template:
        return lm.encode_chat(CHAT)
    return lm.encode_prompt(CHAT[1]["content"])


def measure(
    model: str, *, quantize: str = "auto", new_tokens: int = 128, prompt_tokens: int = 512,
    threads: int | None = None, compile: bool = False,
) -> BenchResult:
    """Load `model` in `quantize` mode and measure it (see the module docstring)."""
    if threads:
        torch.set_num_threads(threads)
    quantize = chosen_mode(quantize) or "none"  # report the mode that ran, not "auto"
    lm = load(model, quantize=quantize, compile=compile)
    prompt = chat_prompt(lm)
    config = GenerationConfig(max_new_tokens=new_tokens, stop_token_ids=())
    # Warm-up (and, with compile, compilation): long enough to see a few cache lengths.
    generate(lm.model, prompt, GenerationConfig(max_new_tokens=16, stop_token_ids=()))
    with _PeakRss() as generating:
        result = generate(lm.model, prompt, config)
    prefill_s = prefill_seconds(lm, prompt_tokens)
    return BenchResult(
        model=lm.source, quantize=quantize, compiled=compile, threads=torch.get_num_threads(),
        load_s=round(lm.load_s, 3), prompt_tokens=len(prompt),
        new_tokens=len(result.token_ids),
        decode_tokens_per_s=round(result.decode_tokens_per_s, 2),
        prefill_tokens=prompt_tokens,
        prefill_tokens_per_s=round(prompt_tokens / prefill_s, 1),
        weights_mb=round(weights_mb(lm.model), 3),  # tiny test models hold < 0.1 MB
        peak_rss_mb=round(max(generating.before, rss_mb("VmHWM")), 1),
        generate_peak_rss_mb=round(generating.peak, 1),
        text=lm.tokenizer.decode(result.token_ids, skip_special_tokens=True)[:200],
    )


@torch.inference_mode()
def prefill_seconds(lm: LM, n: int, runs: int = 3) -> float:
    """Seconds for one prefill of n random tokens into a fresh cache.

    The median of `runs` timed runs after one warm-up: a single run on a shared CPU
    spreads by tens of percent.
    """
    rng = random.Random(0)
    high = min(40000, lm.config.vocab_size - 1)
    ids = torch.tensor([[rng.randint(100, high) for _ in range(n)]])
    timings = []
    for _ in range(runs + 1):
        cache = lm.model.new_cache(1, n)
        start = time.perf_counter()
        hidden = lm.model.hidden_states(ids, cache=cache)
        lm.model.lm_head(hidden[:, -1])  # a prefill needs the last position's logits only
        timings.append(time.perf_counter() - start)
    return statistics.median(timings[1:])
