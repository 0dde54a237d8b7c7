"""Precision and recall per PII type: zenlm's scrubber next to presidio's pattern recognizers.

    python benchmarks/pii.py [--data benchmarks/data/pii_eval.jsonl] [--split dev|heldout|all]

The set is built by benchmarks/pii_set.py (see benchmarks/data/README.md). Presidio runs
offline: its predefined recognizers in an AnalyzerEngine whose NLP engine is a blank spaCy
pipeline (tokens only, no model download, so no NER) and whose e-mail validator uses
tldextract's bundled suffix list instead of fetching one. Its results are all those the
engine returns at its default score threshold (0). Its entity names map onto the set's types
(PHONE_NUMBER -> PHONE, *_PASSPORT -> PASSPORT, US_SSN -> ID, ...); entity types outside the
set (dates, URLs, ...) are not requested.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from zenlm.data.pii import find_pii
from zenlm.data.pii_score import TypeScore, score_spans, total

Detector = Callable[[str], list[tuple[int, int, str]]]
PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "IP_ADDRESS": "IP",
    "CREDIT_CARD": "CARD", "IBAN_CODE": "IBAN", "US_SSN": "ID", "US_PASSPORT": "PASSPORT",
    "UK_PASSPORT": "PASSPORT", "IN_PASSPORT": "PASSPORT", "DE_PASSPORT": "PASSPORT",
}


def presidio_detector(regions: tuple[str, ...] | None = None) -> Detector:
    """Presidio's AnalyzerEngine with pattern recognizers only, offline."""
    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        DePassportRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        InPassportRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UkPassportRecognizer,
        UsPassportRecognizer,
        UsSsnRecognizer,
    )
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    # The bundled public-suffix snapshot, never a download.
    email_recognizer.tldextract.extract = tldextract.TLDExtract(suffix_list_urls=())

    class BlankSpacy(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    nlp = BlankSpacy(models=[{"lang_code": "en", "model_name": "blank"}])
    nlp.load()
    phone = PhoneRecognizer(supported_regions=regions) if regions else PhoneRecognizer()
    registry = RecognizerRegistry(recognizers=[
        EmailRecognizer(), phone, IpRecognizer(), CreditCardRecognizer(), IbanRecognizer(),
        UsSsnRecognizer(), UsPassportRecognizer(), UkPassportRecognizer(),
        InPassportRecognizer(), DePassportRecognizer()])
    engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])
    entities = list(PRESIDIO_TYPES)

    def detect(text: str) -> list[tuple[int, int, str]]:
        results = engine.analyze(text, language="en", entities=entities)
        return sorted({(r.start, r.end, PRESIDIO_TYPES[r.entity_type]) for r in results})

    return detect


def load(path: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if split == "all" or r["split"] == split]


def negatives_hit(rows: list[dict], predictions: list[list[tuple[int, int, str]]]) -> dict:
    """Per hard-negative kind: (how many some predicted span overlaps, how many in all)."""
    out: dict[str, list[int]] = {}
    for row, spans in zip(rows, predictions, strict=True):
        for neg in row["negatives"]:
            hit = any(s < neg["end"] and neg["start"] < e for s, e, _ in spans)
            out.setdefault(neg["kind"], [0, 0])[0] += hit
            out[neg["kind"]][1] += 1
    return dict(sorted(out.items()))


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(results: dict[str, dict[str, dict[str, TypeScore]]], match: str) -> str:
    """Markdown: one row per type, precision and recall of every detector under `match`."""
    names = list(results)
    lines = ["| type | gold | " + " | ".join(f"{n} P | {n} R" for n in names) + " |",
             "|" + " --- |" * (2 + 2 * len(names))]
    types = sorted({t for r in results.values() for m in r.values() for t in m})
    for t in [*types, "all"]:
        cells, gold = [], 0
        for n in names:
            scores = results[n][match]
            pick = total(scores) if t == "all" else scores.get(t, TypeScore())
            gold = pick.gold
            cells += [_rate(pick.precision), _rate(pick.recall)]
        lines.append(f"| {t} | {gold} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scan(paths: list[str]) -> None:
    """Every span in real, unlabelled text with its context, to read false positives by eye."""
    docs = []
    for path in paths:
        if path.endswith(".jsonl"):
            for line in Path(path).read_text(encoding="utf-8").splitlines():
                docs.append(" ".join(v for v in json.loads(line).values() if isinstance(v, str)))
        else:
            docs.append(Path(path).read_text(encoding="utf-8"))
    counts: dict[str, int] = {}
    for doc in docs:
        for start, end, kind in find_pii(doc):
            counts[kind] = counts.get(kind, 0) + 1
            print(f"{kind:8} {doc[start:end]!r:32} ...{doc[max(0, start - 20):end + 10]!r}")
    print(f"{len(docs)} documents, {sum(map(len, docs)):,} characters: {counts}")


def names(model: str, conll: str, pii_set: Path) -> None:
    """Person spans of a NER model through the scrubber's path, against CoNLL's PER tags."""
    from zenlm.data.tasks import read_conll
    from zenlm.tasks.ner_pii import NameDetector

    detect = NameDetector(model)
    gold, predicted = [], []
    start_time = time.perf_counter()
    for sentence in read_conll(conll):
        starts, pos = [], 0
        for token in sentence.tokens:
            starts.append(pos)
            pos += len(token) + 1
        spans: list[tuple[int, int, str]] = []
        for i, (token, tag) in enumerate(zip(sentence.tokens, sentence.tags, strict=True)):
            if tag == "I-PER" and spans and spans[-1][1] == starts[i] - 1:
                spans[-1] = (spans[-1][0], starts[i] + len(token), "PERSON")
            elif tag in ("B-PER", "I-PER"):
                spans.append((starts[i], starts[i] + len(token), "PERSON"))
        gold.append(spans)
        predicted.append(detect(" ".join(sentence.tokens)))
    seconds = time.perf_counter() - start_time
    for match in ("exact", "overlap"):
        score = score_spans(gold, predicted, match).get("PERSON", TypeScore())
        print(f"{conll}: PERSON {match}: precision {_rate(score.precision)}, recall "
              f"{_rate(score.recall)} ({score.gold} gold, {score.predicted} predicted; "
              f"{len(gold)} sentences in {seconds:.0f} s)")
    rows = load(pii_set, "all")
    found = [(r["text"][s:e], r["lang"]) for r in rows for s, e, _ in detect(r["text"])]
    print(f"{pii_set.name} (no names labelled): {len(found)} PERSON spans, e.g. {found[:12]}")


def speed(paths: list[str], baseline: str | None) -> None:
    """Characters per second of scrub_pii (and of a baseline module's) on prose."""
    import importlib.util

    from zenlm.data.pii import scrub_pii

    scrubbers = {"zenlm": scrub_pii}
    if baseline:
        spec = importlib.util.spec_from_file_location("pii_baseline", baseline)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        scrubbers["baseline"] = module.scrub_pii
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")[:600_000]
        docs = [d for d in text.split("\n\n") if d.strip()]
        for name, scrub in scrubbers.items():
            start = time.perf_counter()
            for doc in docs:
                scrub(doc)
            rate = len(text) / (time.perf_counter() - start) / 1e6
            print(f"{Path(path).name}: {name} {rate:.2f} M chars/s ({len(docs)} documents)")


def cpu() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    return model.group(1) if model else platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).parent / "data" / "pii_eval.jsonl"))
    parser.add_argument("--split", choices=["dev", "heldout", "all"], default="dev")
    parser.add_argument("--lang", choices=["en", "zh", "all"], default="all")
    parser.add_argument("--no-presidio", action="store_true")
    parser.add_argument("--errors", action="store_true", help="print zenlm's misses and FPs")
    parser.add_argument("--scan", nargs="+", metavar="FILE",
                        help="instead: print every span zenlm finds in unlabelled files "
                             "(.jsonl: all string fields of a record; .txt: the whole file)")
    parser.add_argument("--speed", nargs="+", metavar="FILE",
                        help="instead: scrub_pii's characters per second on the first 600k "
                             "characters of each text file (blank-line paragraphs)")
    parser.add_argument("--baseline", metavar="PII_PY",
                        help="with --speed: another pii.py to time beside it, e.g. "
                             "`git show df8e9ed:src/zenlm/data/pii.py > /tmp/pii_main.py`")
    parser.add_argument("--names", metavar="NER_MODEL",
                        help="instead: PERSON precision/recall of `--ner-model NER_MODEL` on "
                             "--conll (sentences joined by spaces, re-split as raw text)")
    parser.add_argument("--conll", help="with --names: a CoNLL file with PER tags")
    args = parser.parse_args()
    if args.names:
        names(args.names, args.conll, Path(args.data))
        return
    if args.speed:
        speed(args.speed, args.baseline)
        return
    if args.scan:
        scan(args.scan)
        return
    rows = [r for r in load(Path(args.data), args.split)
            if args.lang == "all" or r["lang"] == args.lang]
    gold = [[(s["start"], s["end"], s["type"]) for s in r["spans"]] for r in rows]
    detectors: dict[str, Detector] = {"zenlm": find_pii}
    if not args.no_presidio:
        detectors["presidio"] = presidio_detector()
        detectors["presidio+CN"] = presidio_detector(
            ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "CN"))
    results, negs, seconds = {}, {}, {}
    predictions: dict[str, list] = {}
    for name, detect in detectors.items():
        start = time.perf_counter()
        predictions[name] = [detect(r["text"]) for r in rows]
        seconds[name] = time.perf_counter() - start
        results[name] = {m: score_spans(gold, predictions[name], m) for m in ("exact", "overlap")}
        negs[name] = negatives_hit(rows, predictions[name])
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=False).stdout.strip()
    print(f"split {args.split}, language {args.lang}: {len(rows)} texts, "
          f"{sum(map(len, gold))} PII spans; CPU {cpu()}; zenlm {rev}")
    print("\nExact match (headline): same start, end and type\n")
    print(table(results, "exact"))
    print("\nOverlap match: same type, at least one character in common\n")
    print(table(results, "overlap"))
    print("\nHard negatives overlapped by a prediction (hit / total):\n")
    kinds = sorted({k for n in negs.values() for k in n})
    print("| kind | " + " | ".join(negs) + " |\n|" + " --- |" * (1 + len(negs)))
    for k in kinds:
        print(f"| {k} | " + " | ".join(f"{n[k][0]} / {n[k][1]}" for n in negs.values()) + " |")
    print("\nseconds: " + ", ".join(f"{n} {s:.2f}" for n, s in seconds.items()))
    if args.errors:
        for row, g, p in zip(rows, gold, predictions["zenlm"], strict=True):
            if set(g) != set(p):
                missed = [row["text"][s:e] + f"/{t}" for s, e, t in set(g) - set(p)]
                extra = [row["text"][s:e] + f"/{t}" for s, e, t in set(p) - set(g)]
                print(f"{row['id']}: missed {missed} extra {extra}\n   {row['text']}")


if __name__ == "__main__":
    main()
