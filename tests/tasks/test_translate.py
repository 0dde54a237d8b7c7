"""The translate task: parallel-text readers, teacher forcing, and finetune -> evaluate -> predict.

Oracles: the label-smoothed cross-entropy written out in float64 here, and sacreBLEU
called directly on `zenlm predict`'s output for `zenlm evaluate`'s BLEU and chrF.
"""

from __future__ import annotations

import json
import logging
import random

import pytest
import torch

from zenlm.cli import main
from zenlm.config import ModelConfig
from zenlm.data.parallel import read_parallel
from zenlm.data.tasks import TaskDataError
from zenlm.models import build_model
from zenlm.tasks.spec import TaskInfo
from zenlm.tasks.translate import collate_pairs, encode_pairs, seq2seq_loss
from zenlm.train.objectives import IGNORE, decoder_inputs

WORDS = ["red", "blue", "green", "cat", "dog", "bird", "runs", "sits", "sleeps", "small"]
GERMAN = dict(zip(WORDS, ["rot", "blau", "gruen", "Katze", "Hund", "Vogel", "rennt", "sitzt",
                          "schlaeft", "klein"], strict=True))


def _write(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------- readers
def test_aligned_files_skip_empty_pairs_and_trailing_blank_lines(tmp_path):
    src = _write(tmp_path / "a.en", ["a dog", "", "a cat", "  ", "bird", ""])
    tgt = _write(tmp_path / "a.de", ["ein Hund", "x", "eine Katze", "y", "", ""])
    data = read_parallel(src, tgt)
    assert [(p.source, p.target, p.line) for p in data.pairs] == [
        ("a dog", "ein Hund", 1), ("a cat", "eine Katze", 3)]
    assert data.skipped_empty == 4  # lines 2, 4, 5 and 6 (aligned only with the blank ends)
    untrimmed = _write(tmp_path / "b.en", ["a dog", "a cat", "", ""])
    assert len(read_parallel(untrimmed, _write(tmp_path / "b.de", ["x", "y"])).pairs) == 2


def test_misaligned_files_name_both_files_and_the_line(tmp_path):
    src = _write(tmp_path / "a.en", ["one", "two", "three"])
    tgt = _write(tmp_path / "a.de", ["eins", "zwei"])
    with pytest.raises(TaskDataError, match=r"a\.de:3: .*a\.en has 3 lines and .*a\.de has 2"):
        read_parallel(src, tgt)


def test_tsv_and_jsonl_errors_name_file_and_line(tmp_path):
    tsv = _write(tmp_path / "p.tsv", ["source\ttarget", "a\tb", "only one column"])
    with pytest.raises(TaskDataError, match=r"p\.tsv:3: expected 2 tab-separated columns"):
        read_parallel(tsv)
    jsonl = _write(tmp_path / "p.jsonl", ['{"source": "a", "target": "b"}', '{"source": "c"}'])
    with pytest.raises(TaskDataError, match=r"p\.jsonl:2: no 'target' field"):
        read_parallel(jsonl)
    assert [p.source for p in read_parallel(jsonl, labelled=False).pairs] == ["a", "c"]


def test_long_inputs_are_truncated_with_a_count_or_refused(tmp_path, caplog):
    from tests.tiny_tokenizer import byte_level_bpe
    from zenlm.tokenizer import Tokenizer

    tokenizer = Tokenizer(byte_level_bpe(WORDS * 3), eos_token="</s>", pad_token="<s>")
    pairs = read_parallel(_write(tmp_path / "p.tsv", [
        "red cat\tred cat", " ".join(WORDS) + "\tred"])).pairs
    info = TaskInfo(task="translate", max_length=6)
    with caplog.at_level(logging.WARNING):
        features = encode_pairs(tokenizer, pairs, info)
    assert "1 of 4 texts (sources and targets) were longer than max_length=6" in caplog.text
    eos = tokenizer.eos_token_id
    assert len(features[1].ids) == 6 and features[1].ids[-1] == eos
    assert features[0].ids == tokenizer.encode("red cat") + [eos]
    info.options["long_inputs"] = "error"
    with pytest.raises(ValueError, match="line 2: .* tokens, more than max_length=6"):
        encode_pairs(tokenizer, pairs, info)


# --------------------------------------------------------------- the loss
def test_decoder_inputs_are_labels_shifted_right_after_the_start_token():
    labels = torch.tensor([[5, 6, 7, 2], [8, 2, IGNORE, IGNORE]])
    assert decoder_inputs(labels, 0).tolist() == [[0, 5, 6, 7], [0, 8, 2, 0]]


def test_label_smoothed_loss_matches_the_formula_in_float64():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                         arch="encoder-decoder", positions="sinusoidal", norm="layernorm",
                         decoder_start_token_id=0, pad_token_id=0)
    model = build_model(config).eval()
    from zenlm.tasks.translate import PairFeature

    batch = collate_pairs([PairFeature([3, 4, 5, 1], [6, 7, 1]), PairFeature([8, 1], [9, 1])], 0)
    eps = 0.1
    loss = seq2seq_loss(model, batch, eps)
    logits = model(batch.src_ids, decoder_inputs(batch.labels, 0), src_mask=batch.src_mask)
    logp = torch.log_softmax(logits.double(), dim=-1)
    total, count = 0.0, 0
    for b in range(2):
        for t in range(batch.labels.shape[1]):
            y = int(batch.labels[b, t])
            if y == IGNORE:
                continue
            total += (1 - eps) * -logp[b, t, y] + eps * -logp[b, t].mean()
            count += 1
    assert count == 5
    assert float(loss) == pytest.approx(float(total / count), rel=1e-5)


# --------------------------------------------------------- the whole CLI
def _corpus(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = rng.sample(WORDS, rng.randint(2, 4))
        pairs.append((" ".join(words), " ".join(GERMAN[w] for w in words)))
    return pairs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Marian-shaped model trained by `zenlm finetune --task translate` on word swaps."""
    from tests.tiny_tokenizer import byte_level_bpe
    from zenlm.io.hf import save_hf_model
    from zenlm.tokenizer import Tokenizer

    tmp = tmp_path_factory.mktemp("translate")
    train, val = _corpus(400, 0), _corpus(30, 1)
    texts = [s for pair in train for s in pair]
    tokenizer = Tokenizer(byte_level_bpe(texts, vocab_size=300), eos_token="</s>",
                          pad_token="<s>")
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, d_model=64, n_layers=1, n_heads=4, d_ff=128,
        arch="encoder-decoder", max_seq_len=64, norm="layernorm", norm_bias=True,
        pre_norm=False, final_norm=False, activation="relu", gated_mlp=False, qkv_bias=True,
        attn_out_bias=True, mlp_bias=True, positions="sinusoidal", scale_embeddings=True,
        lm_head_bias=True, tie_embeddings=True, hf_model_type="marian",
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    save_hf_model(build_model(config), tmp / "init", tokenizer)
    src = _write(tmp / "train.en", [s for s, _ in train])
    tgt = _write(tmp / "train.de", [t for _, t in train])
    val_tsv = _write(tmp / "val.tsv", [f"{s}\t{t}" for s, t in val])
    assert main(["finetune", "--task", "translate", "--model", str(tmp / "init"),
                 "--train", str(src), "--train-target", str(tgt), "--val", str(val_tsv),
                 "--output", str(tmp / "run"), "--max-steps", "150", "--batch-size", "32",
                 "--lr", "3e-3", "--warmup-fraction", "0.1", "--autocast", "float32"]) == 0
    return tmp, tmp / "run" / "model", val


def test_finetune_evaluate_predict_translate(trained, capsys):
    sacrebleu = pytest.importorskip("sacrebleu")
    tmp, model_dir, val = trained
    capsys.readouterr()
    src = _write(tmp / "val.en", [s for s, _ in val])
    tgt = _write(tmp / "val.de", [t for _, t in val])
    assert main(["evaluate", "--task", "translate", "--model", str(model_dir), "--source",
                 str(src), "--target", str(tgt), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    out = tmp / "pred.jsonl"
    assert main(["predict", "--task", "translate", "--model", str(model_dir), "--input",
                 str(src), "--output", str(out)]) == 0
    hypotheses = [json.loads(line)["translation"] for line in out.read_text().splitlines()]
    refs = [t for _, t in val]
    assert scores["n"] == len(hypotheses) == 30
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [refs]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [refs]).score)
    assert scores["bleu_lowercase"] == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, [refs], lowercase=True).score)
    # word-for-word substitution is learnable in 150 steps: far above an untrained model's 0
    assert scores["bleu"] > 40, (scores, hypotheses[:5])
