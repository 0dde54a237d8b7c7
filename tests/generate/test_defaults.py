"""Sampling defaults: the model's generation_config.json, else the default chain; or OpenAI's."""

from __future__ import annotations

import json

import pytest

from zenlm.generate.defaults import fill_sampling, sampling_defaults

CHAIN = {"temperature": 0.2, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
         "repetition_penalty": 1.0}  # llama.cpp's filters at temperature 0.2, written out here
OFF = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}


def _folder(tmp_path, config):
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    return tmp_path


def test_without_sampling_in_generation_config_the_default_chain(tmp_path):
    assert sampling_defaults("model", None) == CHAIN
    assert sampling_defaults("model", tmp_path) == CHAIN  # no generation_config.json
    assert sampling_defaults("model", _folder(tmp_path, {"bos_token_id": 1})) == CHAIN


def test_the_models_own_settings_replace_the_chain(tmp_path):
    folder = _folder(tmp_path, {"do_sample": True, "temperature": 0.6, "top_p": 0.9,
                                "repetition_penalty": 1.05, "eos_token_id": 2})
    assert sampling_defaults("model", folder) == {**OFF, "temperature": 0.6, "top_p": 0.9,
                                                  "repetition_penalty": 1.05}
    greedy = _folder(tmp_path, {"do_sample": False, "top_p": 0.9})
    assert sampling_defaults("model", greedy)["temperature"] == 0.0


def test_openai_defaults_and_bad_modes(tmp_path):
    folder = _folder(tmp_path, {"temperature": 0.6})
    assert sampling_defaults("openai", folder) == OFF
    with pytest.raises(ValueError, match="'llama'.*|model, openai"):
        sampling_defaults("llama", folder)


def test_given_parameters_win():
    given = {"temperature": 0.0, "top_k": None, "top_p": None, "min_p": 0.2,
             "repetition_penalty": None, "seed": 3}
    assert fill_sampling(given, CHAIN) == {**CHAIN, "temperature": 0.0, "min_p": 0.2, "seed": 3}
