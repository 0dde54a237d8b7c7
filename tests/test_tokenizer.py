"""Tokenizer and chat templates against transformers' own implementations."""

from __future__ import annotations

import pytest

from zenlm.tokenizer import Tokenizer

from .tiny_tokenizer import byte_level_bpe

transformers = pytest.importorskip("transformers")

SAMPLES = [
    "Hello, world! The quick brown fox.",
    "naïve café — déjà vu",
    "中文分词测试：你好，世界。",
    "def f(x):\n    return x ** 2  # 🐍\n\n\n",
    "   leading and    runs   of spaces\t\ttabs",
    "emoji 👩‍👩‍👧‍👦 and 🤗",
]

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Exercises what templates use: loop controls, raise_exception, tojson, trimming.
FANCY = """{{ bos_token }}{% for m in messages %}
{% if m['role'] == 'system' and not loop.first %}{{ raise_exception('system must be first') }}{% endif %}
{% if m['role'] == 'tool' %}{% continue %}{% endif %}
  [{{ m['role'] | upper }}] {{ m['content'] | trim }}{% if m.get('meta') %} {{ m['meta'] | tojson }}{% endif %}
{% endfor %}{% if add_generation_prompt %}[ASSISTANT]{% endif %}"""

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "  and 3+3? "}],
    [{"role": "user", "content": "x", "meta": {"k": "<é>"}}, {"role": "tool", "content": "t"}],
]


@pytest.fixture(scope="module")
def bpe_folder(tmp_path_factory):
    """A small byte-level BPE trained here, saved and wrapped by transformers."""
    backend = byte_level_bpe(SAMPLES * 20)
    folder = tmp_path_factory.mktemp("bpe")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", chat_template=CHATML
    )
    fast.save_pretrained(folder)
    return folder


def test_bpe_folder_matches_transformers(bpe_folder):
    ours = Tokenizer.from_folder(bpe_folder)
    theirs = transformers.AutoTokenizer.from_pretrained(bpe_folder)
    for text in SAMPLES + ["<|im_start|>user\nhi<|im_end|>"]:
        assert ours.encode(text) == theirs.encode(text), text
        assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text))
    assert ours.eos_token_id == theirs.eos_token_id


@pytest.mark.parametrize("template", [CHATML, FANCY])
@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_renders_like_transformers(bpe_folder, template, index, add_generation_prompt):
    ours = Tokenizer.from_folder(bpe_folder)
    ours.chat_template = template
    theirs = transformers.AutoTokenizer.from_pretrained(bpe_folder)
    messages = CONVERSATIONS[index]
    expected = theirs.apply_chat_template(
        messages, chat_template=template, tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    assert ours.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt
    ) == expected


def test_template_exception_becomes_value_error(bpe_folder):
    ours = Tokenizer.from_folder(bpe_folder)
    ours.chat_template = FANCY
    with pytest.raises(ValueError, match="system must be first"):
        ours.apply_chat_template([{"role": "user", "content": "a"},
                                  {"role": "system", "content": "b"}])


def test_malformed_messages_are_named(bpe_folder):
    ours = Tokenizer.from_folder(bpe_folder)
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        ours.apply_chat_template([{"role": "user", "content": "a"}, "oops"])


def test_save_and_reload_round_trip(bpe_folder, tmp_path):
    ours = Tokenizer.from_folder(bpe_folder)
    ours.save(tmp_path)
    again = Tokenizer.from_folder(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in SAMPLES:
        assert again.encode(text) == ours.encode(text) == theirs.encode(text)
    assert again.chat_template == CHATML


def test_wordpiece_vocab_txt_matches_bert_tokenizer(minilm_folder, tmp_path):
    """vocab.txt alone (no tokenizer.json) gives BERT's WordPiece ids."""
    (tmp_path / "vocab.txt").write_bytes((minilm_folder / "vocab.txt").read_bytes())
    ours = Tokenizer.from_folder(tmp_path)
    theirs = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)
    for text in SAMPLES + ["Unaffable HuggingFace tokenizers!", "[CLS] already [SEP]"]:
        assert ours.encode(text) == theirs.encode(text), text


def test_minilm_tokenizer_json_matches_transformers(minilm_folder):
    ours = Tokenizer.from_folder(minilm_folder)
    theirs = transformers.AutoTokenizer.from_pretrained(minilm_folder)
    for text in SAMPLES:
        assert ours.encode(text) == theirs.encode(text), text
