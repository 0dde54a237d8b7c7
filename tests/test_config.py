from __future__ import annotations

import re

import pytest

from zenlm.config import ModelConfig, from_hf_config, to_hf_config
from zenlm.errors import UnsupportedModelError


def test_unknown_model_type_names_it_and_the_supported_ones():
    with pytest.raises(UnsupportedModelError, match=r"'falcon'.*gpt2.*llama"):
        from_hf_config({"model_type": "falcon"})


def test_unsupported_rope_scaling_is_refused():
    hf = {"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
          "num_attention_heads": 2, "intermediate_size": 16,
          "rope_scaling": {"rope_type": "longrope", "factor": 2.0}}
    with pytest.raises(UnsupportedModelError, match="longrope"):
        from_hf_config(hf)


def test_inconsistent_heads_are_named():
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        ModelConfig(vocab_size=10, d_model=8, n_layers=1, n_heads=4, n_kv_heads=3, d_ff=16)


def test_round_trip_through_hf_dict():
    config = ModelConfig(vocab_size=10, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=16, head_dim=4,
                         hf_model_type="qwen2", qkv_bias=True, tie_embeddings=True)
    again = from_hf_config(to_hf_config(config))
    assert again.to_dict() | {"extra": {}} == config.to_dict() | {"extra": {}}
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="d_modle"):
        ModelConfig.from_dict({"d_modle": 3})


@pytest.mark.parametrize("family,fields,named", [
    ("llama", {"positions": "sinusoidal"}, "positions='sinusoidal' (needs 'rope')"),
    ("gpt2", {"norm": "rmsnorm", "positions": "learned"}, "norm='rmsnorm' (needs 'layernorm')"),
    ("bert", {"arch": "encoder", "norm": "layernorm", "positions": "learned", "gated_mlp": False,
              "embed_norm": True, "final_norm": False}, "pre_norm=True (needs False)"),
])
def test_a_config_json_that_cannot_describe_the_model_is_refused(family, fields, named):
    config = ModelConfig(vocab_size=8, d_model=8, n_layers=1, n_heads=2, d_ff=8,
                         hf_model_type=family, **fields)
    with pytest.raises(UnsupportedModelError, match=re.escape(named)):
        to_hf_config(config)
