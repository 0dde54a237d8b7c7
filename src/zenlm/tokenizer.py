"""Tokenizers over Hugging Face `tokenizers`, with chat templates rendered by jinja2.

A `Tokenizer` wraps a `tokenizers.Tokenizer` (the fast Rust implementation) and
adds what a language model needs around it: the special tokens, whether to add a
BOS token, and the chat template, rendered the way transformers'
`apply_chat_template` renders it (same jinja2 environment and globals), so that a
prompt is byte-for-byte the one the model was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import tokenizers
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from zenlm.errors import CheckpointError

Message = dict[str, Any]


class Tokenizer:
    """Text <-> token ids, special tokens and the chat template of one model.

    Args:
        backend: The Hugging Face `tokenizers.Tokenizer` doing the work.
        bos_token: Beginning-of-sequence token text, if the model has one.
        eos_token: End-of-sequence token text; generation stops on it.
        pad_token: Padding token text, if any.
        unk_token: Unknown token text, if any.
        chat_template: A jinja2 chat template (transformers' format), if any.
        add_bos: Prepend `bos_token` on `encode(..., add_special_tokens=True)` when the
            backend's own post-processor does not already add it.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        chat_template: str | None = None,
        add_bos: bool = False,
    ) -> None:
        # A tokenizer.json may carry padding/truncation settings (MiniLM pads to 128);
        # like transformers, encode one text as it is and leave batching to collators.
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.pad_token = pad_token
        self.unk_token = unk_token
        self.chat_template = chat_template
        self.add_bos = add_bos

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_folder(cls, folder: str | Path) -> Tokenizer:
        """Load a Hugging Face tokenizer folder: tokenizer.json, or vocab.txt (WordPiece).

        Special tokens, `add_bos_token` and the chat template come from
        tokenizer_config.json (and chat_template.jinja) when present.

        Raises:
            CheckpointError: if the folder holds neither tokenizer.json nor vocab.txt,
                or a file in it cannot be parsed.
        """
        folder = Path(folder)
        config = _read_json(folder / "tokenizer_config.json") if (
            folder / "tokenizer_config.json"
        ).is_file() else {}
        if (folder / "tokenizer.json").is_file():
            try:
                backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as exc:  # the Rust error names no file
                raise CheckpointError(
                    f"{folder / 'tokenizer.json'}: not a valid tokenizers JSON file ({exc})"
                ) from exc
        elif (folder / "vocab.txt").is_file():
            backend = _wordpiece_from_vocab(folder / "vocab.txt", config)
        else:
            raise CheckpointError(
                f"{folder}: no tokenizer found; expected tokenizer.json or vocab.txt"
            )
        template = config.get("chat_template")
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        return cls(
            backend,
            bos_token=_token_text(config.get("bos_token")),
            eos_token=_token_text(config.get("eos_token")),
            pad_token=_token_text(config.get("pad_token")),
            unk_token=_token_text(config.get("unk_token")),
            chat_template=template if isinstance(template, str) else None,
            add_bos=bool(config.get("add_bos_token", False)),
        )

    def save(self, folder: str | Path) -> None:
        """Write tokenizer.json and tokenizer_config.json that transformers reads."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": self.add_bos,
            "clean_up_tokenization_spaces": False,
        }
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            if getattr(self, name) is not None:
                config[name] = getattr(self, name)
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        (folder / "tokenizer_config.json").write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )

    # --------------------------------------------------------------- encoding
    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special-token strings in `text` map to their ids."""
        ids = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self.add_bos and self.bos_token_id is not None:
            if not ids or ids[0] != self.bos_token_id:
                ids = [self.bos_token_id, *ids]
        return ids

    def encode_batch(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[
        list[int]
    ]:
        """`encode` for many texts at once (the Rust backend runs them in parallel)."""
        return [self.encode(t, add_special_tokens=add_special_tokens) for t in texts]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of `ids`; byte-level pieces that do not form whole characters become U+FFFD."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        """Id of one token's text, or None when it is not in the vocabulary."""
        return self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token_id(self) -> int | None:
        """Id of the BOS token, if the model has one."""
        return None if self.bos_token is None else self.token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        """Id of the EOS token, if the model has one."""
        return None if self.eos_token is None else self.token_to_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        """Id of the padding token, if the model has one."""
        return None if self.pad_token is None else self.token_to_id(self.pad_token)

    # ----------------------------------------------------------- chat format
    def apply_chat_template(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """Render `messages` with the model's chat template, as transformers does.

        Args:
            messages: `[{"role": "user", "content": "..."}, ...]`.
            add_generation_prompt: End with the header of an assistant turn.
            **extra: More template variables (e.g. `tools`, `documents`).

        Raises:
            ValueError: if the model has no chat template, a message is malformed, or
                the template itself raises (its message is kept).
        """
        if self.chat_template is None:
            raise ValueError(
                "this tokenizer has no chat_template; pass a plain prompt instead of messages"
            )
        _check_messages(messages)
        try:
            return _compile_template(self.chat_template).render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
                pad_token=self.pad_token or "",
                unk_token=self.unk_token or "",
                **extra,
            )
        except TemplateError as exc:
            raise ValueError(f"chat template failed: {exc}") from exc


# ------------------------------------------------------------------ helpers
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({exc})") from exc


def _token_text(value: Any) -> str | None:
    """A special token in tokenizer_config.json is a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _wordpiece_from_vocab(path: Path, config: dict[str, Any]) -> tokenizers.Tokenizer:
    """Build BERT's WordPiece pipeline from a vocab.txt, as transformers' BertTokenizerFast."""
    from tokenizers import decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {}
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        vocab.setdefault(line.rstrip("\n"), index)
    unk = _token_text(config.get("unk_token")) or "[UNK]"
    cls_token = _token_text(config.get("cls_token")) or "[CLS]"
    sep_token = _token_text(config.get("sep_token")) or "[SEP]"
    for token in (unk, cls_token, sep_token):
        if token not in vocab:
            raise CheckpointError(f"{path}: special token {token!r} is not in the vocabulary")
    backend = tokenizers.Tokenizer(WordPiece(vocab, unk_token=unk))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=config.get("strip_accents"),
        lowercase=bool(config.get("do_lower_case", True)),
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.BertProcessing(
        (sep_token, vocab[sep_token]), (cls_token, vocab[cls_token])
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    specials = [t for t in vocab if t.startswith("[") and t.endswith("]") and t != "[unused]"]
    backend.add_special_tokens([t for t in specials if not t.startswith("[unused")])
    return backend


def _check_messages(messages: Sequence[Message]) -> None:
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ValueError(f"messages must be a non-empty list of dicts, got {messages!r:.80}")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError(
                f"messages[{index}] must be a dict with 'role' and 'content', got {message!r:.80}"
            )


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile_template(source: str):  # noqa: ANN202 - jinja2.Template
    """Compile a chat template in the same sandboxed environment transformers uses."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    # transformers overrides jinja2's tojson so that it does not HTML-escape.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)
