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


class InvalidParameter(ZenlmError, ValueError):
    """A caller-supplied parameter has a value zenlm cannot use.

    The parameter travels as data, so a caller (e.g. an HTTP server answering with
    OpenAI's `{"error": {"param": ...}}`) never has to parse it out of the text.

    Attributes:
        param: The parameter's name as the caller spells it, e.g. `"temperature"`.
        message: What is wrong and what would be valid; it names the parameter too,
            since it is also the exception's text.
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # the default would call InvalidParameter(message) alone when unpickling
        return type(self), (self.param, self.message)
