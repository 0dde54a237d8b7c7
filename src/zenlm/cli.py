"""`zenlm <command>`: argparse only parses; each command is a typed function.

Errors zenlm raises on bad input (ZenlmError, ValueError, a missing file) print as
one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from zenlm import __version__
from zenlm.commands import COMMAND_MODULES
from zenlm.errors import ZenlmError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="zenlm", description="The whole life of a Transformer language model."
    )
    parser.add_argument("--version", action="version", version=f"zenlm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zenlm` console command."""
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    handler = args.pop("handler")
    try:
        return handler(**args)
    except (ZenlmError, ValueError, FileNotFoundError) as exc:
        print(f"zenlm {command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
