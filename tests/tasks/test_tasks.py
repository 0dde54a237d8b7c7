"""Task pieces: classification padding invariance, NER label alignment, QA windows and
post-processing, SFT assistant-only labels and leak-free packing."""

from __future__ import annotations

import dataclasses

import pytest
import tokenizers
import torch

import zenlm
from zenlm.config import ModelConfig
from zenlm.data.tasks import QAExample
from zenlm.models import build_model
from zenlm.models.heads import SequenceClassifier, SpanQA, TokenClassifier
from zenlm.nn import Block
from zenlm.tasks.batching import TaskSampler
from zenlm.tasks.classify import collate_classify, encode_texts
from zenlm.tasks.ner import IGNORE, collate_tokens, encode_words, predict_tags, token_loss
from zenlm.tasks.qa import best_spans, collate_qa, postprocess_qa, qa_features, qa_loss
from zenlm.tasks.runner import set_dropout
from zenlm.tasks.sft import (
    collate_sft,
    encode_conversation,
    pack,
    packed_logits,
    segment_positions,
    sft_loss,
)
from zenlm.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def minilm(minilm_folder):
    return zenlm.load(minilm_folder)


def _tiny_decoder(vocab, **family):
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4,
                                   n_kv_heads=2, d_ff=48, max_seq_len=256, **family)).eval()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classification_logits_with_padding_equal_without(minilm, pooling):
    model = SequenceClassifier(minilm.model, 3, pooling=pooling).eval()
    texts = ["a fine, moving film", "bad", "the plot is long and the acting is wooden throughout"]
    features = encode_texts(minilm.tokenizer, texts, [0, 1, 2])
    batch = collate_classify(features, pad_id=0)
    with torch.no_grad():
        padded = model(batch.ids, batch.attention_mask)
        alone = torch.cat([model(torch.tensor([f.ids])) for f in features])
    assert batch.attention_mask.sum(1).tolist() != [batch.ids.shape[1]] * 3  # really padded
    assert (padded - alone).abs().max().item() <= 1e-5


def test_decoder_last_token_classification_ignores_padding():
    decoder = _tiny_decoder(50)
    model = SequenceClassifier(decoder, 2).eval()
    assert model.pooling == "last"
    rows = [[5, 6, 7, 8, 9], [10, 11]]
    batch = collate_classify([type("F", (), {"ids": r, "label": 0})() for r in rows], pad_id=0)
    with torch.no_grad():
        padded = model(batch.ids, batch.attention_mask)
        alone = torch.cat([model(torch.tensor([r])) for r in rows])
    assert (padded - alone).abs().max().item() <= 1e-5


def test_ner_labels_on_first_subword_and_predictions_per_word(minilm):
    words = [["Johannesburg", "hosts", "ABCDEFGHIJKL", "."], ["EU", "rejects"]]
    tags = [[1, 0, 2, 0], [2, 0]]
    features = encode_words(minilm.tokenizer, words, tags)
    first = features[0]
    assert len(first.word_starts) == 4
    labelled = [(i, lab) for i, lab in enumerate(first.labels) if lab != IGNORE]
    assert [lab for _, lab in labelled] == [1, 0, 2, 0]
    assert [i for i, _ in labelled] == first.word_starts
    # A sentence longer than max_length is split into pieces, every word kept.
    pieces = encode_words(minilm.tokenizer, [["word"] * 30], [[0] * 30], max_length=16)
    assert len(pieces) > 1 and sum(len(p.word_starts) for p in pieces) == 30
    model = TokenClassifier(minilm.model, 3).eval()
    loss = token_loss(model, collate_tokens(features, 0))
    assert torch.isfinite(loss)
    predicted = predict_tags(model, pieces, 1, pad_id=0)
    assert len(predicted[0]) == 30


def _squad_example():
    context = ("The Normans were the people who in the 10th and 11th centuries gave their name "
               "to Normandy, a region in France. They were descended from Norse raiders. ") * 3
    start = context.index("Normandy")
    return QAExample("q1", "What region did the Normans name?", context, [("Normandy", start)])


def test_qa_windows_locate_the_answer(minilm):
    example = _squad_example()
    features = qa_features(minilm.tokenizer, [example], max_length=48, stride=16)
    assert len(features) > 2
    found = [f for f in features if f.start > 0]
    assert found, "the answer must be inside at least one window"
    for f in found:
        assert example.context[f.offsets[f.start][0]:f.offsets[f.end][1]] == "Normandy"
    for f in features:
        assert len(f.ids) <= 48
    # Oracle logits pointing at the labelled span decode back to the answer text.
    logits = []
    for f in features:
        start, end = torch.zeros(len(f.ids)), torch.zeros(len(f.ids))
        start[f.start] += 5.0 if f.start else 0.0
        end[f.end] += 5.0 if f.end else 0.0
        logits.append((start, end))
    assert postprocess_qa([example], features, logits) == {"q1": "Normandy"}
    model = SpanQA(minilm.model).eval()
    assert torch.isfinite(qa_loss(model, collate_qa(features, 0)))


def test_best_spans_respect_context_order_and_length():
    offsets = [None, None, (0, 3), (4, 7), (8, 11), None]
    start = torch.tensor([9.0, 0, 1, 2, 8, 0])
    end = torch.tensor([9.0, 0, 7, 1, 3, 0])
    spans = best_spans(start, end, offsets, max_answer_length=2)
    # Token 0 (special) scores highest but is outside the context; (4, 2) is backwards
    # (score 15); (2, 4) is 3 tokens, too long.
    assert spans[0] == (11.0, 8, 11)
    assert (8.0, 0, 3) in spans and all(s[1] < s[2] for s in spans)
    assert not any((s[1], s[2]) == (0, 11) for s in spans)


def _chat_tokenizer(minilm):
    backend = tokenizers.Tokenizer.from_str(minilm.tokenizer.backend.to_str())
    backend.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
    return Tokenizer(backend, eos_token="<|im_end|>", chat_template=template)


def test_sft_only_assistant_tokens_carry_loss(minilm):
    tokenizer = _chat_tokenizer(minilm)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"},
                {"role": "assistant", "content": "hello friend"},
                {"role": "user", "content": "bye"}, {"role": "assistant", "content": "goodbye"}]
    feature = encode_conversation(tokenizer, messages)
    labelled = tokenizer.decode([t for t in feature.labels if t != IGNORE])
    assert labelled.replace(" ", "") == "hellofriend<|im_end|>goodbye<|im_end|>"
    assert tokenizer.decode([i for i, lab in zip(feature.ids, feature.labels, strict=True)
                             if lab == IGNORE]).count("hi there") == 1


# Llama's defaults, and a family that scales its embeddings and output and offsets learned
# positions: packed rows must run the same parts as the model's own forward.
FAMILIES = [{}, {"scale_embeddings": True, "scale_output": True, "positions": "learned",
                 "position_offset": 2}]


@pytest.mark.parametrize("family", FAMILIES)
def test_packing_gives_each_conversation_its_own_logits_and_loss(minilm, family):
    tokenizer = _chat_tokenizer(minilm)
    conversations = [[{"role": "user", "content": f"question {i} " * (i + 1)},
                      {"role": "assistant", "content": f"answer {i}"}] for i in range(4)]
    features = [encode_conversation(tokenizer, c) for c in conversations]
    rows = pack(features, max_length=60)
    assert len(rows) < len(features)  # something was packed
    model = _tiny_decoder(tokenizer.vocab_size, **family)
    batch = collate_sft(rows, pad_id=0)
    with torch.no_grad():
        packed = packed_logits(model, batch.ids, batch.segments)
        row, seg = 0, 2  # the second conversation of the first row
        where = batch.segments[row] == seg
        alone = model(batch.ids[row][where][None])[0]
        assert (packed[row][where] - alone).abs().max().item() <= 1e-5
        assert segment_positions(batch.segments)[row][where].tolist() == list(range(len(alone)))
        # Loss of the packed batch equals the loss over the same examples unpacked.
        unpacked = collate_sft(features, pad_id=0)
        n_packed = (batch.labels[:, 1:] != IGNORE).sum()
        n_unpacked = (unpacked.labels[:, 1:] != IGNORE).sum()
        assert n_packed == n_unpacked
        assert torch.allclose(sft_loss(model, batch), sft_loss(model, unpacked), atol=1e-5)


def test_sampler_is_a_function_of_seed_and_position():
    sampler = TaskSampler(list(range(10)), lambda xs: xs, block_size=1, seed=3)
    first = [sampler.batch(n, 4) for n in (0, 4, 8, 12)]
    again = TaskSampler(list(range(10)), lambda xs: xs, block_size=1, seed=3)
    assert [again.batch(n, 4) for n in (12, 0, 8, 4)] == [first[3], first[0], first[2], first[1]]
    assert sorted(first[0] + first[1] + first[2][:2]) == list(range(10))


def test_length_grouped_batches_cover_every_example_once_per_epoch():
    lengths = [(7 * i) % 23 + 1 for i in range(100)]
    sampler = TaskSampler(list(range(100)), lambda xs: xs, block_size=1, seed=0,
                          group_batch=10, lengths=lengths)
    batches = [sampler.batch(n, 10) for n in range(0, 100, 10)]
    assert sorted(i for b in batches for i in b) == list(range(100))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread < 40  # random batches of 10 would span ~18 each


def test_extend_vocabulary_encodes_unknown_chinese_characters(minilm_folder):
    from zenlm.tasks.vocab import extend_vocabulary, unknown_characters

    lm = zenlm.load(minilm_folder)
    texts = ["酒店很好，服务很棒", "房间太差"]
    unk = lm.tokenizer.token_to_id("[UNK]")
    assert unk in lm.tokenizer.encode(texts[0])
    added = unknown_characters(lm.tokenizer, texts, 100)
    assert "酒" in added and "，" not in added  # punctuation is already known
    old_vocab = lm.config.vocab_size
    assert extend_vocabulary(lm.tokenizer, lm.model, added) == len(added)
    ids = lm.tokenizer.encode(texts[0])
    assert unk not in ids and max(ids) >= old_vocab
    assert lm.model.embed.weight.shape[0] == lm.config.vocab_size == old_vocab + len(added)
    with torch.no_grad():
        assert torch.isfinite(lm.model(torch.tensor([ids]))).all()


def test_qa_labels_recover_every_real_squad_answer(minilm, shared_data):
    from zenlm.data.tasks import read_squad

    examples = read_squad(shared_data / "squad" / "train-sample.json")[:300]
    features = qa_features(minilm.tokenizer, examples, max_length=128, stride=48)
    located = set()
    for f in features:
        if f.start:
            text, _ = examples[f.example].answers[0]
            span = examples[f.example].context[f.offsets[f.start][0]:f.offsets[f.end][1]]
            assert span.strip() == text.strip() or text in span, (span, text)
            located.add(f.example)
    assert len(located) == len(examples)  # every answer is inside some window


def test_dropout_acts_in_training_only_and_in_every_block(minilm):
    # A copy, config included (set_dropout writes config.dropout): the shared fixture's
    # model and config stay as loaded.
    backbone = build_model(dataclasses.replace(minilm.config))
    backbone.load_state_dict(minilm.model.state_dict())
    ids = torch.tensor([[101, 2023, 2003, 1037, 2204, 3185, 102]])
    with torch.no_grad():
        before = backbone.eval()(ids)
        set_dropout(backbone, 0.1)
        assert backbone.config.dropout == 0.1
        assert [b.dropout.p for b in backbone.blocks] == [0.1] * len(backbone.blocks)
        assert torch.equal(backbone.eval()(ids), before)  # inference never drops
        backbone.train()
        torch.manual_seed(3)
        first = backbone(ids)
        torch.manual_seed(3)
        assert torch.equal(backbone(ids), first)  # the trainer's per-step seed repeats it
        assert (first - before).abs().max() > 1e-2  # and training does drop
        set_dropout(backbone, 0.0)
        assert torch.equal(backbone(ids), before)  # 0: none, even in training
    seq2seq = build_model(ModelConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=4,
                                      d_ff=48, arch="encoder-decoder", n_decoder_layers=2))
    set_dropout(seq2seq, 0.2)  # both stacks
    rates = [m.dropout.p for m in seq2seq.modules() if isinstance(m, Block)]
    assert rates == [0.2] * 3
    with pytest.raises(ValueError, match=r"--dropout 1.0 is not a dropout rate; give one in \[0, 1\)"):
        set_dropout(seq2seq, 1.0)
