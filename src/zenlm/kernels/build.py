"""Compile zenlm's C++ kernels for this CPU, cache the library, and load it into torch."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import sysconfig
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("int4_linear.cpp")
TORCH_DIR = Path(torch.__file__).parent  # headers to compile against, libraries to link
#: Set to 0 to never build or load the kernels (int4 then runs through dequantized weights).
ENV_SWITCH = "ZENLM_KERNELS"
#: Where built libraries are kept (default: $XDG_CACHE_HOME/zenlm/kernels).
ENV_CACHE = "ZENLM_KERNEL_CACHE"
#: The -march to build for (default: native, this CPU; x86-64-v3 builds the portable path).
ENV_ARCH = "ZENLM_KERNEL_ARCH"


class KernelBuildError(RuntimeError):
    """The C++ compiler failed or is missing; the message ends with its output."""


def cache_dir() -> Path:
    """The folder that holds built kernel libraries."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zenlm" / "kernels"


def build(force: bool = False) -> Path:
    """Compile the kernels unless a library for this source, torch and CPU exists.

    The library is written under a temporary name and renamed into place, so a build
    interrupted or raced by another process never leaves a half-written library.

    Returns:
        The library's path.

    Raises:
        KernelBuildError: no compiler, or the compiler failed (its output included).
    """
    compiler = os.environ.get("CXX", "g++")
    arch = os.environ.get(ENV_ARCH, "native")
    path = cache_dir() / f"zenlm_kernels_{_build_key(compiler, arch)}.so"
    if path.exists() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    command = _compile_command(compiler, arch, partial)
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise KernelBuildError(f"no C++ compiler: {compiler!r} not found (set CXX)") from exc
    except subprocess.CalledProcessError as exc:
        partial.unlink(missing_ok=True)
        raise KernelBuildError(f"{' '.join(command)} failed:\n{exc.stderr[-3000:]}") from exc
    os.replace(partial, path)
    return path


@functools.cache
def load() -> bool:
    """Build if needed and load the kernels into torch (once per process).

    Returns:
        Whether `torch.ops.zenlm.int4_linear` is available. Failures are logged as a
        warning with the reason, never raised: callers fall back to plain torch ops.
    """
    if os.environ.get(ENV_SWITCH, "1") == "0":
        log.info("%s=0: zenlm's C++ kernels are off", ENV_SWITCH)
        return False
    try:
        torch.ops.load_library(str(build()))
    except (KernelBuildError, OSError, RuntimeError) as exc:
        log.warning("zenlm's int4 kernel is unavailable, int4 layers will be slow: %s", exc)
        return False
    _register_shapes()
    return True


def _register_shapes() -> None:
    """Output shapes for torch.compile, which traces the op without running it."""

    @torch.library.register_fake("zenlm::int4_linear")
    def _(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor,
          mins: torch.Tensor) -> torch.Tensor:
        return x.new_empty(x.shape[0], codes.shape[0])

    @torch.library.register_fake("zenlm::int4_dequantize")
    def _(codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
        return codes.new_empty(codes.shape[0], 2 * codes.shape[1], dtype=torch.bfloat16)


def _compile_command(compiler: str, arch: str, output: Path) -> list[str]:
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        compiler, str(SOURCE), "-o", str(output),
        "-shared", "-fPIC", "-std=c++20", "-O3",
        # Built where it runs, for this CPU: AVX-512 VNNI when it has it.
        f"-march={arch}",
        # torch's parallel_for is an inline `#pragma omp parallel`; the library then
        # uses the OpenMP runtime torch already loaded (same soname), not a second one.
        "-fopenmp",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-I{TORCH_DIR / 'include'}",
        f"-L{TORCH_DIR / 'lib'}", f"-Wl,-rpath,{TORCH_DIR / 'lib'}", "-lc10", "-ltorch_cpu",
    ]


def _build_key(compiler: str, arch: str) -> str:
    """Changes with the source, torch (version and install), the compiler, -march, the CPU."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    for part in (torch.__version__, str(TORCH_DIR), compiler, arch, sysconfig.get_platform(),
                 _cpu_flags()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line for line in text.splitlines() if line.startswith("flags")), "")
