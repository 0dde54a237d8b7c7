"""One module per `zenlm <command>` group; each exposes `register(subparsers)`.

`register` adds its sub-commands with `set_defaults(handler=<typed function>)`;
the handler receives the parsed options as keyword arguments.
"""

from __future__ import annotations

COMMAND_MODULES = (
    "zenlm.commands.generate",
    "zenlm.commands.bench",
    "zenlm.commands.finetune",
    "zenlm.commands.evaluate",
    "zenlm.commands.pretrain",
    "zenlm.commands.export",
    "zenlm.commands.data",
    "zenlm.commands.serve",
    "zenlm.commands.info",
    "zenlm.commands.explain",
)
