"""Encoder-decoder logits equal transformers' for tiny random Marian, BART and T5 models,
both ways through the production folder code: a transformers folder loaded by
`zenlm.load`, and a zenlm model saved by `save_hf_model` loaded by transformers; with
padding in the source and the target batches. Unsupported config fields are refused."""

from __future__ import annotations

import json

import pytest
import torch

import zenlm
from zenlm.config import ModelConfig, from_hf_config
from zenlm.errors import UnsupportedModelError
from zenlm.io.hf import save_hf_model
from zenlm.models import Seq2SeqLM, build_model

from .tiny_hf import VOCAB, randomize

transformers = pytest.importorskip("transformers")
TOL = 1e-4
SIZES = dict(d_model=32, n_heads=4, d_ff=48, n_layers=2, n_decoder_layers=3)


def _marian(**extra):  # noqa: ANN202
    base = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3,
                encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
                decoder_ffn_dim=48, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                decoder_start_token_id=0, scale_embedding=True, activation_function="relu")
    return transformers.MarianConfig(**{**base, **extra})


#: name -> (transformers config, zenlm ModelConfig fields of the same family)
FAMILIES = {
    "marian": (
        lambda: _marian(),
        dict(positions="sinusoidal", norm="layernorm", norm_bias=True, activation="relu",
             gated_mlp=False, qkv_bias=True, attn_out_bias=True, mlp_bias=True, pre_norm=False,
             final_norm=False, scale_embeddings=True, lm_head_bias=True, tie_embeddings=True,
             share_embeddings=True, max_seq_len=64),
    ),
    "marian-untied": (
        lambda: _marian(share_encoder_decoder_embeddings=False, tie_word_embeddings=False,
                        scale_embedding=False, activation_function="gelu"),
        dict(positions="sinusoidal", norm="layernorm", norm_bias=True, activation="gelu",
             gated_mlp=False, qkv_bias=True, attn_out_bias=True, mlp_bias=True, pre_norm=False,
             final_norm=False, lm_head_bias=False, tie_embeddings=False, share_embeddings=True,
             max_seq_len=64),
    ),
    "bart": (
        lambda: transformers.BartConfig(
            vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
            decoder_ffn_dim=48, max_position_embeddings=40, scale_embedding=True,
            pad_token_id=0),
        dict(positions="learned", position_offset=2, max_seq_len=42, embed_norm=True,
             norm="layernorm", norm_bias=True, activation="gelu", gated_mlp=False,
             qkv_bias=True, attn_out_bias=True, mlp_bias=True, pre_norm=False, final_norm=False,
             scale_embeddings=True, lm_head_bias=True, tie_embeddings=True,
             share_embeddings=True),
    ),
    "bart-untied": (
        lambda: transformers.BartConfig(
            vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=3,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
            decoder_ffn_dim=48, max_position_embeddings=40, tie_word_embeddings=False,
            activation_function="gelu_new", pad_token_id=0),
        dict(positions="learned", position_offset=2, max_seq_len=42, embed_norm=True,
             norm="layernorm", norm_bias=True, activation="gelu_tanh", gated_mlp=False,
             qkv_bias=True, attn_out_bias=True, mlp_bias=True, pre_norm=False, final_norm=False,
             lm_head_bias=True, tie_embeddings=False, share_embeddings=False),
    ),
}


def _hf_model(name: str):  # noqa: ANN202
    """A randomized transformers model of family `name`, eval mode, float32."""
    model = transformers.AutoModelForSeq2SeqLM.from_config(
        FAMILIES[name][0](), attn_implementation="eager")
    randomize(model, seed=1)
    with torch.no_grad():
        for module in model.modules():  # fixed tables are not weights: restore them
            if hasattr(module, "create_weight"):
                module.weight.copy_(module.create_weight())
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.normal_(generator=torch.Generator().manual_seed(2))
    return model.eval()


def _zenlm_model(name: str) -> Seq2SeqLM:
    """A randomly built zenlm model of family `name` (norms and biases random too)."""
    torch.manual_seed(3)
    family = FAMILIES[name][0]().model_type
    config = ModelConfig(vocab_size=VOCAB, arch="encoder-decoder", hf_model_type=family,
                         pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                         **SIZES, **FAMILIES[name][1])
    return randomize(build_model(config), seed=4).eval()


def _batch(pad_id: int) -> dict[str, torch.Tensor]:
    """Sources right-padded to 11 and targets right-padded to 7 (row 0 unpadded)."""
    generator = torch.Generator().manual_seed(5)
    src = torch.randint(3, VOCAB, (3, 11), generator=generator)
    tgt = torch.randint(3, VOCAB, (3, 7), generator=generator)
    src_mask, tgt_mask = torch.ones_like(src), torch.ones_like(tgt)
    for row, (s, t) in enumerate([(11, 7), (6, 4), (2, 1)]):
        src_mask[row, s:] = 0
        tgt_mask[row, t:] = 0
    return dict(src=src.masked_fill(src_mask == 0, pad_id), src_mask=src_mask,
                tgt=tgt.masked_fill(tgt_mask == 0, pad_id), tgt_mask=tgt_mask)


def _compare(hf, model: Seq2SeqLM, batch: dict[str, torch.Tensor]) -> float:  # noqa: ANN001
    with torch.no_grad():
        theirs = hf(input_ids=batch["src"], attention_mask=batch["src_mask"],
                    decoder_input_ids=batch["tgt"],
                    decoder_attention_mask=batch["tgt_mask"]).logits
        ours = model(batch["src"], batch["tgt"], src_mask=batch["src_mask"],
                     tgt_mask=batch["tgt_mask"])
    real = batch["tgt_mask"].bool()
    return (ours[real] - theirs[real]).abs().max().item()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_transformers_folder_loads_with_same_logits(name, tmp_path):
    hf = _hf_model(name)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    lm = zenlm.load(tmp_path, quantize=None)
    assert isinstance(lm.model, Seq2SeqLM)
    assert lm.config.hf_model_type == hf.config.model_type
    diff = _compare(hf, lm.model, _batch(hf.config.pad_token_id))
    assert diff <= TOL, f"{name}: max |logit diff| {diff}"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_zenlm_folder_loads_in_transformers_with_same_logits(name, tmp_path):
    model = _zenlm_model(name)
    save_hf_model(model, tmp_path)
    hf, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    diff = _compare(hf.eval(), model, _batch(model.config.pad_token_id))
    assert diff <= TOL, f"{name}: max |logit diff| {diff}"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_zenlm_folder_round_trips(name, tmp_path):
    """What zenlm writes, zenlm reads back as the same function (config and logits)."""
    model = _zenlm_model(name)
    save_hf_model(model, tmp_path)
    again = zenlm.load(tmp_path, quantize=None).model
    batch = _batch(0)
    with torch.no_grad():
        ours = model(batch["src"], batch["tgt"], src_mask=batch["src_mask"],
                     tgt_mask=batch["tgt_mask"])
        theirs = again(batch["src"], batch["tgt"], src_mask=batch["src_mask"],
                       tgt_mask=batch["tgt_mask"])
    real = batch["tgt_mask"].bool()
    assert (ours[real] - theirs[real]).abs().max().item() <= 1e-6
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == \
        model.config.hf_model_type


@pytest.mark.parametrize(("family", "field", "value"), [
    ("marian", "decoder_attention_heads", 2),
    ("marian", "decoder_ffn_dim", 64),
    ("marian", "normalize_before", True),
    ("marian", "normalize_embedding", True),
    ("marian", "decoder_vocab_size", VOCAB + 1),
    ("marian", "activation_function", "tanh"),
    ("bart", "normalize_before", True),
    ("bart", "add_final_layer_norm", True),
    ("bart", "encoder_attention_heads", 8),
    ("bart", "encoder_ffn_dim", 64),
])
def test_unsupported_field_is_refused_by_name(family, field, value):
    hf = FAMILIES[family][0]().to_dict()
    hf[field] = value
    with pytest.raises(UnsupportedModelError, match=field):
        from_hf_config(hf)


def test_marian_writer_refuses_a_pre_norm_model(tmp_path):
    fields = {**FAMILIES["marian"][1], "pre_norm": True}
    config = ModelConfig(vocab_size=VOCAB, arch="encoder-decoder", hf_model_type="marian",
                         **SIZES, **fields)
    with pytest.raises(UnsupportedModelError, match="pre_norm"):
        save_hf_model(build_model(config), tmp_path)
