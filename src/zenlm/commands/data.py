"""`zenlm data prepare` and `zenlm tokenizer train`."""

from __future__ import annotations

import argparse


def prepare_command(inputs: list[str], out: str, field: str = "text", txt_unit: str = "paragraph",
                    skip_bad_lines: bool = False, no_clean: bool = False, no_pii: bool = False,
                    no_dedupe: bool = False, near_dup_threshold: float = 0.8,
                    min_chars: int = 1, ner_model: str | None = None,
                    data_command: str = "prepare") -> int:
    """Clean, scrub and dedupe a corpus into one JSONL file; print the counts."""
    from zenlm.data.prepare import PrepareOptions, prepare_corpus

    detectors = []
    if ner_model is not None:
        if no_pii:
            raise ValueError("--ner-model scrubs names, --no-pii turns scrubbing off: pick one")
        from zenlm.tasks.ner_pii import NameDetector

        detectors.append(NameDetector(ner_model))
    options = PrepareOptions(
        pii_detectors=detectors,
        field=field, txt_unit=txt_unit, skip_bad_lines=skip_bad_lines,  # type: ignore[arg-type]
        clean=not no_clean, min_chars=min_chars, pii=not no_pii, dedupe=not no_dedupe,
        near_dup_threshold=near_dup_threshold if near_dup_threshold > 0 else None,
    )
    print(prepare_corpus(inputs, out, options).summary())
    return 0


def tokenizer_train_command(inputs: list[str], out: str, kind: str = "bpe",
                            vocab_size: int = 8192, field: str = "text",
                            txt_unit: str = "paragraph", skip_bad_lines: bool = False,
                            special_tokens: str = "", tokenizer_command: str = "train") -> int:
    """Train a tokenizer on a corpus and save tokenizer.json (+ config) into `out`.

    `special_tokens` (comma-separated) are added to the kind's own, e.g. "[MASK]" so that a
    Unigram tokenizer can serve a masked-LM run.
    """
    from zenlm.data.readers import read_documents
    from zenlm.tokenizer_train import train_tokenizer

    docs = read_documents(inputs, field=field, txt_unit=txt_unit,  # type: ignore[arg-type]
                          skip_bad_lines=skip_bad_lines)
    extra = [t.strip() for t in special_tokens.split(",") if t.strip()]
    tokenizer = train_tokenizer(docs, kind=kind, vocab_size=vocab_size,  # type: ignore[arg-type]
                                extra_special_tokens=extra)
    tokenizer.save(out)
    print(f"{kind} tokenizer with {tokenizer.vocab_size} tokens written to {out}")
    return 0


def _reader_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+",
                        help="files or folders (.txt .jsonl .csv .tsv .parquet)")
    parser.add_argument("--out", required=True, help="output file (prepare) or folder (tokenizer)")
    parser.add_argument("--field", default="text", help="JSON key / column with the text")
    parser.add_argument("--txt-unit", choices=["file", "paragraph", "line"], default="paragraph",
                        help=".txt files: one document per file, blank-line paragraph or line")
    parser.add_argument("--skip-bad-lines", action="store_true",
                        help="skip malformed JSONL lines (counted) instead of stopping")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `data prepare` and `tokenizer train`."""
    data = commands.add_parser("data", help="prepare text corpora").add_subparsers(
        dest="data_command", required=True)
    prepare = data.add_parser("prepare", help="clean, scrub PII, dedupe -> JSONL with counts")
    _reader_options(prepare)
    prepare.add_argument("--no-clean", action="store_true",
                         help="keep text as read (no Unicode/whitespace/boilerplate cleaning)")
    prepare.add_argument("--no-pii", action="store_true",
                         help="do not replace e-mails, phone numbers, cards, ... with tags")
    prepare.add_argument("--ner-model", metavar="FOLDER",
                         help="a `zenlm finetune --task ner` model: its PER entities are "
                              "replaced by <PERSON> too")
    prepare.add_argument("--no-dedupe", action="store_true",
                         help="keep exact and near duplicates")
    prepare.add_argument("--near-dup-threshold", type=float, default=0.8,
                         help="MinHash Jaccard threshold; 0 = exact duplicates only")
    prepare.add_argument("--min-chars", type=int, default=1,
                         help="drop documents shorter than this after cleaning")
    prepare.set_defaults(handler=prepare_command)

    tok = commands.add_parser("tokenizer", help="train tokenizers").add_subparsers(
        dest="tokenizer_command", required=True)
    train = tok.add_parser("train", help="train bpe | wordpiece | unigram | char")
    _reader_options(train)
    train.add_argument("--kind", choices=["bpe", "wordpiece", "unigram", "char"], default="bpe",
                       help="tokenizer model: byte-level BPE, WordPiece, Unigram or characters")
    train.add_argument("--vocab-size", type=int, default=8192, help="tokens in the vocabulary")
    train.add_argument("--special-tokens", default="",
                       help='more special tokens, comma-separated (e.g. "[MASK]" for masked-LM '
                            "pretraining with a unigram tokenizer)")
    train.set_defaults(handler=tokenizer_train_command)
