"""Encoder hidden states (and the masked-LM head) equal transformers' for tiny random
BERT and RoBERTa, loaded through the production converter; real MiniLM embeddings
equal sentence-transformers' recipe computed with transformers."""

from __future__ import annotations

import pytest
import torch

import zenlm
from zenlm.io.hf import load_mlm_head, save_hf_model
from zenlm.models import EncoderModel

from .tiny_hf import VOCAB, randomize

transformers = pytest.importorskip("transformers")
TOL = 1e-4


def _tiny_config(family: str):
    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=112, hidden_act="gelu", layer_norm_eps=1e-12)
    if family == "bert":
        return transformers.BertConfig(max_position_embeddings=64, type_vocab_size=2,
                                       pad_token_id=0, **common)
    return transformers.RobertaConfig(max_position_embeddings=66, type_vocab_size=1,
                                      pad_token_id=1, bos_token_id=0, eos_token_id=2, **common)


@pytest.fixture(scope="module", params=["bert", "roberta"])
def pair(request, tmp_path_factory):
    """(family, transformers *ForMaskedLM, its folder, zenlm LM loaded from the folder)."""
    config = _tiny_config(request.param)
    hf = transformers.AutoModelForMaskedLM.from_config(config, attn_implementation="eager")
    hf = randomize(hf).eval()
    hf.tie_weights()
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return request.param, hf, folder, zenlm.load(folder)


def _padded_batch(pad_id: int, lengths=(30, 17, 5), length: int = 30):
    ids = torch.full((len(lengths), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(lengths), length, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, VOCAB, (n,))
        mask[row, :n] = 1
    return ids, mask


def test_loads_as_encoder(pair):
    family, _, _, lm = pair
    assert isinstance(lm.model, EncoderModel)
    assert lm.config.arch == "encoder" and lm.config.hf_model_type == family
    assert lm.config.position_offset == (2 if family == "roberta" else 0)


def test_hidden_states_match_with_padding(pair):
    family, hf, _, lm = pair
    ids, mask = _padded_batch(lm.config.pad_token_id)
    types = torch.randint(0, 2, ids.shape) if family == "bert" else torch.zeros_like(ids)
    with torch.no_grad():
        theirs = hf.base_model(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        ours = lm.model(ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    diff = (ours[real] - theirs[real]).abs().max().item()
    assert diff <= TOL, f"{family}: max |hidden diff| {diff}"


def test_padding_does_not_change_outputs(pair):
    _, _, _, lm = pair
    ids, mask = _padded_batch(lm.config.pad_token_id)
    with torch.no_grad():
        batch = lm.model(ids, attention_mask=mask)
        for row in range(ids.shape[0]):
            real = mask[row].bool()
            alone = lm.model(ids[row][real][None])
            assert torch.allclose(batch[row][real], alone[0], atol=1e-5)


def test_mlm_head_matches(pair):
    family, hf, folder, lm = pair
    head = load_mlm_head(folder, lm.model)
    ids, mask = _padded_batch(lm.config.pad_token_id)
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask).logits
        ours = head(lm.model(ids, attention_mask=mask))
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max().item() <= TOL


def test_zenlm_save_transformers_load(pair, tmp_path):
    family, hf, _, lm = pair
    save_hf_model(lm.model, tmp_path)
    reloaded = transformers.AutoModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(reloaded) is type(hf.base_model)
    ids, mask = _padded_batch(lm.config.pad_token_id)
    with torch.no_grad():
        theirs = reloaded(ids, attention_mask=mask).last_hidden_state
        ours = lm.model(ids, attention_mask=mask)
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max().item() <= TOL
    again = zenlm.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(again.model(ids, attention_mask=mask), ours)
    with pytest.raises(TypeError, match="encoder.*embed"):
        again.logits(ids)


SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome, I loved every minute of it!",
    "zenlm loads BERT-family encoders from Hugging Face folders.",
    "Short.",
]


def test_minilm_sentence_embeddings_match_transformers(minilm_folder):
    lm = zenlm.load(minilm_folder)
    ours = lm.embed(SENTENCES)
    hf = transformers.AutoModel.from_pretrained(minilm_folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_folder)
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = hf(**batch).last_hidden_state
    weights = batch["attention_mask"][..., None].float()
    theirs = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
    assert ours.shape == (len(SENTENCES), 384)
    assert (ours - theirs).abs().max().item() <= 1e-5
    # Similar sentences are nearer than unrelated ones (a sanity check of the vectors).
    related = lm.embed(["A man is eating a meal.", "The sky is blue today."])
    assert ours[0] @ related[0] > ours[0] @ related[1]
