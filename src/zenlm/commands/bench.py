"""`zenlm bench`: speed and memory of a model on this machine."""

from __future__ import annotations

import argparse
import json

from zenlm.quant import QUANTIZE_MODES


def bench_command(
    model: str,
    *,
    quantize: str = "auto",
    prompt_tokens: int = 512,
    new_tokens: int = 128,
    threads: int | None = None,
    compile: bool = False,
    as_json: bool = False,
) -> int:
    """Measure load time, decode and prefill tokens/s and peak RSS, and print them."""
    from zenlm.bench import measure

    if new_tokens < 2 or prompt_tokens < 1:
        raise ValueError(
            f"--new-tokens must be >= 2 and --prompt-tokens >= 1, got {new_tokens}, {prompt_tokens}"
        )
    result = measure(model, quantize=quantize, new_tokens=new_tokens,
                     prompt_tokens=prompt_tokens, threads=threads, compile=compile)
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    mode = f"{result.quantize}, compiled" if compile else result.quantize
    print(f"{result.model} [{mode}, {result.threads} threads, CPU level "
          f"{result.cpu['level']}: {' '.join(result.cpu['features'])}]")
    print(f"  load      {result.load_s:.2f} s")
    print(f"  decode    {result.decode_tokens_per_s:.1f} tokens/s "
          f"({result.new_tokens} new after a {result.prompt_tokens}-token chat prompt)")
    print(f"  prefill   {result.prefill_tokens_per_s:.0f} tokens/s ({prompt_tokens} tokens)")
    print(f"  weights   {result.weights_mb:.0f} MB; peak RSS {result.peak_rss_mb:.0f} MB "
          f"(while generating {result.generate_peak_rss_mb:.0f} MB)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `bench`."""
    bench = commands.add_parser("bench", help="measure decode/prefill speed and memory")
    bench.add_argument("model", help="model folder, .gguf file, short name or hub id")
    bench.add_argument("--quantize", choices=QUANTIZE_MODES, default="auto",
                       help="auto: the fastest mode on this CPU (see `zenlm info`)")
    bench.add_argument("--prompt-tokens", type=int, default=512,
                       help="length of the prompt whose prefill is timed")
    bench.add_argument("--new-tokens", type=int, default=128,
                       help="tokens decoded for the decode figure")
    bench.add_argument("--threads", type=int, default=None,
                       help="PyTorch threads (default: PyTorch's choice, one per core)")
    bench.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    bench.add_argument("--json", action="store_true", dest="as_json",
                       help="print one JSON object with the figures and the CPU's features")
    bench.set_defaults(handler=bench_command)
