"""`zenlm finetune` refuses, before training, settings the model cannot run."""

from __future__ import annotations

import pytest

from zenlm.cli import main

transformers = pytest.importorskip("transformers")


def test_max_length_beyond_learned_positions_is_refused_up_front(tmp_path, capsys):
    """A small encoder pretrained on 16-token blocks has 16 positions: --max-length 32 would
    fail on the first long row mid-run; it is refused at once, naming both numbers."""
    folder = tmp_path / "bert"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16, pad_token_id=0)
    transformers.BertModel(config).save_pretrained(folder)
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "good film\t1\nbad film\t0\n" * 10, encoding="utf-8")
    args = ["finetune", "--task", "classify", "--model", str(folder), "--train", str(data),
            "--output", str(tmp_path / "run"), "--max-steps", "1", "--batch-size", "4"]
    assert main([*args, "--max-length", "32"]) == 2
    err = capsys.readouterr().err
    assert "--max-length 32 is beyond the 16 learned positions" in err
    assert not (tmp_path / "run").exists()
    assert main([*args, "--max-length", "16"]) == 0
