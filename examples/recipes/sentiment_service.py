r"""Sentiment analysis as a service: a fine-tuned classifier behind a small HTTP API.

Fine-tune first (any `zenlm finetune --task classify` output folder works):

    zenlm finetune --task classify --model all-minilm-l6-v2 \
        --train ../shared/data/sst2/train.tsv --output runs/sst2 --minutes 10
    python examples/recipes/sentiment_service.py runs/sst2/model --port 8001
    curl -s localhost:8001/sentiment -H 'content-type: application/json' \
        -d '{"texts": ["A gorgeous, witty film.", "Two hours I will never get back."]}'

POST /sentiment {"texts": [...]} answers {"results": [{"text", "label", "probs"}, ...]};
GET /health says which model and labels it serves. Inputs are validated (1 to 64
non-empty texts of at most 5,000 characters) and refused with 422 and the reason.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from zenlm.tasks import load_task


class SentimentRequest(BaseModel):
    """The texts to classify."""

    texts: list[str] = Field(min_length=1, max_length=64)


def create_app(folder: str) -> FastAPI:
    """The service around one fine-tuned classifier folder."""
    classifier = load_task(folder)
    if classifier.task != "classify":
        raise SystemExit(f"{folder} was fine-tuned for {classifier.task!r}, not classify")
    app = FastAPI(title="sentiment")

    @app.get("/health")
    def health() -> dict:
        return {"model": folder, "labels": classifier.labels}

    @app.post("/sentiment")
    def sentiment(request: SentimentRequest) -> dict:
        for text in request.texts:
            if not text.strip() or len(text) > 5000:
                raise HTTPException(422, f"each text must be 1 to 5000 characters, got "
                                         f"{len(text)}: {text[:40]!r}")
        return {"results": classifier.predict(request.texts)}

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the classifier with uvicorn."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a `zenlm finetune --task classify` output folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.model), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
