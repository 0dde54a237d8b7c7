"""Compile zenlm's C++ kernels for this CPU's level, cache the library, load it into torch.

One library per CPU level (`zenlm.cpu.LEVELS`), each compiled with that level's
instruction-set flags only, so a library never uses an instruction its CPU lacks. The
level is `zenlm.cpu.cpu_info().level` (ZENLM_CPU narrows it), and before a cached
library is loaded its own word on the path it was built for is checked: a cache copied
from another CPU, or a file that is not ours, is rebuilt, never run.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import torch

from zenlm.cpu import cpu_info

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
#: The int4 kernels are one translation unit, elementwise.cpp (training's fused SwiGLU,
#: RoPE and RMSNorm backward) another; they compile at once, each in its own process
#: (~18 s each at -O3 on a Zen 3 core). Headers included change the build key too.
SOURCES = (HERE / "int4_linear.cpp", HERE / "elementwise.cpp")
HEADERS = (HERE / "int4_core.h", HERE / "fused_step.h")
TORCH_DIR = Path(torch.__file__).parent  # headers to compile against, libraries to link
#: Set to 0 to never build or load the kernels (int4 then runs on PyTorch's int4 kernel).
ENV_SWITCH = "ZENLM_KERNELS"
#: Where built libraries are kept (default: $XDG_CACHE_HOME/zenlm/kernels).
ENV_CACHE = "ZENLM_KERNEL_CACHE"

#: Per CPU level: the compiler flags, and the path the library reports
#: (`zenlm_kernel_path()`). The generic level has no kernel of ours.
LEVEL_FLAGS = {
    "avx2": ("-march=x86-64-v3", "-mno-avx512f"),
    "avx512": ("-march=x86-64-v4", "-mavx512vnni"),
    "avx512_bf16": ("-march=x86-64-v4", "-mavx512vnni", "-mavx512bf16"),
}
LEVEL_PATH = {"avx2": "avx2", "avx512": "avx512", "avx512_bf16": "avx512"}
TAG = "zenlm-kernel-path:"


class KernelBuildError(RuntimeError):
    """No kernel for this CPU, no compiler, or the compiler failed (its output included)."""


def cache_dir() -> Path:
    """The folder that holds built kernel libraries."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zenlm" / "kernels"


def build(level: str | None = None, force: bool = False) -> Path:
    """Compile the kernels for `level` unless a library for this source, torch and CPU exists.

    The library is written under a temporary name and renamed into place, so a build
    interrupted or raced by another process never leaves a half-written library.

    Args:
        level: A CPU level with a kernel path (LEVEL_FLAGS); default: this CPU's level.
        force: Compile even if the cached library exists.

    Returns:
        The library's path.

    Raises:
        KernelBuildError: the level has no kernel (generic CPUs), no compiler, or the
            compiler failed (its output included).
    """
    level = level or cpu_info().level
    if level not in LEVEL_FLAGS:
        raise KernelBuildError(
            f"no int4 kernel for CPU level {level!r} (zenlm's kernels need one of "
            f"{', '.join(LEVEL_FLAGS)}): int4 runs on PyTorch's own kernel"
        )
    compiler = os.environ.get("CXX", "g++")
    path = cache_dir() / f"zenlm_kernels_{level}_{_build_key(compiler, level)}.so"
    if path.exists() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        _compile(compiler, level, partial)
    except FileNotFoundError as exc:
        raise KernelBuildError(f"no C++ compiler: {compiler!r} not found (set CXX)") from exc
    except subprocess.CalledProcessError as exc:
        partial.unlink(missing_ok=True)
        raise KernelBuildError(f"{' '.join(exc.cmd)} failed:\n{exc.stderr[-3000:]}") from exc
    os.replace(partial, path)
    return path


def built_path(library: Path) -> str | None:
    """The path a built library says it multiplies with ("avx512", "avx2"), None if not ours.

    Read from the file's bytes (the tag `zenlm_kernel_path` in int4_linear.cpp), not by
    loading it: loading would run its code, which is what must not happen on a CPU it
    was not built for.
    """
    try:
        data = library.read_bytes()
    except OSError:
        return None
    for path in set(LEVEL_PATH.values()):
        if f"{TAG}{path}\0".encode() in data:
            return path
    return None


@functools.cache
def load() -> str | None:
    """Build if needed and load the kernels into torch (once per process).

    Returns:
        The kernel path in use ("avx512" or "avx2"), or None: switched off, no kernel
        for this CPU level, or no compiler. Failures are logged as one warning with
        the reason, never raised: int4 layers then use PyTorch's own kernel.
    """
    if os.environ.get(ENV_SWITCH, "1") == "0":
        log.info("%s=0: zenlm's C++ kernels are off", ENV_SWITCH)
        return None
    level = cpu_info().level
    try:
        library = build(level)
        if built_path(library) != LEVEL_PATH[level]:
            log.warning("%s was not built for this CPU (%s): rebuilding", library, level)
            library = build(level, force=True)
        torch.ops.load_library(str(library))
    except (KernelBuildError, OSError, RuntimeError) as exc:
        log.warning("zenlm's int4 kernel is unavailable (int4 uses PyTorch's, slower): %s",
                    str(exc).splitlines()[0])
        return None
    _register_shapes()
    return LEVEL_PATH[level]


def _register_shapes() -> None:
    """Output shapes for torch.compile, which traces the op without running it."""

    @torch.library.register_fake("zenlm::int4_linear")
    def _(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor,
          mins: torch.Tensor) -> torch.Tensor:
        return x.new_empty(x.shape[0], codes.shape[0])

    @torch.library.register_fake("zenlm::int4_dequantize")
    def _(codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
          dtype: torch.dtype) -> torch.Tensor:
        return codes.new_empty(codes.shape[0], 2 * codes.shape[1], dtype=dtype)


def _compile(compiler: str, level: str, output: Path) -> None:
    """Compile every source to an object file at once (a process each), then link them.

    Raises:
        FileNotFoundError: no `compiler`.
        subprocess.CalledProcessError: a compile or the link failed (stderr captured).
    """
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".objects-") as folder:
        objects = [str(Path(folder) / f"{source.stem}.o") for source in SOURCES]
        commands = [[compiler, "-c", str(source), "-o", obj, *_compile_flags(level)]
                    for source, obj in zip(SOURCES, objects, strict=True)]
        running = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for c in commands]
        finished = [(command, process, *process.communicate())
                    for command, process in zip(commands, running, strict=True)]
        for command, process, out, err in finished:
            if process.returncode:
                raise subprocess.CalledProcessError(process.returncode, command, out, err)
        subprocess.run([compiler, *objects, "-o", str(output), *_link_flags()], check=True,
                       capture_output=True, text=True)


def _compile_flags(level: str) -> list[str]:
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        "-fPIC", "-std=c++20", "-O3",
        # a * b + c stays two roundings, as PyTorch's elementwise ops compute it: the fused
        # decode step matches the eager forward to the bit (fused_step.h says why).
        "-ffp-contract=off",
        *LEVEL_FLAGS[level],
        # torch's parallel_for is an inline `#pragma omp parallel`; the library then
        # uses the OpenMP runtime torch already loaded (same soname), not a second one.
        "-fopenmp",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-I{TORCH_DIR / 'include'}",
    ]


def _link_flags() -> list[str]:
    return ["-shared", "-fopenmp", f"-L{TORCH_DIR / 'lib'}",
            f"-Wl,-rpath,{TORCH_DIR / 'lib'}", "-lc10", "-ltorch_cpu"]


def _build_key(compiler: str, level: str) -> str:
    """A hash of the sources, torch (version, install), compiler, flags, level and CPU."""
    digest = hashlib.sha256()
    for source in (*SOURCES, *HEADERS):
        digest.update(source.read_bytes())
    for part in (torch.__version__, str(TORCH_DIR), compiler, level, sysconfig.get_platform(),
                 " ".join(cpu_info().features), *_compile_flags(level), *_link_flags()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]
