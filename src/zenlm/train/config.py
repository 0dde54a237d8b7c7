"""The typed configuration of a pretraining run, read from YAML, overridable from the CLI.

A config file has five sections. `model` holds `ModelConfig` fields (vocab_size and
max_seq_len are filled in from the tokenizer and block size); the others are the
dataclasses below. Every key, in the file or in a `--section.key=value` override, is
checked against these types: an unknown key is an error that lists the close matches.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zenlm.config import ModelConfig


@dataclass
class DataConfig:
    """Where the text comes from and how it is cut into training examples."""

    paths: list[str] = field(default_factory=lambda: ["pydoc:topics"])  # files, folders, or
    # "pydoc:topics": the documentation every CPython ships (a corpus needing no download)
    field: str = "text"  # JSON key / CSV or parquet column holding the text
    txt_unit: str = "paragraph"  # .txt documents: file | paragraph | line
    skip_bad_lines: bool = False
    val_fraction: float = 0.1  # the last part of the token stream, as nanoGPT splits
    block_size: int = 256  # tokens per example
    cache_dir: str = ""  # token shards; "" = $XDG_CACHE_HOME/zenlm/shards


@dataclass
class TokenizerConfig:
    """Use an existing tokenizer folder, or train one on the corpus."""

    path: str = ""  # a folder with tokenizer.json; "" = train one into <out_dir>/tokenizer
    kind: str = "bpe"  # bpe | wordpiece | unigram | char
    vocab_size: int = 4096
    max_train_chars: int = 50_000_000  # tokenizer training reads at most this much text


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = 1e-3
    min_lr: float = 1e-4  # where the decay ends
    warmup_steps: int = 100  # linear warmup from 0
    schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    weight_decay: float = 0.1  # on matrices only, not on norms, biases or embeddings' gains
    beta1: float = 0.9
    beta2: float = 0.99  # 0.99, not 0.999: few tokens per step in small runs
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    # Parameter-name prefix -> multiple of the scheduled learning rate, e.g. {"head.": 50.0}:
    # a freshly initialised task head needs larger steps than pretrained weights.
    lr_scales: dict[str, float] = field(default_factory=dict)


@dataclass
class LoopConfig:
    """Steps, batches, precision, evaluation, logging and checkpoints."""

    out_dir: str = "runs/pretrain"
    max_steps: int = 1000
    batch_size: int = 8  # sequences per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step
    seed: int = 1337
    # auto | float32 | bfloat16 (autocast; weights and optimizer stay fp32). auto: bfloat16
    # only where the CPU has it natively (zenlm.quant.auto), else float32 (~20x faster there)
    dtype: str = "auto"
    compile: bool = False  # torch.compile the model
    grad_checkpointing: bool = False  # recompute block activations in backward: less memory
    eval_every: int = 100
    eval_batches: int = 10
    save_every: int = 100
    keep_last: int = 3  # checkpoints kept; the newest valid one is never deleted
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall-clock; 0 = no limit
    # The learning-rate schedule runs over max_minutes of wall-clock instead of max_steps
    # (which then only sets its resolution): warm-up and decay end with the budget.
    schedule_by_time: bool = False
    # The schedule follows the steps or the clock, whichever is further along: a run that
    # max_minutes would cut short still warms up and decays within it, and one that fits
    # runs by steps. It ends at max_steps or max_minutes, whichever comes first.
    schedule_fits_max_minutes: bool = False
    progress: bool = True
    tensorboard: bool = False
    distributed: str = "ddp"  # under torchrun: ddp | fsdp (parameters sharded over ranks)
    # auto (causal for decoders, mlm for encoders, span for encoder-decoders) | causal | mlm | span
    objective: str = "auto"
    mask_prob: float = 0.15  # mlm: fraction of tokens masked (80% [MASK], 10% random, 10% kept)
    export_hf: bool = True  # write <out_dir>/model as a Hugging Face folder at the end
    # Continued pretraining: a model folder or short name whose architecture and weights the
    # run starts from (the `model` section must then be empty); its embedding is re-made for
    # the run's tokenizer when that differs (zenlm.train.continued).
    init_from: str = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError on settings that cannot run together (or would train nothing).

        Run at construction and again by `load_config` once a file and the overrides have
        set the fields one by one.
        """
        if self.schedule_by_time and self.max_minutes <= 0:
            raise ValueError(f"train.schedule_by_time needs train.max_minutes > 0, "
                             f"got {self.max_minutes}")
        if self.schedule_by_time and self.schedule_fits_max_minutes:
            raise ValueError("train.schedule_by_time and train.schedule_fits_max_minutes are "
                             "two ways to schedule; set one")
        if self.schedule_fits_max_minutes and self.max_minutes <= 0:
            raise ValueError(f"train.schedule_fits_max_minutes needs train.max_minutes > 0, "
                             f"got {self.max_minutes}")
        # 0 masks no position: the masked-LM loss would be the mean of nothing (NaN).
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"train.mask_prob is the fraction of tokens masked, in (0, 1]; "
                             f"got {self.mask_prob}")


SECTIONS: dict[str, type] = {
    "data": DataConfig, "tokenizer": TokenizerConfig, "optim": OptimConfig, "train": LoopConfig,
}
#: ModelConfig fields a config file may set (the rest come from the tokenizer and data).
MODEL_AUTO = ("vocab_size", "max_seq_len", "bos_token_id", "eos_token_id", "pad_token_id")


@dataclass
class PretrainConfig:
    """A whole run: model shape, data, tokenizer, optimizer and loop."""

    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> PretrainConfig:
        """Validate and build; unknown sections or keys raise ValueError with close matches."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
        config = cls()
        for section, values in data.items():
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ValueError(f"{source}: section {section!r} must be a mapping")
            for key, value in values.items():
                config.set(f"{section}.{key}", value, source=source)
        return config

    def set(self, dotted: str, value: Any, *, source: str = "override") -> None:
        """Set `section.key` to `value`, converted to the key's declared type."""
        section, _, key = dotted.partition(".")
        if section == "model":
            _check_key(key, _model_fields(), f"{source}: model", dotted)
            self.model[key] = value
            return
        if section not in SECTIONS or not key:
            valid = ["model", *SECTIONS]
            raise ValueError(f"{source}: unknown key {dotted!r}; sections are {valid}"
                             f"{_suggest(section, valid)}")
        target = getattr(self, section)
        hints = typing.get_type_hints(type(target))
        _check_key(key, list(hints), f"{source}: {section}", dotted)
        setattr(target, key, _coerce(value, hints[key], dotted))

    def model_config(self, **auto: Any) -> ModelConfig:
        """The ModelConfig of the run; `auto` gives vocab_size, max_seq_len and token ids."""
        return ModelConfig(**{**auto, **self.model})


def _model_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ModelConfig) if f.name not in MODEL_AUTO]


def _required_model_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ModelConfig) if f.name not in MODEL_AUTO
            and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _check_key(key: str, valid: list[str], where: str, dotted: str) -> None:
    if key not in valid:
        raise ValueError(f"{where}: unknown key {dotted!r}{_suggest(key, valid)} "
                         f"(valid: {', '.join(sorted(valid))})")


def _coerce(value: Any, kind: Any, dotted: str) -> Any:
    """`value` (from YAML or a CLI string) as the declared type, or ValueError."""
    origin = typing.get_origin(kind)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ValueError(f"{dotted} must be a list, got {value!r}")
        return [str(v) for v in value]
    if origin is dict:  # optim.lr_scales: name prefix -> multiple
        if not isinstance(value, dict):
            raise ValueError(f"{dotted} must be a mapping of name prefix to number, e.g. "
                             f"{{'head.': 10.0}}; got {value!r}")
        return {str(k): _coerce(v, float, f"{dotted}.{k}") for k, v in value.items()}
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise ValueError(f"{dotted} must be true or false, got {value!r}")
    if kind in (int, float):
        try:
            number = kind(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (kind is int and isinstance(value, float) and value != number):
            raise ValueError(f"{dotted} must be {kind.__name__}, got {value!r}")
        return number
    return str(value)


def parse_value(text: str) -> Any:
    """A CLI override's value: YAML scalars/lists (1e-3, true, [a, b]) or the raw string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """`--section.key=value` / `--section.key value` pairs from leftover CLI arguments."""
    pairs: list[tuple[str, Any]] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            raise ValueError(f"unexpected argument {arg!r}; overrides look like "
                             "--section.key=value (e.g. --train.max_steps=100)")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if index + 1 >= len(args):
                raise ValueError(f"override {arg!r} has no value")
            index += 1
            value = args[index]
        pairs.append((name, parse_value(value)))
        index += 1
    return pairs


def load_config(source: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    """A YAML file (or "demo"), then `--section.key=value` overrides, validated."""
    if str(source) == "demo":
        config = PretrainConfig.from_dict(DEMO_CONFIG, "demo")
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found (or use --config demo)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from exc
        config = PretrainConfig.from_dict(data, str(path))
    for name, value in parse_overrides(overrides or []):
        config.set(name, value)
    config.train.check()
    if config.train.init_from and config.model:
        raise ValueError(f"train.init_from={config.train.init_from!r} takes the model's shape "
                         f"from that model; remove the model section ({sorted(config.model)})")
    if not config.train.init_from:
        missing = [name for name in _required_model_fields() if name not in config.model]
        if missing:
            raise ValueError(f"the model section lacks {missing}: give the model's shape, or "
                             "train.init_from to start from a pretrained model")
        config.model_config(vocab_size=8, max_seq_len=config.data.block_size)  # shape checks
    return config


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/zenlm/shards (~/.cache/zenlm/shards)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zenlm" / "shards"


#: A small Llama-style model on CPython's own documentation: runs anywhere, no download.
DEMO_CONFIG: dict[str, Any] = {
    "model": {"d_model": 128, "n_layers": 4, "n_heads": 4, "d_ff": 384,
              "tie_embeddings": True, "hf_model_type": "llama"},
    "data": {"paths": ["pydoc:topics"], "block_size": 128, "val_fraction": 0.05},
    "tokenizer": {"kind": "bpe", "vocab_size": 4096},
    "optim": {"lr": 2e-3, "min_lr": 2e-4, "warmup_steps": 50},
    "train": {"out_dir": "runs/demo", "max_steps": 300, "batch_size": 16, "eval_every": 100,
              "save_every": 100, "dtype": "auto"},
}
