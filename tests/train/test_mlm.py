"""Masked LM end to end: a tiny BERT pretrained on Shakespeare beats the unigram baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.train.helpers import write_corpus
from zenlm.cli import main
from zenlm.config import ModelConfig
from zenlm.data.shards import BlockSampler, ShardSet
from zenlm.errors import UnsupportedModelError
from zenlm.train.config import load_config
from zenlm.train.export import load_trained
from zenlm.train.objectives import IGNORE, MaskedLMObjective, masked_lm_accuracy
from zenlm.train.pretrain import make_objective, pretrain, resolve_objective

BLOCK = 64

#: A BERT-shaped encoder (LayerNorm with bias, GELU, learned positions), pre-norm for a
#: fast start, 0.11M parameters over Shakespeare's characters.
TINY_BERT = {
    "arch": "encoder", "d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 256,
    "norm": "layernorm", "norm_bias": True, "activation": "gelu", "gated_mlp": False,
    "positions": "learned", "qkv_bias": True, "attn_out_bias": True, "mlp_bias": True,
    "pre_norm": True, "final_norm": True, "tie_embeddings": True, "hf_model_type": "bert",
}


#: The same encoder in BertForMaskedLM's own shape (post-norm, normed embeddings, segments).
POST_NORM_BERT = {**TINY_BERT, "pre_norm": False, "final_norm": False, "embed_norm": True,
                  "type_vocab_size": 2}


def write_mlm_config(tmp_path: Path, corpus: Path, steps: int = 300,
                     model: dict | None = None) -> Path:
    config = {
        "model": model or TINY_BERT,
        "data": {"paths": [str(corpus)], "block_size": BLOCK, "val_fraction": 0.1,
                 "cache_dir": str(tmp_path / "cache")},
        "tokenizer": {"kind": "char"},
        "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 30, "weight_decay": 0.01},
        "train": {"out_dir": str(tmp_path / "run"), "max_steps": steps, "batch_size": 32,
                  "objective": "mlm", "eval_every": 0, "eval_batches": 4, "save_every": 0,
                  "progress": False, "export_hf": False, "seed": 1337},
    }
    path = tmp_path / "mlm.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def unigram_token(shards: ShardSet, special_ids: set[int], vocab_size: int) -> int:
    """The most frequent non-special token of the training split."""
    counts = np.bincount(np.asarray(shards.train), minlength=vocab_size)
    counts[sorted(special_ids)] = 0
    return int(counts.argmax())


def test_tiny_bert_beats_the_unigram_baseline_on_held_out_text(shared_data, tmp_path):
    corpus = shared_data / "tinyshakespeare" / "input.txt"
    if not corpus.is_file():
        pytest.skip(f"{corpus} not found")
    config = load_config(write_mlm_config(tmp_path, corpus))
    torch.set_num_threads(min(2, torch.get_num_threads()))
    result = pretrain(config, resume="none")
    assert result.steps == 300 and result.val_loss is not None

    model, tokenizer = load_trained(tmp_path / "run")  # encoder + head from the checkpoint
    assert tokenizer is not None
    shards = ShardSet.open(next(p for p in (tmp_path / "cache").iterdir()
                                if (p / "meta.json").is_file()))
    objective = make_objective("mlm", tokenizer, config)
    assert isinstance(objective, MaskedLMObjective)
    top = unigram_token(shards, set(objective.special_ids), tokenizer.vocab_size)

    val = BlockSampler(shards.val, BLOCK, shuffle=False)  # the held-out last 10%
    ids = val.batch(0, val.blocks_per_epoch)[:, :-1]
    inputs, labels = objective.mask(ids, torch.Generator().manual_seed(0))
    chosen = labels != IGNORE
    accuracy = masked_lm_accuracy(model, inputs, labels)
    baseline = float((labels[chosen] == top).float().mean())
    print(f"masked-token accuracy {accuracy:.3f} vs unigram {baseline:.3f} "
          f"({tokenizer.backend.id_to_token(top)!r}) over {int(chosen.sum())} masked tokens")
    assert chosen.sum() > 10_000
    assert accuracy > baseline + 0.04


def test_objective_follows_the_architecture():
    encoder = ModelConfig(vocab_size=8, d_model=8, n_layers=1, n_heads=2, d_ff=8, arch="encoder")
    decoder = ModelConfig(vocab_size=8, d_model=8, n_layers=1, n_heads=2, d_ff=8)
    assert resolve_objective("auto", encoder) == "mlm"
    assert resolve_objective("auto", decoder) == "causal"
    with pytest.raises(ValueError, match="needs model.arch=encoder"):
        resolve_objective("mlm", decoder)
    with pytest.raises(ValueError, match="needs model.arch=encoder-decoder, got encoder"):
        resolve_objective("span", encoder)
    with pytest.raises(ValueError, match="must be one of"):
        resolve_objective("denoise", encoder)


def test_evaluation_masks_are_a_function_of_the_block():
    objective = MaskedLMObjective(mask_id=3, vocab_size=50, special_ids=[0, 1])
    batch = torch.randint(4, 50, (4, 33))
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            seen.append(ids.clone())
            return torch.zeros(*ids.shape, 50)

    probe = Probe().eval()
    objective(probe, batch)
    objective(probe, batch)
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[0], batch[:, :-1])


def test_export_of_a_masked_lm_run_gives_transformers_the_same_logits(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    corpus = write_corpus(tmp_path)
    config = load_config(write_mlm_config(tmp_path, corpus, steps=3, model=POST_NORM_BERT))
    pretrain(config, resume="none")
    out = tmp_path / "exported"
    assert main(["export", str(tmp_path / "run"), "--to", "hf", "--out", str(out)]) == 0

    ours, _ = load_trained(tmp_path / "run")
    theirs = transformers.BertForMaskedLM.from_pretrained(out).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, ours.config.vocab_size, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding, as BERT's tokenizer pads
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], rtol=0, atol=1e-4)
    gguf = ["export", str(tmp_path / "run"), "--to", "gguf", "--out", str(tmp_path / "m.gguf")]
    assert main(gguf) == 2  # GGUF holds decoders: refused by name, not a crash
    assert "a masked LM exports to hf only" in capsys.readouterr().err


def test_export_of_a_pre_norm_encoder_as_bert_is_refused(tmp_path, capsys):
    """BERT's config.json describes post-norm blocks only: writing this model as one would
    give transformers a different function, so the export names the fields instead."""
    corpus = write_corpus(tmp_path)
    pretrain(load_config(write_mlm_config(tmp_path, corpus, steps=1)), resume="none")
    code = main(["export", str(tmp_path / "run"), "--to", "hf", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "pre_norm=True (needs False)" in capsys.readouterr().err


def test_a_run_whose_export_would_be_refused_is_refused_before_training(tmp_path):
    corpus = write_corpus(tmp_path)
    config = load_config(write_mlm_config(tmp_path, corpus, steps=1))
    config.train.export_hf = True  # TINY_BERT is pre-norm: no BERT config.json describes it
    with pytest.raises(UnsupportedModelError, match="pre_norm=True"):
        pretrain(config, resume="none")
    assert not (tmp_path / "run" / "checkpoints").exists()
