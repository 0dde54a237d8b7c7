"""Hugging Face model folders: config.json + *.safetensors (+ tokenizer files).

Loading converts tensors through the family's `NameMap` (zenlm.io.names) and checks
every name and shape, so a mismatch is reported as the tensor it concerns instead
of as an error from inside torch. Saving writes a folder transformers loads as is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    folder: str | Path, dtype: torch.dtype | None = None,
    prepare_part: Callable[[DecoderLM, str], None] | None = None,
) -> Model:
    """Build the model a Hugging Face folder describes and load its weights.

    Args:
        folder: Folder with config.json and safetensors weights.
        dtype: Parameter dtype (default float32).
        prepare_part: See `model_from_hf_tensors`.

    Raises:
        CheckpointError: missing/corrupt files, unknown or missing tensors, wrong shapes.
        UnsupportedModelError: a model_type or option zenlm does not implement.
        UnsafeFormatError: the folder only holds pickle weights.
    """
    folder = Path(folder)
    config = from_hf_config(read_config(folder))
    return model_from_hf_tensors(config, iter_safetensors(weight_files(folder)), folder, dtype,
                                 prepare_part)


def model_from_hf_tensors(
    config: ModelConfig,
    tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    source: str | Path,
    dtype: torch.dtype | None = None,
    prepare_part: Callable[[DecoderLM, str], None] | None = None,
) -> Model:
    """Build `config`'s model and fill it from tensors with Hugging Face names.

    This is the one path every format goes through (GGUF files are first read into
    Hugging Face names), so name and shape checks live here only.

    Args:
        config: The model to build.
        tensors: Hugging Face name -> tensor, as a mapping or (name, tensor) pairs.
        source: Where the tensors come from, for error messages.
        dtype: Parameter dtype (default float32).
        prepare_part: For a decoder-only model, called with the model and a part's
            name ("blocks.3", "embed", "lm_head", "final_norm") as soon as all of that
            part's weights are in, before the next tensors are read (e.g. to quantize
            it): with a lazy `tensors` iterator, only one part's float weights are then
            held at a time. None: every tensor is converted first, then assigned.
    """
    dtype = dtype or torch.float32
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    name_map = NAME_MAPS[config.hf_model_type]
    if prepare_part is not None and config.arch == "decoder":
        model = build_skeleton(config)
        _fill_part_by_part(model, items, name_map, source, dtype, prepare_part)
        return model.eval()
    ours = convert_from_hf(items, name_map, source, config)
    model = build_skeleton(config)
    aliases = tied_aliases(model)
    head = "decoder.lm_head.weight"
    if config.arch == "encoder-decoder" and _differs(ours, head, aliases.get(head)):
        # the file holds a head of its own (T5 v1.1 saved by transformers 5, whose config
        # always says tied): transformers unties such a checkpoint, so does zenlm
        config = dataclasses.replace(config, tie_embeddings=False)
        model = build_skeleton(config)
        aliases = tied_aliases(model)
    expected = model.state_dict()
    _merge_tied(ours, expected, aliases)
    for name in name_map.optional:
        if name in expected and name not in ours:
            ours[name] = torch.zeros(expected[name].shape)
    _check_missing(ours.keys(), expected, source)
    _check_names_and_shapes(ours, expected, source)
    model.load_state_dict({k: v.to(dtype) for k, v in ours.items()}, strict=False, assign=True)
    _retie(model, aliases)
    return model.eval()


def _fill_part_by_part(
    model: DecoderLM, items: Iterable[tuple[str, torch.Tensor]], name_map: NameMap,
    source: str | Path, dtype: torch.dtype, prepare_part: Callable[[DecoderLM, str], None],
) -> None:
    """Assign tensors as they come; hand each part to `prepare_part` once it is whole.

    The parts are the blocks ("blocks.3") and the other top-level modules ("embed",
    "lm_head", "final_norm"); a tied head is whole when the weight it shares is. The
    checks are `model_from_hf_tensors`' (unknown names, shapes, then missing ones), made
    per tensor, so a part's float weights can be dropped before the next part's are read.
    """
    expected = model.state_dict()
    aliases = tied_aliases(model)
    waiting: dict[str, set[str]] = {}
    for name in expected:
        part = ".".join(name.split(".")[:2 if name.startswith("blocks.") else 1])
        waiting.setdefault(part, set()).add(aliases.get(name, name))
    for alias in aliases:
        expected.pop(alias)
    loaded: set[str] = set()
    pending: dict[str, torch.Tensor] = {}  # read, not yet assigned (one load_state_dict per part)
    for hf_name, tensor in items:
        ours = convert_from_hf([(hf_name, tensor)], name_map, source, model.config)
        for alias, owner in aliases.items():  # a tied weight under either name, kept once
            value = ours.pop(alias, None)
            if value is not None and owner not in loaded and owner not in ours:
                ours[owner] = value
        _check_names_and_shapes(ours, expected, source)
        pending.update((k, v.to(dtype)) for k, v in ours.items())
        loaded.update(ours)
        del ours, tensor
        whole = [part for part, names in waiting.items() if names <= loaded]
        if whole:
            model.load_state_dict(pending, strict=False, assign=True)
            _retie(model, {a: o for a, o in aliases.items() if o in pending})
            pending.clear()
        for part in whole:
            del waiting[part]
            prepare_part(model, part)
    for name in name_map.optional:
        if name in expected and name not in loaded:
            pending[name] = torch.zeros(expected[name].shape, dtype=dtype)
            loaded.add(name)
    model.load_state_dict(pending, strict=False, assign=True)  # whatever no part completed
    _check_missing(loaded, expected, source)


def _retie(model: torch.nn.Module, aliases: dict[str, str]) -> None:
    """Point every alias of a tied parameter at its owner (assignment broke the tie)."""
    for alias, owner in aliases.items():
        parent, _, attr = alias.rpartition(".")
        setattr(model.get_submodule(parent), attr, model.get_parameter(owner))


def _merge_tied(
    ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], aliases: dict[str, str]
) -> None:
    """Keep one tensor per tied parameter, under its owner's name, from any of its names."""
    for alias, owner in aliases.items():
        value = ours.pop(alias, None)
        if owner not in ours and value is not None:
            ours[owner] = value
        expected.pop(alias)


def _differs(ours: dict[str, torch.Tensor], name: str, owner: str | None) -> bool:
    """Whether `name` and the tensor it is tied to (`owner`) are both given, and differ."""
    return (owner is not None and name in ours and owner in ours
            and not torch.equal(ours[name], ours[owner]))


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


def _check_missing(
    names: Iterable[str], expected: dict[str, torch.Tensor], source: str | Path
) -> None:
    missing = sorted(set(expected) - set(names))
    if missing:
        raise CheckpointError(
            f"{source}: {len(missing)} tensor(s) missing, e.g. {missing[:5]} "
            "(truncated download, or config.json does not match the weights?)"
        )


def _check_names_and_shapes(
    ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str | Path
) -> None:
    """Every tensor of `ours` must be one `expected` names, of its shape."""
    extra = sorted(set(ours) - set(expected))
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
    aliases = tied_aliases(model)
    layer_count = max(config.n_layers, config.decoder_layers)
    out: dict[str, torch.Tensor] = {}
    for rule in NAME_MAPS[config.hf_model_type].rules:
        if rule.when is not None and not rule.when(config):
            continue
        layers = [str(i) for i in range(layer_count)] if "{i}" in rule.hf else [""]
        for layer in layers:
            names = [n.replace("{i}", layer) for n in rule.ours]
            if rule.when is None and any(n in aliases for n in names):
                continue  # a tied tensor is saved once, under its owner's name
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


def load_mlm_head(folder: str | Path, encoder: EncoderModel, *,
                  required: bool = True) -> MaskedLMHead | None:
    """The masked-LM head saved in a Hugging Face *ForMaskedLM folder.

    Args:
        folder: The model folder.
        encoder: The encoder the head reads (its embedding is the head's tied decoder).
        required: Without it, a folder with no head tensor at all (a BertModel) gives None.

    Raises:
        CheckpointError: the folder has an incomplete masked-LM head, or none when required.
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
    if not found and not required:
        return None
    missing = sorted({"bias", "dense.weight", "dense.bias", "norm.weight"} - set(found))
    if missing:
        what = "an incomplete masked-LM head: no" if found else "no masked-LM head:"
        raise CheckpointError(f"{folder} has {what} tensors {missing}")
    head.load_state_dict(found, strict=False)
    return head.to(encoder.embed.weight.dtype)
