"""Hugging Face model folders: config.json + *.safetensors (+ tokenizer files).

Loading converts tensors through the family's `NameMap` (zenlm.io.names) and checks
every name and shape, so a mismatch is reported as the tensor it concerns instead
of as an error from inside torch. Saving writes a folder transformers loads as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from zenlm.config import ModelConfig, from_hf_config, to_hf_config
from zenlm.errors import CheckpointError, UnsafeFormatError, UnsupportedModelError
from zenlm.io.names import MLM_HEAD_MAPS, NAME_MAPS, NameMap
from zenlm.models import DecoderLM, EncoderModel, Seq2SeqLM, build_skeleton
from zenlm.models.heads import MaskedLMHead

Model = DecoderLM | EncoderModel | Seq2SeqLM

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
UNSAFE_HINT = (
    "zenlm never unpickles files (they can run arbitrary code). Convert it once, in an "
    "environment you trust, to safetensors: e.g. `AutoModel.from_pretrained(path)"
    ".save_pretrained(out, safe_serialization=True)`, or ask the publisher for a "
    ".safetensors or .gguf file"
)


def refuse_pickle(path: Path) -> None:
    """Raise UnsafeFormatError if `path` is a pickle-based checkpoint."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeFormatError(f"{path}: {path.suffix} files are pickles. {UNSAFE_HINT}")


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of a folder as a dict (CheckpointError naming the file if unreadable)."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json; is this a Hugging Face model folder?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder: one file, or the shards an index lists."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from exc
        return [folder / name for name in dict.fromkeys(weight_map.values())]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeFormatError(
            f"{folder}: only pickle weights ({', '.join(pickles)}). {UNSAFE_HINT}"
        )
    raise CheckpointError(
        f"{folder}: no model.safetensors or model.safetensors.index.json found"
    )


def iter_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of every file; corrupt files raise CheckpointError."""
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the index but missing")
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                    yield name, handle.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: cannot read safetensors ({exc})") from exc


def load_hf_model(
    folder: str | Path, dtype: torch.dtype | None = None
) -> Model:
    """Build the model a Hugging Face folder describes and load its weights.

    Args:
        folder: Folder with config.json and safetensors weights.
        dtype: Parameter dtype (default float32).

    Raises:
        CheckpointError: missing/corrupt files, unknown or missing tensors, wrong shapes.
        UnsupportedModelError: a model_type or option zenlm does not implement.
        UnsafeFormatError: the folder only holds pickle weights.
    """
    folder = Path(folder)
    config = from_hf_config(read_config(folder))
    return model_from_hf_tensors(config, iter_safetensors(weight_files(folder)), folder, dtype)


def model_from_hf_tensors(
    config: ModelConfig,
    tensors: Mapping[str, torch.Tensor] | Iterator[tuple[str, torch.Tensor]],
    source: str | Path,
    dtype: torch.dtype | None = None,
) -> Model:
    """Build `config`'s model and fill it from tensors with Hugging Face names.

    This is the one path every format goes through (GGUF files are first read into
    Hugging Face names), so name and shape checks live here only.
    """
    dtype = dtype or torch.float32
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    name_map = NAME_MAPS[config.hf_model_type]
    ours = convert_from_hf(items, name_map, source, config)
    model = build_skeleton(config)
    expected = model.state_dict()
    aliases = tied_aliases(model)
    for alias, owner in aliases.items():  # a tied tensor loads once, from any of its names
        value = ours.pop(alias, None)
        if owner not in ours and value is not None:
            ours[owner] = value
        expected.pop(alias)
    for name in name_map.optional:
        if name in expected and name not in ours:
            ours[name] = torch.zeros(expected[name].shape)
    _check_names_and_shapes(ours, expected, source)
    model.load_state_dict({k: v.to(dtype) for k, v in ours.items()}, strict=False, assign=True)
    for alias, owner in aliases.items():
        parent, _, attr = alias.rpartition(".")
        setattr(model.get_submodule(parent), attr, model.get_parameter(owner))
    return model.eval()


def tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """{name: first name of the same parameter} for every parameter reached twice.

    A tied head's weight is the embedding's; an encoder-decoder's shared embedding is
    one module in both stacks.
    """
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


def convert_from_hf(
    items: Iterator[tuple[str, torch.Tensor]] | Any, name_map: NameMap, source: str | Path,
    config: ModelConfig | None = None,
) -> dict[str, torch.Tensor]:
    """HF-named tensors -> zenlm-named tensors; unknown names raise CheckpointError.

    A rule that does not hold for `config` (see `Rule.when`) ignores its tensors.
    """
    ours: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for hf_name, tensor in items:
        found = name_map.find(hf_name)
        if found is None:
            if not name_map.ignored.match(hf_name):
                unknown.append(hf_name)
            continue
        rule, layer = found
        if rule.when is not None and config is not None and not rule.when(config):
            continue
        names = [n.replace("{i}", layer or "") for n in rule.ours]
        ours.update(zip(names, rule.split(tensor), strict=True))
    if unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} tensor(s) this architecture does not have, e.g. "
            f"{unknown[:5]}; is config.json's model_type right?"
        )
    return ours


def _check_names_and_shapes(
    ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str | Path
) -> None:
    missing = sorted(set(expected) - set(ours))
    extra = sorted(set(ours) - set(expected))
    if missing:
        raise CheckpointError(
            f"{source}: {len(missing)} tensor(s) missing, e.g. {missing[:5]} "
            "(truncated download, or config.json does not match the weights?)"
        )
    if extra:
        raise CheckpointError(
            f"{source}: tensors {extra[:5]} are not used by the architecture config.json "
            "describes (e.g. biases on a model configured without them)"
        )
    for name, tensor in ours.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)}, but config.json "
                f"implies {tuple(expected[name].shape)}"
            )


def convert_to_hf(model: Model) -> dict[str, torch.Tensor]:
    """Zenlm state dict -> HF-named tensors (the inverse walk of the same rules)."""
    config = model.config
    if config.hf_model_type not in NAME_MAPS:
        raise UnsupportedModelError(f"cannot save hf_model_type {config.hf_model_type!r}")
    state = model.state_dict()
    layer_count = max(config.n_layers, config.decoder_layers)
    out: dict[str, torch.Tensor] = {}
    for rule in NAME_MAPS[config.hf_model_type].rules:
        if rule.when is not None and not rule.when(config):
            continue
        layers = [str(i) for i in range(layer_count)] if "{i}" in rule.hf else [""]
        for layer in layers:
            names = [n.replace("{i}", layer) for n in rule.ours]
            if all(n in state for n in names):
                out[rule.hf.replace("{i}", layer)] = rule.join(tuple(state[n] for n in names))
    if config.tie_embeddings and config.arch != "encoder-decoder":
        out.pop("lm_head.weight", None)
    return _unshared({k: v.detach().contiguous() for k, v in out.items()})


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies where two names hold one tensor (safetensors refuses shared memory)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, tensor in tensors.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        out[name] = tensor.clone() if key in seen and tensor.device.type != "meta" else tensor
        seen.add(key)
    return out


def save_hf_model(
    model: Model, folder: str | Path, tokenizer: Any = None
) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files) that transformers loads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf_config = to_hf_config(model.config)
    hf_config["torch_dtype"] = str(model.embed.weight.dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    save_file(convert_to_hf(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder


def load_mlm_head(folder: str | Path, encoder: EncoderModel) -> MaskedLMHead:
    """The masked-LM head saved in a Hugging Face *ForMaskedLM folder.

    Raises:
        CheckpointError: the folder has no (or an incomplete) masked-LM head.
    """
    name_map = MLM_HEAD_MAPS[encoder.config.hf_model_type]
    head = MaskedLMHead(encoder.config, encoder.embed)
    found = {}
    for hf_name, tensor in iter_safetensors(weight_files(Path(folder))):
        match = name_map.find(hf_name)
        if match is not None:
            rule, _ = match
            found.update(zip(rule.ours, rule.split(tensor), strict=True))
    found.pop("decoder.weight", None)  # tied: the encoder's embedding is the authority
    missing = sorted({"bias", "dense.weight", "dense.bias", "norm.weight"} - set(found))
    if missing:
        raise CheckpointError(f"{folder}: no masked-LM head tensors {missing}")
    head.load_state_dict(found, strict=False)
    return head.to(encoder.embed.weight.dtype)
