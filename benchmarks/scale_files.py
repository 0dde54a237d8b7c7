"""Make benchmarks/scale.py's 1.1B-shape GGUF files through the production path, once.

    .venv/bin/python benchmarks/scale_files.py FOLDER [LAYERS] [THREADS]

build_model (random weights, the config's init: normal(0, 0.02), unit norms) with a
byte-level BPE tokenizer trained on tinyshakespeare -> save_hf_model -> `zenlm export
--to gguf --type f16` and `--type q8_0` (the real CLI) -> llama.cpp's own quantizer,
f16 -> Q4_1 with its default per-tensor choices. Writes FOLDER/model-{f16,q8_0,q4_1}.gguf;
files already there are kept, so an interrupted run resumes. Every file is written under a
temporary name and renamed when complete, so a half-written file is never reused.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare/input.txt")
#: TinyLlama-1.1B's shape (its config.json).
TINYLLAMA = dict(vocab_size=32000, d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4,
                 d_ff=5632, max_seq_len=2048, norm_eps=1e-5, rope_theta=10000.0,
                 tie_embeddings=False)
TOKENIZER_VOCAB = 8192  # what tinyshakespeare supports; the exporter pads to 32000


def make_files(folder: Path, layers: int = TINYLLAMA["n_layers"], threads: int = 2) -> None:
    """Write the f16, Q8_0 and Q4_1 files of the shape (with `layers` blocks) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    hf = folder / "hf"
    f16, q8_0, q4_1 = (folder / f"model-{t}.gguf" for t in ("f16", "q8_0", "q4_1"))
    for path, gguf_type in ((f16, "f16"), (q8_0, "q8_0")):
        if not path.is_file():
            if not (hf / "config.json").is_file():
                write_hf_folder(hf, layers)
            export_gguf(hf, path, gguf_type)
    if not q4_1.is_file():
        quantize_q4_1(f16, q4_1, threads)
    shutil.rmtree(hf, ignore_errors=True)  # 4.4 GB of float32 nobody reads again


def write_hf_folder(out: Path, layers: int) -> None:
    """The random model and its tokenizer as a Hugging Face folder (zenlm's exporter)."""
    import torch

    from zenlm.config import ModelConfig
    from zenlm.io.hf import save_hf_model
    from zenlm.models import build_model
    from zenlm.tokenizer_train import train_tokenizer

    print(f"training a {TOKENIZER_VOCAB}-token BPE tokenizer on {SHAKESPEARE}", flush=True)
    texts = SHAKESPEARE.read_text(encoding="utf-8").split("\n\n")
    tokenizer = train_tokenizer(texts, kind="bpe", vocab_size=TOKENIZER_VOCAB)
    config = ModelConfig(**{**TINYLLAMA, "n_layers": layers},
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    print(f"building a random {layers}-layer model of TinyLlama-1.1B's shape", flush=True)
    torch.manual_seed(0)
    model = build_model(config).eval()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_hf_model(model, partial, tokenizer=tokenizer)
    partial.rename(out)


def export_gguf(hf: Path, out: Path, gguf_type: str) -> None:
    """`zenlm export HF --to gguf --type TYPE --out OUT`, the CLI a user runs."""
    zenlm = Path(sys.executable).parent / "zenlm"
    partial = out.with_name(out.stem + ".partial.gguf")
    print(f"zenlm export --to gguf --type {gguf_type} -> {out}", flush=True)
    subprocess.run([str(zenlm), "export", str(hf), "--to", "gguf", "--type", gguf_type,
                    "--out", str(partial)], check=True)
    partial.rename(out)


def quantize_q4_1(f16: Path, out: Path, threads: int) -> None:
    """llama.cpp's quantizer (llama-cpp-python's binding of llama_model_quantize)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1
    params.nthread = threads
    partial = out.with_name(out.stem + ".partial.gguf")
    print(f"llama_model_quantize {f16} -> {out} (Q4_1)", flush=True)
    status = llama_cpp.llama_model_quantize(str(f16).encode(), str(partial).encode(),
                                            ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama_model_quantize({f16}) returned {status}")
    partial.rename(out)


if __name__ == "__main__":
    make_files(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:4]))
