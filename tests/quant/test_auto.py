"""`auto`: the mode each CPU level gets, and one warning for a mode known to be slow there.

Each level runs in a fresh process with ZENLM_CPU forced (it must be set before torch is
imported), through the real CLI where there is one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from zenlm.cpu import LEVELS, cpu_info

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
ZENLM = [sys.executable, "-m", "zenlm.cli"]


def run(args: list[str], level: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, ZENLM_CPU=level)
    return subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def runnable(level: str) -> None:
    if LEVELS.index(level) > LEVELS.index(cpu_info().detected):
        pytest.skip(f"this CPU ({cpu_info().detected}) cannot run {level}")


@pytest.mark.parametrize("level,mode,dtype", [
    ("generic", "none", "float32"),
    ("avx2", "int4", "float32"),
    ("avx512", "int4", "float32"),
    ("avx512_bf16", "int4", "bfloat16"),
])
def test_zenlm_info_says_what_auto_picks_at_each_level(level, mode, dtype):
    runnable(level)
    out = run([*ZENLM, "info", "--json"], level)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["cpu"]["level"] == level
    assert report["native_bf16"] == (level == "avx512_bf16")
    assert report["int4_kernel"] == {"generic": None, "avx2": "avx2"}.get(level, "avx512")
    assert (report["auto_inference_mode"], report["auto_train_dtype"]) == (mode, dtype)


SLOW_MODES = """
import logging
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from zenlm.quant.auto import resolve_mode, resolve_train_dtype
print(resolve_mode("bf16"), resolve_mode("int4"), resolve_mode("int8"), resolve_mode(None),
      resolve_train_dtype("bfloat16"), resolve_train_dtype("float32"))
"""


def test_an_explicit_mode_is_honoured_and_a_slow_one_warned_once_each():
    runnable("avx2")
    out = run([sys.executable, "-c", SLOW_MODES], "avx2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["bf16", "int4", "int8", "None", "bfloat16", "float32"]
    warnings = out.stderr.strip().splitlines()
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("bf16 is emulated on this CPU") and "(int4) is faster" in warnings[0]
    assert warnings[1].startswith("bfloat16 autocast is emulated on this CPU")
    out = run([sys.executable, "-c", SLOW_MODES], "generic")
    assert out.returncode == 0, out.stderr
    assert any(line.startswith("int4 without zenlm's kernel") for line in out.stderr.splitlines())


def test_unknown_train_dtype_names_the_valid_ones():
    from zenlm.quant.auto import resolve_train_dtype

    with pytest.raises(ValueError, match="auto, float32, bfloat16.*'fp8'"):
        resolve_train_dtype("fp8")


LOAD_DEFAULT = """
import sys, torch, zenlm
from zenlm.quant import Int4Linear
from zenlm.nn.attention import Attention
lm = zenlm.load(sys.argv[1])
stored = zenlm.load(sys.argv[1], quantize=None)
kinds = {type(m).__name__ for m in lm.model.modules()}
print("Int4Linear" in kinds, lm.model.lm_head.__class__.__name__,
      next(stored.model.parameters()).dtype, type(stored.model.blocks[0].attn.q).__name__)
"""


def test_zenlm_load_prepares_a_decoder_for_this_cpu_unless_told_not_to(tmp_path):
    """The default is `auto` (int4 at avx2); quantize=None keeps the stored float32 weights."""
    runnable("avx2")
    from tests.models.tiny_hf import tiny_hf_model

    tiny_hf_model("llama", hidden_size=64, intermediate_size=128).save_pretrained(tmp_path)
    out = run([sys.executable, "-c", LOAD_DEFAULT, str(tmp_path)], "avx2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "Int4Linear", "torch.float32", "Linear"]


CACHE_DIR = """
import os
os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
import zenlm
print(os.environ["TORCHINDUCTOR_CACHE_DIR"])
"""


def test_each_level_compiles_into_its_own_torch_compile_cache():
    """An AVX2-generated kernel reused at AVX-512 overran its buffers: never share them."""
    runnable("avx2")
    folders = {level: run([sys.executable, "-c", CACHE_DIR], level).stdout.strip()
               for level in ("generic", "avx2")}
    assert folders["generic"].endswith("zenlm-generic")
    assert folders["avx2"].endswith("zenlm-avx2")
