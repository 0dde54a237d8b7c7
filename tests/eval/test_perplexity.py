"""`zenlm evaluate --task lm` against the procedures written out here, on oracles' logits.

- sliding window: transformers' documented loop (labels of the overlap set to -100) on
  transformers' own SmolLM2, and a float64 formula on a tiny random Llama;
- llama procedure: llama-perplexity's chunks computed from llama-cpp-python's logits on
  the same GGUF, and the float64 formula (BOS replacement, ± error) on the tiny Llama.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from zenlm.cli import main
from zenlm.data.shards import build_shards
from zenlm.tokenizer import Tokenizer

from ..models.tiny_hf import randomize
from ..tiny_tokenizer import byte_level_bpe

transformers = pytest.importorskip("transformers")

# About 280 SmolLM2 tokens of prose no model was trained to repeat.
PROSE = (
    "The lighthouse keeper wrote down the weather every morning at six, even after the "
    "lamp was automated and nobody read his notes. Fog came in from the west on most days "
    "in October; in March the wind turned and brought rain that tasted of salt. He kept a "
    "second notebook for ships: their names, their flags, the hour they passed the point, "
    "and whether they answered his wave. Few did. A tanker called Marigold once sounded "
    "her horn three times, and he underlined that entry twice. When the harbour office "
    "closed, a clerk drove out to collect the notebooks and found forty years of them "
    "stacked by the stove, dry and in order. She counted eleven thousand mornings. The "
    "later volumes were shorter: fewer ships, more fog, a line about a seal that slept on "
    "the slipway for a week in 1998. On the last page he had drawn the coastline from "
    "memory, with every rock named, and beneath it a list of the keepers before him, "
    "going back to a woman who had kept the light alone through the winter of 1871 and "
    "had written, in a careful hand, only the words: lamp lit, all well. The clerk took "
    "the notebooks to the county archive, where a volunteer typed them up over two years."
)


def evaluate_json(capsys, *args: str) -> dict:
    """Run the real command with --json and return what it printed."""
    code = main(["evaluate", "--task", "lm", "--quantize", "none", *args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def evaluate_error(capsys, *args: str) -> str:
    """Run the real command expecting a refusal; return its error line."""
    code = main(["evaluate", "--task", "lm", "--quantize", "none", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    return err


def doc_sliding_window(logprobs_of, ids: list[int], context: int,
                       stride: int) -> tuple[float, int]:
    """transformers' perplexity guide: windows every `stride`, overlap labels set to -100.

    `logprobs_of(window)` gives (L, V) float64 log-probabilities of the next token. The
    count is the loss's own (labels after the shift that are not -100). Returns
    (perplexity, tokens scored).
    """
    nll_sum, count, previous_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        trg_len = end - previous_end
        window = ids[begin:end]
        labels = list(window)
        labels[: len(window) - trg_len] = [-100] * (len(window) - trg_len)
        logprobs = logprobs_of(window)
        for position, label in enumerate(labels[1:]):
            if label != -100:
                nll_sum -= float(logprobs[position, label])
                count += 1
        previous_end = end
        if end == len(ids):
            break
    return math.exp(nll_sum / count), count


def llama_perplexity(logprobs_of, ids: list[int], n_ctx: int, bos: int | None) -> tuple[
    float, float, int
]:
    """llama-perplexity's `perplexity()`: (ppl, ± error, tokens scored)."""
    first = n_ctx // 2
    nlls = []
    for chunk in range(len(ids) // n_ctx):
        window = list(ids[chunk * n_ctx:(chunk + 1) * n_ctx])
        if bos is not None:
            window[0] = bos
        logprobs = logprobs_of(window)
        nlls += [-float(logprobs[j, window[j + 1]]) for j in range(first, n_ctx - 1)]
    nll = np.asarray(nlls, dtype=np.float64)
    mean = nll.mean()
    variance = (nll * nll).mean() - mean * mean
    return math.exp(mean), math.sqrt(variance / (len(nll) - 1)) * math.exp(mean), len(nll)


# --- a tiny random Llama with a BOS-adding tokenizer: the float64 formula ---------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """(folder, transformers model in float64, bos id): tokenizer_config adds BOS."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    backend = byte_level_bpe([PROSE] * 5, vocab_size=300)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>",
                                                eos_token="</s>")
    fast.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "add_bos_token": True}))
    hf_config = transformers.LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    model = randomize(transformers.LlamaForCausalLM(hf_config)).eval()
    model.save_pretrained(folder)
    return folder, model.double(), fast.bos_token_id


def float64_logprobs(model):
    def logprobs_of(window: list[int]) -> np.ndarray:
        with torch.no_grad():
            logits = model(torch.tensor([window])).logits[0]
        return torch.log_softmax(logits.double(), dim=-1).numpy()

    return logprobs_of


def tiny_tokens(tiny_llama, text: str) -> list[int]:
    """What the text tokenizes to, BOS first: transformers' tokenizer plus the BOS id."""
    folder, _, bos = tiny_llama
    fast = transformers.AutoTokenizer.from_pretrained(folder)
    return [bos, *fast(text, add_special_tokens=False).input_ids]


@pytest.mark.parametrize("context,stride", [(64, 24), (64, 64), (40, 7)])
def test_sliding_window_equals_float64_formula(tiny_llama, tmp_path, capsys, context, stride):
    folder, model, _ = tiny_llama
    text = tmp_path / "prose.txt"
    text.write_text(PROSE[:600], encoding="utf-8")
    ids = tiny_tokens(tiny_llama, PROSE[:600])
    result = evaluate_json(capsys, "--model", str(folder), "--data", str(text),
                           "--context", str(context), "--stride", str(stride),
                           "--batch-size", "3")
    expected, scored = doc_sliding_window(float64_logprobs(model), ids, context, stride)
    assert result["settings"]["tokens"] == len(ids)
    assert result["settings"]["bos"] is True
    assert result["tokens_scored"] == scored
    if stride < context:  # every token but the first, once (stride == context: each
        assert scored == len(ids) - 1  # window's first token has no prediction)
    assert result["perplexity"] == pytest.approx(expected, rel=1e-5)


def test_llama_procedure_equals_float64_formula(tiny_llama, tmp_path, capsys):
    folder, model, bos = tiny_llama
    text = tmp_path / "prose.txt"
    text.write_text(PROSE, encoding="utf-8")
    ids = tiny_tokens(tiny_llama, PROSE)
    result = evaluate_json(capsys, "--model", str(folder), "--data", str(text),
                           "--procedure", "llama", "--context", "100", "--report",
                           str(tmp_path / "report"))
    ppl, error, scored = llama_perplexity(float64_logprobs(model), ids, 100, bos)
    assert result["perplexity"] == pytest.approx(ppl, rel=1e-5)
    assert result["error"] == pytest.approx(error, rel=1e-4)
    assert result["tokens_scored"] == scored == (len(ids) // 100) * 49
    assert (tmp_path / "report" / "perplexity.png").stat().st_size > 0
    assert "| perplexity |" in (tmp_path / "report" / "report.md").read_text()


def test_token_shards_score_like_their_ids(tiny_llama, tmp_path, capsys):
    """A shard folder is scored as its token stream, BOS first (documents joined by EOS)."""
    folder, model, bos = tiny_llama
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(PROSE[:400] + "\n\n" + PROSE[400:700], encoding="utf-8")
    shards = build_shards([corpus], Tokenizer.from_folder(folder), tmp_path / "cache",
                          val_fraction=0.0, progress=False)
    ids = [bos, *np.asarray(shards.tokens).tolist()]
    result = evaluate_json(capsys, "--model", str(folder), "--data", str(shards.folder),
                           "--split", "all", "--context", "48", "--stride", "32")
    assert result["settings"]["source"] == "shards:all"
    expected, _ = doc_sliding_window(float64_logprobs(model), ids, 48, 32)
    assert result["perplexity"] == pytest.approx(expected, rel=1e-5)


# --- bad input: one clear error each -----------------------------------------------------


def test_llama_procedure_refuses_text_shorter_than_two_chunks(tiny_llama, tmp_path, capsys):
    folder, _, _ = tiny_llama
    text = tmp_path / "short.txt"
    text.write_text(PROSE[:200], encoding="utf-8")
    n_tokens = len(tiny_tokens(tiny_llama, PROSE[:200]))
    err = evaluate_error(capsys, "--model", str(folder), "--data", str(text),
                         "--procedure", "llama", "--context", "128")
    assert "2 * n_ctx = 256" in err and f"only {n_tokens}" in err


@pytest.mark.parametrize("stride", ["65", "0", "-3"])
def test_bad_stride_is_named(tiny_llama, tmp_path, capsys, stride):
    folder, _, _ = tiny_llama
    text = tmp_path / "prose.txt"
    text.write_text(PROSE, encoding="utf-8")
    err = evaluate_error(capsys, "--model", str(folder), "--data", str(text),
                         "--context", "64", "--stride", stride)
    assert f"--stride must be in 1..--context (64), got {stride}" in err


@pytest.mark.parametrize("args,message", [
    (["--procedure", "llama", "--stride", "32"], "--stride 32 is an option of --procedure sliding"),
    (["--split", "train"], "--split train applies to token shard folders"),
])
def test_options_of_another_mode_are_refused(tiny_llama, tmp_path, capsys, args, message):
    folder, _, _ = tiny_llama
    text = tmp_path / "prose.txt"
    text.write_text(PROSE, encoding="utf-8")
    err = evaluate_error(capsys, "--model", str(folder), "--data", str(text), *args)
    assert message in err


def test_empty_file_is_named(tiny_llama, tmp_path, capsys):
    folder, _, _ = tiny_llama
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    err = evaluate_error(capsys, "--model", str(folder), "--data", str(empty))
    assert f"--data {empty} is empty" in err


def test_encoder_is_refused(minilm_folder, tmp_path, capsys):
    text = tmp_path / "prose.txt"
    text.write_text(PROSE, encoding="utf-8")
    err = evaluate_error(capsys, "--model", str(minilm_folder), "--data", str(text))
    assert str(minilm_folder) in err and "not a causal LM" in err


def test_context_longer_than_the_model_is_named(tiny_llama, tmp_path, capsys):
    folder, _, _ = tiny_llama
    text = tmp_path / "prose.txt"
    text.write_text(PROSE, encoding="utf-8")
    err = evaluate_error(capsys, "--model", str(folder), "--data", str(text),
                         "--context", "4096")
    assert "--context 4096 is longer than" in err and "128 tokens" in err


# --- SmolLM2: transformers' model and llama.cpp's on the same GGUF ------------------------


def test_sliding_window_equals_transformers_on_smollm2(smollm2_gguf, hf_smollm2, tmp_path,
                                                       capsys):
    model, tokenizer = hf_smollm2
    ids = tokenizer(PROSE).input_ids[:256]
    text = tmp_path / "prose.txt"
    text.write_text(PROSE, encoding="utf-8")

    def logprobs_of(window: list[int]) -> np.ndarray:
        with torch.no_grad():
            logits = model(torch.tensor([window])).logits[0]
        return torch.log_softmax(logits.double(), dim=-1).numpy()

    result = evaluate_json(capsys, "--model", str(smollm2_gguf), "--data", str(text),
                           "--max-tokens", "256", "--context", "128", "--stride", "64")
    expected, scored = doc_sliding_window(logprobs_of, ids, 128, 64)
    assert result["settings"]["tokens"] == len(ids) == 256
    assert result["tokens_scored"] == scored == 255
    assert result["perplexity"] == pytest.approx(expected, rel=1e-3)


def test_llama_procedure_equals_llama_cpp_on_smollm2(smollm2_gguf, tmp_path, capsys):
    llama_cpp = pytest.importorskip("llama_cpp")
    n_ctx = 96
    llm = llama_cpp.Llama(model_path=str(smollm2_gguf), n_ctx=n_ctx, n_batch=n_ctx,
                          logits_all=True, verbose=False, n_threads=2)
    # common_tokenize(ctx, text, add_special=true), as llama-perplexity tokenizes
    ids = llm.tokenize(PROSE.encode("utf-8"), add_bos=True, special=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    bos = llm.token_bos() if llama_cpp.llama_vocab_get_add_bos(vocab) else None

    def logprobs_of(window: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[:len(window)], dtype=np.float64)
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)

    ppl, error, scored = llama_perplexity(logprobs_of, ids, n_ctx, bos)
    text = tmp_path / "prose.txt"
    text.write_text(PROSE, encoding="utf-8")
    result = evaluate_json(capsys, "--model", str(smollm2_gguf), "--data", str(text),
                           "--procedure", "llama", "--context", str(n_ctx))
    assert result["settings"]["tokens"] == len(ids)
    assert result["tokens_scored"] == scored
    assert result["perplexity"] == pytest.approx(ppl, rel=0.01)
    assert result["error"] == pytest.approx(error, rel=0.05)

