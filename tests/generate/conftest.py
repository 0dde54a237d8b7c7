"""Fixtures of the generation tests: a tiny model of each decoder family."""

from __future__ import annotations

import pytest

import zenlm

from ..models.tiny_hf import tiny_hf_model


@pytest.fixture(scope="package", params=["llama", "gpt2", "mistral"])
def pair(request, tmp_path_factory):
    """(transformers model, zenlm LM loaded from its saved folder)."""
    hf = tiny_hf_model(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return hf, zenlm.load(folder, quantize=None)
