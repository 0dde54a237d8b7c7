"""`zenlm pretrain --config FILE.yaml [--section.key=value ...]`."""

from __future__ import annotations

import argparse
import sys

import yaml


class _OverridesParser(argparse.ArgumentParser):
    """Keeps the `--section.key=value` arguments argparse does not know, as `overrides`.

    They are validated against the typed config (with close matches for a typo), which
    argparse cannot do for keys it has never heard of.
    """

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201, D102
        namespace, rest = super().parse_known_args(args, namespace)
        namespace.overrides = list(rest)
        return namespace, []


def pretrain_command(config: str, overrides: list[str], resume: str = "auto",
                     print_config: bool = False) -> int:
    """Train a model from scratch as the config (plus overrides) says."""
    from zenlm.train.config import load_config

    run = load_config(config, overrides)
    if print_config:
        yaml.safe_dump(run.to_dict(), sys.stdout, sort_keys=False)
        return 0
    from zenlm.train.pretrain import pretrain

    result = pretrain(run, resume=resume)
    val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f}"
    print(f"done: {result.steps} steps, train loss {result.final_loss:.4f}, val loss {val}, "
          f"{result.tokens_per_s:,.0f} tokens/s, {result.elapsed_s:.1f} s; "
          f"checkpoint {result.checkpoint}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `pretrain`."""
    parser = commands.add_parser(
        "pretrain", help="train a language model from scratch",
        description="Overrides: --section.key=value, sections model, data, tokenizer, optim, "
                    "train (e.g. --train.max_steps=100 --model.n_layers=4).",
    )
    parser.__class__ = _OverridesParser  # add_parser takes no parser class of its own
    parser.add_argument("--config", required=True, help='a YAML file, or "demo" (CPython docs)')
    parser.add_argument("--resume", default="auto",
                        help='"auto" (newest complete checkpoint, default), "none", or a folder')
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    parser.set_defaults(handler=pretrain_command, overrides=[])
