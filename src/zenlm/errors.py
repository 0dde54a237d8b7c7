"""Exceptions zenlm raises on bad input.

Each one names the offending value (a file, a key, a shape) and what would be valid,
so that a user never has to read a traceback from deep inside torch.
"""

from __future__ import annotations


class ZenlmError(Exception):
    """Base class of every error zenlm raises on purpose."""


class CheckpointError(ZenlmError, ValueError):
    """A checkpoint file or folder is missing, truncated, corrupt or inconsistent."""


class UnsupportedModelError(ZenlmError, ValueError):
    """A checkpoint declares an architecture or option zenlm does not implement."""


class UnsafeFormatError(CheckpointError):
    """A pickle-based file (.bin, .pt, .pth, .ckpt) that zenlm refuses to load."""
