"""Sampling defaults for requests and commands that leave a parameter out.

Two modes (`zenlm serve --sampling-defaults`, `zenlm generate --sampling-defaults`):

- "model" (the default): the model's own generation_config.json when it sets any
  sampling parameter (as vLLM does; what it leaves out stays off, as in transformers),
  else zenlm's default chain: llama.cpp's filters (top-k 40, top-p 0.95, min-p 0.05)
  at temperature 0.2.

Why 0.2 and not llama.cpp's 0.8: asked "What is the capital of France? Answer in one
word." with no parameters, SmolLM2-135M-Instruct (bf16; 40 seeds) answered with
"Paris" 19 times at llama.cpp's 0.8 (its first token is "The" with p = 0.27 only),
7 at OpenAI's temperature 1, 33 at 0.5, 38 at 0.3 and 40 at 0.2, the temperature its
model card recommends. Larger models are less sensitive, and most ship a
generation_config.json, which then applies instead.
- "openai": OpenAI's defaults: temperature 1 and nothing else (every filter off).

A parameter the request or command gives always wins. The Python API (`LM.generate`
and friends) keeps `GenerationConfig`'s own defaults (greedy) unless told otherwise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAMPLING_DEFAULTS_MODES = ("model", "openai")
#: The sampling parameters these defaults cover (GenerationConfig's names).
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
#: llama.cpp's default filters (its `common_params_sampling`) at temperature 0.2 (see above).
DEFAULT_CHAIN: dict[str, Any] = {"temperature": 0.2, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
OPENAI: dict[str, Any] = {"temperature": 1.0}
#: What each parameter is when a mode leaves it out: off.
NEUTRAL: dict[str, Any] = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
                           "repetition_penalty": 1.0}


def sampling_defaults(mode: str, model_folder: str | Path | None = None) -> dict[str, Any]:
    """Every sampling parameter's default under `mode` (see the module docstring).

    Args:
        mode: "model" or "openai".
        model_folder: The model's folder (a .gguf file or None: no generation_config.json).

    Returns:
        A value for each of SAMPLING_KEYS.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in SAMPLING_DEFAULTS_MODES:
        raise ValueError(f"sampling defaults must be one of {', '.join(SAMPLING_DEFAULTS_MODES)}"
                         f", got {mode!r}")
    chosen = OPENAI
    if mode == "model":
        chosen = model_sampling(model_folder) or DEFAULT_CHAIN
    return {**NEUTRAL, **chosen}


def model_sampling(model_folder: str | Path | None) -> dict[str, Any]:
    """The sampling parameters a model's generation_config.json sets ({} if none).

    `do_sample: false` means greedy (temperature 0), as in transformers.
    """
    if model_folder is None:
        return {}
    path = Path(model_folder) / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # a broken optional file: say so, use the chain
        log.warning("%s: not read (%s); using the default sampling chain", path, exc)
        return {}
    found = {key: config[key] for key in SAMPLING_KEYS if config.get(key) is not None}
    if config.get("do_sample") is False:
        found = {**found, "temperature": 0.0}
    return found


def fill_sampling(given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`given` with each sampling parameter that is None (left out) taken from `defaults`."""
    return {**given, **{key: defaults[key] for key in SAMPLING_KEYS if given.get(key) is None}}
