"""Models the explanation tests share: the real ones loaded once, and a tiny classifier folder."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import zenlm
from zenlm.config import from_hf_config
from zenlm.explain.subject import load_subject
from zenlm.models.build import build_model
from zenlm.models.heads import SequenceClassifier, TokenClassifier
from zenlm.tasks.checkpoint import save_task_model
from zenlm.tasks.spec import TaskInfo

LABELS = ["negative", "neutral", "positive"]
TAGS = ["O", "B-PER", "I-PER"]
CONTEXT = 32  # the tiny models' longest input


@pytest.fixture(scope="session")
def smollm2_subject(smollm2_gguf):
    return load_subject(smollm2_gguf)


@pytest.fixture(scope="session")
def minilm_lm(minilm_folder):
    return zenlm.load(minilm_folder, quantize=None)


def tiny_encoder(minilm_folder):
    """A 2-layer, 16-wide BERT with MiniLM's vocabulary (random weights, 32 positions)."""
    hf = json.loads((minilm_folder / "config.json").read_text())
    config = dataclasses.replace(from_hf_config(hf), d_model=16, n_layers=2, n_heads=2,
                                 d_ff=32, max_seq_len=CONTEXT)
    torch.manual_seed(0)
    return build_model(config)


def sharpen(head: torch.nn.Linear) -> None:
    """Scale a fresh head's weights so its logits differ by more than rounding."""
    with torch.no_grad():
        head.weight.mul_(50.0)


@pytest.fixture(scope="session")
def tiny_classifier_folder(minilm_folder, minilm_lm, tmp_path_factory):
    """A `zenlm finetune`-style classify folder around a tiny random encoder."""
    model = SequenceClassifier(tiny_encoder(minilm_folder), len(LABELS)).eval()
    sharpen(model.head)
    folder = tmp_path_factory.mktemp("tiny_classify")
    save_task_model(model, folder, minilm_lm.tokenizer,
                    TaskInfo(task="classify", labels=LABELS, arch="encoder", max_length=CONTEXT))
    return folder


@pytest.fixture(scope="session")
def tiny_tagger_folder(minilm_folder, minilm_lm, tmp_path_factory):
    """A `zenlm finetune`-style ner folder around a tiny random encoder."""
    model = TokenClassifier(tiny_encoder(minilm_folder), len(TAGS)).eval()
    sharpen(model.head)
    folder = tmp_path_factory.mktemp("tiny_ner")
    save_task_model(model, folder, minilm_lm.tokenizer,
                    TaskInfo(task="ner", labels=TAGS, arch="encoder", max_length=CONTEXT))
    return folder
