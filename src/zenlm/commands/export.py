"""`zenlm export MODEL --to hf|gguf --out PATH [--type f16|q8_0]`."""

from __future__ import annotations

import argparse


def export_command(model: str, to: str, out: str, type: str = "f16") -> int:  # noqa: A002
    """Write a trained model (run, checkpoint or HF folder) as an HF folder or a GGUF file."""
    from zenlm.models.heads import MaskedLM
    from zenlm.train.export import load_trained, save_trained

    network, tokenizer = load_trained(model)
    if to == "hf":
        print(save_trained(network, out, tokenizer=tokenizer))
        return 0
    if isinstance(network, MaskedLM):
        raise ValueError(f"{model}: a masked LM exports to hf only (GGUF holds decoders)")
    if tokenizer is None:
        raise ValueError(f"{model}: GGUF export needs the model's tokenizer files")
    from zenlm.io.gguf import export_gguf

    print(export_gguf(network, tokenizer, out, type=type))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `export`."""
    parser = commands.add_parser("export", help="write a trained model as HF folder or GGUF")
    parser.add_argument("model", help="a pretrain run folder, a checkpoint folder or an HF folder")
    parser.add_argument("--to", choices=["hf", "gguf"], required=True,
                        help="hf: a Hugging Face folder; gguf: one GGUF file")
    parser.add_argument("--out", required=True, help="output folder (hf) or .gguf file")
    parser.add_argument("--type", choices=["f16", "q8_0"], default="f16",
                        help="GGUF matrix type (norms stay float32)")
    parser.set_defaults(handler=export_command)
