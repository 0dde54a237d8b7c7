"""Continued pretraining (`train.init_from`): a pretrained encoder's weights, a new vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.train.helpers import write_corpus
from zenlm.cli import main
from zenlm.errors import CheckpointError
from zenlm.io.resolve import resolve_model
from zenlm.tokenizer import Tokenizer
from zenlm.train.config import load_config
from zenlm.train.continued import transfer_rows
from zenlm.train.pretrain import pretrain

transformers = pytest.importorskip("transformers")


def minilm() -> Path:
    try:
        return resolve_model("all-minilm-l6-v2")
    except Exception as exc:  # noqa: BLE001 - the package is optional for unit tests
        pytest.skip(f"all-MiniLM-L6-v2 is not installed ({exc})")


def write_run(tmp_path: Path, corpus: Path, tokenizer: dict, **train) -> Path:
    """A 1-step masked-LM run from all-MiniLM-L6-v2 at learning rate 0: weights unchanged."""
    config = {
        "data": {"paths": [str(corpus)], "txt_unit": "file", "block_size": 32,
                 "val_fraction": 0.1, "cache_dir": str(tmp_path / "cache")},
        "tokenizer": tokenizer,
        "optim": {"lr": 0.0, "min_lr": 0.0, "warmup_steps": 0},
        "train": {"out_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2,
                  "eval_every": 0, "save_every": 0, "progress": False, "dtype": "float32",
                  "init_from": "all-minilm-l6-v2", **train},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_continuing_with_the_models_own_tokenizer_keeps_what_transformers_computes(tmp_path):
    folder = minilm()
    corpus = write_corpus(tmp_path)
    config = write_run(tmp_path, corpus, {"path": str(folder)})
    assert main(["pretrain", "--config", str(config), "--resume", "none"]) == 0

    original = transformers.BertModel.from_pretrained(folder).eval()
    continued = transformers.BertModel.from_pretrained(tmp_path / "run" / "model").eval()
    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102]])  # [CLS] ... [SEP]
    with torch.no_grad():
        expected = original(input_ids=ids).last_hidden_state
        got = continued(input_ids=ids).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_a_new_vocabulary_keeps_the_blocks_and_the_shared_tokens_rows(tmp_path):
    folder = minilm()
    corpus = write_corpus(tmp_path)
    config = write_run(tmp_path, corpus, {"kind": "wordpiece", "vocab_size": 200})
    assert main(["pretrain", "--config", str(config), "--resume", "none"]) == 0

    original = transformers.BertModel.from_pretrained(folder).state_dict()
    continued = transformers.BertModel.from_pretrained(tmp_path / "run" / "model").state_dict()
    blocks = [name for name in original if name.startswith("encoder.layer.")]
    assert len(blocks) == 6 * 16
    for name in blocks:
        torch.testing.assert_close(continued[name], original[name], rtol=0, atol=0)
    old_vocab = Tokenizer.from_folder(folder).backend.get_vocab()
    new_vocab = Tokenizer.from_folder(tmp_path / "run" / "model").backend.get_vocab()
    old_rows = original["embeddings.word_embeddings.weight"]
    new_rows = continued["embeddings.word_embeddings.weight"]
    assert new_rows.shape == (len(new_vocab), 384)
    shared = sorted(set(old_vocab) & set(new_vocab))
    assert {"[CLS]", "[SEP]", "[MASK]", "the", "cat"} <= set(shared)
    for token in shared:
        torch.testing.assert_close(new_rows[new_vocab[token]], old_rows[old_vocab[token]],
                                   rtol=0, atol=0)
    fresh = [new_vocab[t] for t in new_vocab if t not in old_vocab]
    assert fresh  # e.g. "##at": pieces the old vocabulary lacks
    for name in ("embeddings.position_embeddings.weight", "embeddings.LayerNorm.weight"):
        torch.testing.assert_close(continued[name], original[name], rtol=0, atol=0)


def test_continuing_a_masked_lm_keeps_its_head(tmp_path):
    """A BertForMaskedLM folder continued with its own tokenizer at learning rate 0 exports
    the same masked-LM logits (transformers reads both folders)."""
    from tests.train.test_mlm import POST_NORM_BERT, write_mlm_config

    corpus = write_corpus(tmp_path)
    first = tmp_path / "first"
    first.mkdir()
    pretrain(load_config(write_mlm_config(first, corpus, steps=3, model=POST_NORM_BERT),
                         ["--train.export_hf=true"]), resume="none")
    source = first / "run" / "model"
    second = tmp_path / "second"
    second.mkdir()
    path = write_run(second, corpus, {"path": str(source)}, init_from=str(source))
    assert main(["pretrain", "--config", str(path), "--resume", "none"]) == 0

    original = transformers.BertForMaskedLM.from_pretrained(source).eval()
    continued = transformers.BertForMaskedLM.from_pretrained(second / "run" / "model").eval()
    ids = torch.randint(5, original.config.vocab_size, (2, 16),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(continued(input_ids=ids).logits,
                                   original(input_ids=ids).logits, rtol=0, atol=1e-5)


def test_new_rows_follow_the_old_rows_distribution_per_dimension():
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(500, 8, generator=generator, dtype=torch.float64) * torch.arange(
        1, 9, dtype=torch.float64) + torch.linspace(-2, 2, 8, dtype=torch.float64)
    old_vocab = {f"t{i}": i for i in range(500)}
    new_vocab = {"t3": 0, "t7": 1, **{f"n{i}": i + 2 for i in range(20_000)}}
    rows = transfer_rows(old.float(), old_vocab, new_vocab, torch.Generator().manual_seed(1))
    assert torch.equal(rows[0], old[3].float()) and torch.equal(rows[1], old[7].float())
    fresh = rows[2:].double()
    mean, std = old.mean(0), old.std(0)  # float64, the rule written out
    assert torch.allclose(fresh.mean(0), mean, atol=float(4 * std.max() / 20_000 ** 0.5))
    assert torch.allclose(fresh.std(0), std, rtol=0.03)


def test_init_from_refuses_a_model_section_a_gguf_and_too_long_blocks(tmp_path):
    minilm()
    corpus = write_corpus(tmp_path)
    path = write_run(tmp_path, corpus, {"kind": "wordpiece", "vocab_size": 200})
    with pytest.raises(ValueError, match=r"remove the model section \(\['d_model'\]\)"):
        load_config(path, ["--model.d_model=64"])
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="is a .gguf file; give a Hugging Face model folder"):
        pretrain(load_config(path, [f"--train.init_from={gguf}"]), resume="none")
    with pytest.raises(ValueError, match="data.block_size=1024 exceeds all-minilm-l6-v2's 512"):
        pretrain(load_config(path, ["--data.block_size=1024"]), resume="none")


def test_an_incomplete_masked_lm_head_is_refused_not_replaced(tmp_path):
    """A *ForMaskedLM folder missing one head tensor stops the run and names the tensor
    (a folder with no head at all, like all-MiniLM-L6-v2, starts a new one: tests above)."""
    from safetensors.torch import load_file, save_file

    from tests.train.test_mlm import POST_NORM_BERT, write_mlm_config

    corpus = write_corpus(tmp_path)
    first = tmp_path / "first"
    first.mkdir()
    pretrain(load_config(write_mlm_config(first, corpus, steps=1, model=POST_NORM_BERT),
                         ["--train.export_hf=true"]), resume="none")
    source = first / "run" / "model"
    weights = load_file(source / "model.safetensors")
    del weights["cls.predictions.transform.dense.bias"]
    save_file(weights, source / "model.safetensors", metadata={"format": "pt"})
    second = tmp_path / "second"
    second.mkdir()
    path = write_run(second, corpus, {"path": str(source)}, init_from=str(source))
    with pytest.raises(CheckpointError, match=r"has an incomplete masked-LM head: no "
                                              r"tensors \['dense.bias'\]"):
        pretrain(load_config(path), resume="none")
