"""`zenlm info`: this CPU, the level zenlm runs at, and the modes `auto` picks here."""

from __future__ import annotations

import argparse
import json


def info_command(*, as_json: bool = False) -> int:
    """Print the CPU's features, zenlm's level and kernel, and what `auto` means here."""
    import torch

    from zenlm import kernels
    from zenlm.cpu import cpu_info
    from zenlm.quant.auto import auto_mode, resolve_train_dtype

    cpu = cpu_info()
    report = {
        "cpu": cpu.summary(),
        "native_bf16": cpu.native_bf16,
        "int4_kernel": kernels.load(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "auto_inference_mode": auto_mode(),
        "auto_train_dtype": resolve_train_dtype("auto"),
    }
    if as_json:
        print(json.dumps(report))
        return 0
    print(cpu.describe())
    print(f"torch     {report['torch']} (kernels: {report['torch_cpu_capability']}, "
          f"{report['threads']} threads)")
    print(f"int4      {_kernel_line(report['int4_kernel'])}")
    print(f"auto      inference: {report['auto_inference_mode']}; training: "
          f"{report['auto_train_dtype']}")
    print(f"          {_why(cpu.native_bf16, report['int4_kernel'])}")
    return 0


def _kernel_line(path: str | None) -> str:
    if path is None:
        return "PyTorch's int4 kernel (zenlm's own needs AVX2 and a C++ compiler)"
    return f"zenlm's kernel, {path} path"


def _why(native_bf16: bool, kernel: str | None) -> str:
    prompts = ("long prompts in bfloat16 (native here)" if native_bf16 else
               "prompts through the kernel too (bfloat16 is emulated here)")
    if kernel is not None:
        return (f"zenlm's int4 kernel: decoding reads 4-bit weights directly, {prompts}; "
                "perplexity within 3% of float32")
    if native_bf16:
        return "no int4 kernel of zenlm's; bfloat16 is native here: bf16 matmuls"
    return "no native bfloat16 and no int4 kernel of zenlm's: float32 is the fastest safe mode"


def register(commands: argparse._SubParsersAction) -> None:
    """Add `info`."""
    info = commands.add_parser("info", help="this CPU's features and the modes auto picks")
    info.add_argument("--json", action="store_true", dest="as_json",
                      help="print one JSON object instead of text")
    info.set_defaults(handler=info_command)
