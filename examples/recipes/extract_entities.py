r"""Named-entity extraction: people, places, organisations in free text, with offsets.

A token classifier fine-tuned on CoNLL-2003 tags each word (B-PER, I-PER, B-LOC, ...);
this recipe turns the tags back into entity spans of the original text, with their
character offsets, and prints them as JSON Lines.

    zenlm finetune --task ner --model all-minilm-l6-v2 \
        --train ../shared/data/conll2003/train.txt --val ../shared/data/conll2003/valid.txt \
        --output runs/conll
    python examples/recipes/extract_entities.py runs/conll/model \
        --text "Angela Merkel met Emmanuel Macron in Paris on Tuesday."

Prints one {"text", "type", "start", "end"} per entity found.
"""

from __future__ import annotations

import argparse
import json
import re

from zenlm.eval.metrics import get_entities
from zenlm.tasks import TaskModel, load_task


def entities(tagger: TaskModel, text: str) -> list[dict]:
    """Entity spans of `text`: its words are tagged, and BIO runs become spans."""
    words = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\w+|[^\w\s]", text)]
    tags = tagger([w for w, _, _ in words])["tags"]
    found = []
    for kind, first, last in get_entities(tags):  # word indices, inclusive
        start, end = words[first][1], words[last][2]
        found.append({"text": text[start:end], "type": kind, "start": start, "end": end})
    return found


def main(argv: list[str] | None = None) -> None:
    """Print the entities of each --text."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a `zenlm finetune --task ner` output folder")
    parser.add_argument("--text", action="append", required=True, help="repeatable")
    args = parser.parse_args(argv)
    tagger = load_task(args.model)
    for text in args.text:
        for entity in entities(tagger, text):
            print(json.dumps(entity, ensure_ascii=False))


if __name__ == "__main__":
    main()
