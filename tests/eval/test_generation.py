"""`zenlm evaluate --task generate`: metrics against sacreBLEU / rouge-score called here and
SQuAD's F1 written out here; answers against transformers' greedy generate; bad input."""

from __future__ import annotations

import collections
import json
import re
import string

import pytest
import torch

from zenlm.cli import main
from zenlm.eval.generation import corpus_scores, item_scores, read_items

transformers = pytest.importorskip("transformers")
sacrebleu = pytest.importorskip("sacrebleu")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

from ..models.tiny_hf import randomize  # noqa: E402
from ..test_tokenizer import CHATML, SAMPLES  # noqa: E402
from ..tiny_tokenizer import byte_level_bpe  # noqa: E402

HYPS = ["The cat sat on the mat.", "A dog barked loudly at night", "Paris", ""]
REFS = [["the cat is on the mat", "A cat sat on a mat."], ["The dog barked at night."],
        ["Paris, France", "paris", "The city of Paris"], ["nothing"]]


def squad_f1_slow(prediction: str, truth: str) -> float:
    """SQuAD v1.1's F1, written out: lower, drop punctuation and articles, bag of words."""
    def normal(text: str) -> list[str]:
        text = "".join(c for c in text.lower() if c not in string.punctuation)
        return re.sub(r"\b(a|an|the)\b", " ", text).split()

    pred, true = normal(prediction), normal(truth)
    same = sum((collections.Counter(pred) & collections.Counter(true)).values())
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(true)
    return 2 * p * r / (p + r)


def test_exact_match_and_f1_take_the_best_reference():
    for hyp, refs in zip(HYPS, REFS, strict=True):
        scores = item_scores(hyp, refs)
        assert scores["f1"] == pytest.approx(100 * max(squad_f1_slow(hyp, r) for r in refs))
    assert item_scores("Paris", REFS[2])["exact_match"] == 100.0  # "paris" after normalising
    # articles and punctuation go: "cat sat on mat" twice
    assert item_scores("The cat sat on the mat.", REFS[0])["exact_match"] == 100.0
    assert item_scores(HYPS[1], REFS[1])["exact_match"] == 0.0
    assert item_scores(HYPS[1], REFS[1])["f1"] == pytest.approx(100 * 2 * (4 / 5) * 1 / (4 / 5 + 1))


def test_bleu_and_chrf_equal_sacrebleu_with_uneven_references():
    streams = [[refs[k] if k < len(refs) else None for refs in REFS] for k in range(3)]
    ours = corpus_scores(HYPS, REFS)
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, streams).score)
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, streams).score)
    single = corpus_scores(HYPS[:2], [["the cat is on the mat"], ["The dog barked at night."]])
    assert single["bleu"] == pytest.approx(sacrebleu.corpus_bleu(
        HYPS[:2], [["the cat is on the mat", "The dog barked at night."]]).score)


def test_rouge_equals_rouge_score_best_reference():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for hyp, refs in zip(HYPS, REFS, strict=True):
        expected = scorer.score_multi(refs, hyp)
        ours = item_scores(hyp, refs)
        for key in ("rouge1", "rouge2", "rougeL"):
            assert ours[key] == pytest.approx(100 * expected[key].fmeasure)


@pytest.mark.parametrize(("lines", "where", "words"), [
    (['{"prompt": "a", "reference": "b"}', '{"prompt": "c", "reference": '], ":2:",
     "not valid JSON"),
    (['{"prompt": "a"}'], ":1:", "no reference"),
    (['{"prompt": "a", "references": []}'], ":1:", "non-empty list"),
    (['{"prompt": "a", "references": ["x", 3]}'], ":1:", "must be a string"),
    (['{"prompt": "", "reference": "b"}'], ":1:", "prompt"),
    (['{"prompt": "a", "reference": "b", "references": ["c"]}'], ":1:", "not both"),
    (['["a", "b"]'], ":1:", "JSON object"),
    (["", "  "], "", "no items"),
])
def test_bad_input_is_named_by_file_and_line(tmp_path, lines, where, words):
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=re.escape(words)) as info:
        read_items(path)
    assert f"{path}{where}" in str(info.value)


def test_cli_names_the_bad_line(tmp_path, capsys):
    path = tmp_path / "items.jsonl"
    path.write_text('{"prompt": "a", "reference": "b"}\n{"prompt": "c"}\n')
    assert main(["evaluate", "--task", "generate", "--model", "unused", "--data",
                 str(path)]) == 2
    assert f"{path}:2: no reference" in capsys.readouterr().err


# ---- through the CLI ---------------------------------------------------------------------


def tiny_folder(folder, chat_template: str | None):
    """A 2-layer random Llama with a byte-level BPE, with or without a chat template."""
    backend = byte_level_bpe(SAMPLES * 20)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="<|im_end|>",
        chat_template=chat_template,
    ).save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=backend.get_vocab_size(), hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, bos_token_id=0, eos_token_id=3, tie_word_embeddings=False,
    )
    randomize(transformers.AutoModelForCausalLM.from_config(config), seed=2).save_pretrained(
        folder)
    return folder


def reference_answers(model, tokenizer, prompts: list[str], chat: bool, new: int) -> list[str]:
    """transformers' greedy generate, one prompt at a time, decoded without special tokens."""
    out = []
    for prompt in prompts:
        if chat:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                add_generation_prompt=True, tokenize=False)
            ids = tokenizer(ids, add_special_tokens=False).input_ids
        else:
            ids = tokenizer(prompt).input_ids
        with torch.no_grad():
            tokens = model.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False,
                                    eos_token_id=model.config.eos_token_id, pad_token_id=0)
        out.append(tokenizer.decode(tokens[0, len(ids):], skip_special_tokens=True))
    return out


def run_cli(tmp_path, folder, items: list[dict], *extra: str) -> tuple[dict, list[dict]]:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items))
    predictions, report = tmp_path / "predictions.jsonl", tmp_path / "report"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["evaluate", "--task", "generate", "--model", str(folder), "--data",
                     str(data), "--json", "--predictions", str(predictions), "--report",
                     str(report), "--batch-size", "2", *extra])
    assert code == 0
    assert (report / "report.md").is_file() and (report / "f1_histogram.png").is_file()
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    return json.loads(buffer.getvalue()), rows


ITEMS = [{"prompt": "Hello there", "reference": "hello"},
         {"prompt": "The cat sat", "references": ["on the mat", "down"]},
         {"prompt": "naïve café", "reference": "ok"}]


@pytest.mark.parametrize("template", [None, CHATML], ids=["plain", "chat"])
def test_cli_answers_equal_transformers_and_scores_them(tmp_path, template):
    folder = tiny_folder(tmp_path / "model", template)
    report, rows = run_cli(tmp_path, folder, ITEMS, "--max-new-tokens", "6")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    expected = reference_answers(model.eval(), tokenizer, [i["prompt"] for i in ITEMS],
                                 chat=template is not None, new=6)
    assert [r["output"] for r in rows] == expected
    assert report["settings"]["chat"] is (template is not None)
    refs = [[i["reference"]] if "reference" in i else i["references"] for i in ITEMS]
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(2)]
    assert report["bleu"] == pytest.approx(sacrebleu.corpus_bleu(expected, streams).score)
    assert report["chrf"] == pytest.approx(sacrebleu.corpus_chrf(expected, streams).score)
    f1 = [100 * max(squad_f1_slow(out, r) for r in rs) for out, rs in zip(expected, refs,
                                                                          strict=True)]
    assert report["f1"] == pytest.approx(sum(f1) / 3)
    assert [r["line"] for r in rows] == [1, 2, 3] and report["items"] == 3


def test_cli_sampling_is_seeded_per_item(tmp_path):
    """A seed gives the same answers whatever the batch size (item i draws from seed + i)."""
    folder = tiny_folder(tmp_path / "model", None)
    options = ["--max-new-tokens", "5", "--temperature", "1.0", "--top-k", "20", "--seed", "7"]
    _, batched = run_cli(tmp_path, folder, ITEMS, *options)
    _, alone = run_cli(tmp_path, folder, ITEMS, *options, "--batch-size", "1")
    assert [r["output"] for r in batched] == [r["output"] for r in alone]


def test_cli_refuses_chat_on_without_a_template_and_bad_sampling(tmp_path, capsys):
    folder = tiny_folder(tmp_path / "model", None)
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps(ITEMS[0]) + "\n")
    base = ["evaluate", "--task", "generate", "--model", str(folder), "--data", str(data)]
    assert main([*base, "--chat", "on"]) == 2
    assert "no chat template" in capsys.readouterr().err
    assert main([*base, "--top-p", "0"]) == 2
    assert "--top-p" in capsys.readouterr().err


def test_smollm2_answers_equal_transformers_through_its_chat_template(tmp_path, smollm2_gguf,
                                                                      hf_smollm2):
    items = [{"prompt": "What is the capital of France? Answer in one word.",
              "references": ["Paris", "Paris, France"]},
             {"prompt": "What is 2 + 2? Answer with a number.", "reference": "4"}]
    report, rows = run_cli(tmp_path, smollm2_gguf, items, "--max-new-tokens", "8")
    model, tokenizer = hf_smollm2
    expected = reference_answers(model, tokenizer, [i["prompt"] for i in items], chat=True,
                                 new=8)
    assert [r["output"] for r in rows] == expected
    assert report["settings"]["chat"] is True
    assert "Paris" in rows[0]["output"]
    assert rows[0]["f1"] == pytest.approx(100 * max(
        squad_f1_slow(rows[0]["output"], r) for r in items[0]["references"]))


def test_cli_stop_strings_as_typed(tmp_path):
    folder = tiny_folder(tmp_path / "model", None)
    report, rows = run_cli(tmp_path, folder, ITEMS, "--max-new-tokens", "12", "--stop", "\\n",
                           "--stop", "é")
    assert report["settings"]["stop"] == ["\n", "é"]
    assert all("\n" not in r["output"] and "é" not in r["output"] for r in rows)
