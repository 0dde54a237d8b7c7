"""The summarize task: sentence splitting (BBC's glued summaries), labels, ROUGE against
rouge-score itself, bad input, and finetune -> evaluate -> predict through the CLI on a
tiny random BERT."""

from __future__ import annotations

import json
import logging
import random

import pytest

from zenlm.cli import main
from zenlm.data.parallel import TextPair
from zenlm.data.tasks import TaskDataError
from zenlm.eval.metrics import rouge_scores
from zenlm.tasks import extractive
from zenlm.tasks.registry import get_task
from zenlm.tasks.spec import TaskInfo
from zenlm.tasks.summarize import method

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
transformers = pytest.importorskip("transformers")

# BBC News Summary's business/001, shortened: the summary glues sentences with no space.
ARTICLE = ("Ad sales boost Time Warner profit\n\n"
           "Quarterly profits at US media giant TimeWarner jumped 76% to $1.13bn (£600m) for "
           "the three months to December, from $639m year-earlier.\n\n"
           "The firm, which is now one of the biggest investors in Google, benefited from "
           "sales of high-speed internet connections. TimeWarner said fourth quarter sales "
           "rose 2% to $11.1bn from $10.9bn. Its profits were buoyed by one-off gains at AOL.\n\n"
           "\"Our financial performance was strong,\" chairman Richard Parsons said. George W. "
           "Bush was not asked. The U.S.A. market grew.\n")
SUMMARY = ("TimeWarner said fourth quarter sales rose 2% to $11.1bn from $10.9bn.Quarterly "
           "profits at US media giant TimeWarner jumped 76% to $1.13bn (£600m) for the three "
           "months to December, from $639m year-earlier.Its profits were buoyed by one-off "
           "gains at AOL.\"Our financial performance was strong,\" chairman Richard Parsons "
           "said.")


def test_split_sentences_handles_glued_summaries_numbers_and_initials():
    assert extractive.split_sentences(SUMMARY) == [
        "TimeWarner said fourth quarter sales rose 2% to $11.1bn from $10.9bn.",
        "Quarterly profits at US media giant TimeWarner jumped 76% to $1.13bn (£600m) for "
        "the three months to December, from $639m year-earlier.",
        "Its profits were buoyed by one-off gains at AOL.",
        "\"Our financial performance was strong,\" chairman Richard Parsons said.",
    ]
    title, sentences = extractive.split_article(ARTICLE)
    assert title == "Ad sales boost Time Warner profit"
    assert sentences[3:] == ["Its profits were buoyed by one-off gains at AOL.",
                             "\"Our financial performance was strong,\" chairman Richard "
                             "Parsons said.",
                             "George W. Bush was not asked.", "The U.S.A. market grew."]
    assert len(sentences) == 7
    # a quote that opens the next glued sentence goes with it; "U.S.A" stays whole
    assert extractive.split_sentences('Sales fell.AOL gained."We won," he said.U.S.A won.') == [
        "Sales fell.", "AOL gained.", "\"We won,\" he said.", "U.S.A won."]


def test_labels_mark_the_sentences_of_the_summary():
    _, sentences = extractive.split_article(ARTICLE)
    assert extractive.sentence_labels(sentences, SUMMARY) == [1, 0, 1, 1, 1, 0, 0]


def test_rouge_scores_are_rouge_score_with_stemming():
    hypotheses = ["the cats were running quickly home", "profits rose sharply in 2004",
                  "nothing in common"]
    references = ["the cat runs home quickly", "profits rose by 2% in 2004", "entirely else"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    ours = rouge_scores(hypotheses, references)
    assert set(ours) == {"rouge1", "rouge2", "rougeL"}
    for key in ours:
        expected = sum(scorer.score(r, h)[key].fmeasure
                       for h, r in zip(hypotheses, references, strict=True)) / 3
        assert ours[key] == pytest.approx(100 * expected)
    assert ours["rouge1"] > 0  # stemming matches cats/cat, running/runs


def test_select_takes_best_sentences_within_budget_in_article_order():
    sentences = ["a b c d", "e f g h", "i j k l", "m n o p"]
    assert extractive.select(sentences, [0.1, 0.9, 0.2, 0.8], 0.5) == [1, 3]
    assert extractive.select(sentences, [0.1, 0.9, 0.2, 0.8], 0.1) == [1]  # at least one
    lead = extractive.lead_scores([extractive.Document("", sentences)])[0]
    assert extractive.select(sentences, lead, 0.75) == [0, 1, 2]


def test_bad_input_is_named(tmp_path, caplog):
    spec = get_task("summarize")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"article": "One. Two.", "summary": "One."}) + "\n"
                   + json.dumps({"article": "Three."}) + "\n")
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:2: no 'summary' field"):
        spec.read(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": "One. Two.", "summary": "One."}) + "\n"
                     + json.dumps({"text": "  ", "summary": "x"}) + "\n")
    with caplog.at_level(logging.WARNING):
        assert [e.line for e in spec.read(empty)] == [1]
    assert "skipped 1" in caplog.text
    with pytest.raises(ValueError, match="arch='decoder'"):
        method(TaskInfo(task="summarize", arch="decoder"))
    abstractive = [TextPair("The cat sat. It slept.", "A cat had a nap.", 1)]
    with pytest.raises(ValueError, match="no article sentence occurs in its summary"):
        extractive.documents(abstractive)


# ----------------------------------------------------------------- end to end
FILLER = ["the weather was mild", "a train left the station", "people walked to town",
          "the shop sold bread", "a dog barked twice", "rain fell at night",
          "the river was calm", "a bus came late"]


def _corpus(n: int, seed: int) -> list[dict[str, str]]:
    """Articles of 6 sentences; the 2 with "important" (anywhere) are the summary."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        body = [f"{rng.choice(FILLER)} today." for _ in range(4)]
        keys = [f"important news {rng.choice(FILLER)}." for _ in range(2)]
        slots = sorted(rng.sample(range(6), 2))
        sentences = []
        for k in range(6):
            sentences.append(keys.pop(0) if k in slots else body.pop(0))
        sentences = [s[0].upper() + s[1:] for s in sentences]
        summary = "".join(s for k, s in enumerate(sentences) if k in slots)  # BBC's glue
        rows.append({"article": f"Story {i}\n\n" + " ".join(sentences) + "\n",
                     "summary": summary})
    return rows


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT (d=32) with a WordPiece vocabulary of the corpus' words."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    words = sorted({w.strip(".").lower() for s in FILLER for w in s.split()}
                   | {"important", "news", "today", "story"} | {str(i) for i in range(10)})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=128, pad_token_id=0)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def _evaluate_and_predict(model_dir, data, tmp_path, capsys):
    """`zenlm evaluate --json` scores, `zenlm predict` summaries, and the references."""
    assert main(["evaluate", "--task", "summarize", "--model", str(model_dir), "--data",
                 str(data), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    predictions = tmp_path / "predictions.jsonl"
    assert main(["predict", "--task", "summarize", "--model", str(model_dir), "--input",
                 str(data), "--output", str(predictions)]) == 0
    outputs = [json.loads(line)["summary"] for line in predictions.read_text().splitlines()]
    references = [json.loads(line)["summary"] for line in data.read_text().splitlines()]
    return scores, outputs, references


def test_finetune_evaluate_predict_extractive(tiny_bert, tmp_path, capsys):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    for path, rows in ((train, _corpus(60, 0)), (test, _corpus(20, 1))):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    # 16 tokens: one sentence per window, so the random model need not first learn which
    # sentence a word belongs to (MiniLM knows); articles span several windows.
    assert main(["finetune", "--task", "summarize", "--model", str(tiny_bert), "--train",
                 str(train), "--output", str(out), "--max-steps", "40", "--batch-size", "8",
                 "--lr", "3e-3", "--max-length", "16", "--val-fraction", "0.2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["validation"]["method"] == "extractive"
    task = json.loads((out / "model" / "task.json").read_text())
    assert task["options"]["ratio"] == summary["validation"]["ratio"]  # chosen on validation

    scores, outputs, references = _evaluate_and_predict(out / "model", test, tmp_path, capsys)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge_l = [scorer.score(r, h)["rougeL"].fmeasure
               for h, r in zip(outputs, references, strict=True)]
    assert scores["n"] == len(outputs) == 20
    assert scores["rougeL"] == pytest.approx(100 * sum(rouge_l) / len(rouge_l))
    # it learned which sentences matter: the "important" ones, wherever they stand,
    # which no lead baseline finds
    lead = [" ".join(extractive.split_article(json.loads(line)["article"])[1][:2])
            for line in test.read_text().splitlines()]
    lead_l = sum(scorer.score(r, h)["rougeL"].fmeasure
                 for h, r in zip(lead, references, strict=True))
    assert scores["rougeL"] >= 90 > 100 * lead_l / len(lead)


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory):
    """A random 1+1-layer BART (d=32) with a byte-level BPE trained on the test corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("tiny_bart")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        [r["article"] for r in _corpus(20, 2)],
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>"}))
    config = transformers.BartConfig(
        vocab_size=backend.get_vocab_size(), d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=48,
        decoder_ffn_dim=48, max_position_embeddings=128, bos_token_id=0, pad_token_id=1,
        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2)
    transformers.BartForConditionalGeneration(config).save_pretrained(folder)
    return folder


def test_finetune_evaluate_predict_abstractive(tiny_bart, tmp_path, capsys):
    """An encoder-decoder trains seq2seq; its ROUGE is rouge-score's on its own outputs."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _corpus(12, 3)))
    out = tmp_path / "run"
    assert main(["finetune", "--task", "summarize", "--model", str(tiny_bart), "--train",
                 str(data), "--output", str(out), "--max-steps", "3", "--batch-size", "4",
                 "--max-length", "64", "--val-fraction", "0.25"]) == 0
    assert json.loads(capsys.readouterr().out)["validation"]["method"] == "abstractive"
    scores, outputs, references = _evaluate_and_predict(out / "model", data, tmp_path, capsys)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = [scorer.score(r, h)[key].fmeasure
                    for h, r in zip(outputs, references, strict=True)]
        assert scores[key] == pytest.approx(100 * sum(expected) / len(expected))
    assert scores["n"] == 12 and scores["method"] == "abstractive"


def test_summaries_are_cut_to_the_decoders_position_table(tiny_bart):
    """With no stop token a summary runs to its limit: the generation core keeps it inside
    BART's learned positions (its table, less the offset of 2), whatever is asked."""
    import zenlm
    from zenlm.generate.beam import beam_search
    from zenlm.generate.decode import GenerationConfig, generate_batch

    lm = zenlm.load(tiny_bart, quantize=None)
    config = lm.model.config
    positions = lm.model.decoder.positions.weight.shape[0] - config.position_offset
    assert config.position_offset == 2 and positions < 10_000
    source = lm.tokenizer.encode("Story 1")
    asked = GenerationConfig(max_new_tokens=10_000)  # no stop token: runs to the limit
    greedy = generate_batch(lm.model, [source], asked)[0]
    beams = beam_search(lm.model, source, GenerationConfig(max_new_tokens=10_000, num_beams=2))
    # the start token holds position 0; the last token is never fed back
    assert len(greedy.token_ids) == len(beams[0].token_ids) == positions - 1
