"""What this CPU can do, found once: ISA features, core count, and the level zenlm runs at.

The speed of every mode depends on the instruction set: bfloat16 arithmetic is fast only
where the CPU has it natively (AVX512-BF16 or AMX; elsewhere PyTorch emulates it, ~10x
slower), and the int4 kernel has one path per vector ISA. Everything that chooses a mode
or a kernel asks this module, so the choice is made in one place and explained by
`zenlm info`.

Levels, from narrowest to widest (each includes the one before):

    generic      no vector kernel of zenlm's (ARM, old x86): PyTorch's own kernels
    avx2         AVX2 + FMA + F16C (Haswell and later, AMD Zen 1-3)
    avx512       AVX-512 F/BW/VL + VNNI (Ice Lake, Zen 4)
    avx512_bf16  avx512 + native bfloat16 (AVX512-BF16 or AMX: Sapphire Rapids, Zen 4)

`ZENLM_CPU=<level>` runs zenlm as if the CPU stopped at that level (for testing the
narrower paths, and for measuring them, on a wider machine). It must be set before
torch is imported: `apply_level()` then also narrows PyTorch's own kernels
(ATen's dispatch, oneDNN and MKL) so that a forced run is a fair stand-in for that CPU.
This module imports nothing heavy (no torch).
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: The environment variable that forces a narrower level.
ENV_LEVEL = "ZENLM_CPU"

LEVELS = ("generic", "avx2", "avx512", "avx512_bf16")

#: The flags each x86 level needs (as /proc/cpuinfo spells them), beyond the level below.
_X86_LEVEL_FLAGS = {
    "avx2": ("avx2", "fma", "f16c"),
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512_vnni"),
}
#: Any one of these gives native bfloat16 matmuls (oneDNN uses them for torch's bf16).
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

#: The features worth reporting, per architecture (cpuinfo spellings).
X86_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
ARM_FEATURES = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve",
                "bf16": "bf16"}

#: What a forced level narrows in PyTorch's own libraries (read when torch loads).
TORCH_ENV = {
    "generic": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI",
               "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "avx512_bf16": {},
}


@dataclass(frozen=True)
class CPUInfo:
    """This machine's CPU as zenlm sees it.

    Attributes:
        machine: `platform.machine()` (x86_64, aarch64, ...).
        model: The CPU's model name, when the OS says.
        cores: CPUs this process may run on.
        features: The ISA features that matter, present on this CPU (see X86_FEATURES,
            ARM_FEATURES), in a fixed order.
        detected: The widest level the CPU supports.
        level: The level zenlm runs at: `detected`, or narrower when forced.
        forced: Whether ZENLM_CPU chose `level`.
        torch_env: The variables that narrow PyTorch's kernels to a forced `level`
            (TORCH_ENV's; empty when not forced).
    """

    machine: str
    model: str
    cores: int
    features: tuple[str, ...]
    detected: str
    level: str
    forced: bool = False
    torch_env: dict[str, str] = field(default_factory=dict)

    @property
    def native_bf16(self) -> bool:
        """Whether bfloat16 matmuls run natively at this level (else PyTorch emulates)."""
        return self.level == "avx512_bf16"

    def describe(self) -> str:
        """A few lines for `zenlm info` and start-up logs."""
        forced = f" (forced by {ENV_LEVEL}; the CPU has {self.detected})" if self.forced else ""
        return "\n".join([
            f"cpu       {self.model or 'unknown'} ({self.machine}, {self.cores} cores)",
            f"features  {' '.join(self.features) or 'none of note'}",
            f"level     {self.level}{forced}",
        ])

    def summary(self) -> dict[str, object]:
        """Plain-JSON form, recorded next to every benchmark figure."""
        return {"machine": self.machine, "model": self.model, "cores": self.cores,
                "features": list(self.features), "level": self.level,
                "detected": self.detected, "forced": self.forced}


@functools.cache
def cpu_info() -> CPUInfo:
    """This CPU, read once per process (ZENLM_CPU applies; see `apply_level`).

    A ZENLM_CPU value that names no level, or one this CPU lacks, is refused with one
    warning naming the valid values, and zenlm runs at the detected level.
    """
    machine = platform.machine().lower()
    fields = _cpuinfo_fields()
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    if machine in ("x86_64", "amd64", "i686", "x86"):
        features = tuple(f for f in X86_FEATURES if f in flags)
        detected = _x86_level(flags)
    else:
        features = tuple(name for flag, name in ARM_FEATURES.items() if flag in flags)
        detected = "generic"
    try:
        level = forced_level(os.environ.get(ENV_LEVEL, ""), detected)
    except ValueError as exc:
        log.warning("%s; running at %s", exc, detected)
        level = detected
    forced = level != detected
    return CPUInfo(
        machine=machine,
        model=fields.get("model name", fields.get("CPU part", "")).strip(),
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
        (os.cpu_count() or 1),
        features=features, detected=detected, level=level, forced=forced,
        torch_env=dict(TORCH_ENV[level]) if forced else {},
    )


def apply_level() -> None:
    """Narrow PyTorch's kernels to a forced ZENLM_CPU level, and key torch.compile's cache.

    torch.compile's on-disk cache (TORCHINDUCTOR_CACHE_DIR) gets one folder per level
    unless the user set it: its keys do not tell the vector ISA a kernel was generated
    for, and an AVX2 kernel reused at AVX-512 (or the reverse) overran its buffers here
    ("corrupted size vs. prev_size" after a forced run had filled the shared cache).

    Sets ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA and MKL_ENABLE_INSTRUCTIONS unless the
    user set them. PyTorch reads them when it first needs each library (ATen's
    dispatch, oneDNN, MKL), so this must run before the first tensor operation; zenlm
    runs it before it imports torch.
    """
    info = cpu_info()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(
        Path(tempfile.gettempdir()) / f"torchinductor_{_user()}" / f"zenlm-{info.level}"))
    if not info.forced:
        return
    for name, value in info.torch_env.items():
        os.environ.setdefault(name, value)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "user"


def forced_level(value: str, detected: str) -> str:
    """The level a ZENLM_CPU `value` asks for on a CPU that supports up to `detected`.

    Empty or "native" means `detected`.

    Raises:
        ValueError: `value` is no level, or a level wider than `detected`; the message
            lists the valid values.
    """
    wanted = value.strip().lower()
    if not wanted or wanted == "native":
        return detected
    valid = ", ".join((*LEVELS[: LEVELS.index(detected) + 1], "native"))
    if wanted not in LEVELS:
        raise ValueError(f"{ENV_LEVEL}={value!r} is not a level; valid here: {valid}")
    if LEVELS.index(wanted) > LEVELS.index(detected):
        raise ValueError(f"{ENV_LEVEL}={value!r} needs features this CPU lacks (it supports "
                         f"up to {detected}); valid here: {valid}")
    return wanted


def _x86_level(flags: set[str]) -> str:
    level = "generic"
    for name, needed in _X86_LEVEL_FLAGS.items():
        if not all(flag in flags for flag in needed):
            return level
        level = name
    return "avx512_bf16" if any(flag in flags for flag in _NATIVE_BF16_FLAGS) else level


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields
