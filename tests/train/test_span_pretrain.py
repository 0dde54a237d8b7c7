"""Span-corruption pretraining of an encoder-decoder, end to end through `zenlm pretrain`.

The shipped T5 config (configs/t5-span-pydoc.yaml), shrunk by overrides, trains on a small
corpus; its loss falls, and the exported folder loads in transformers'
T5ForConditionalGeneration with the same logits as zenlm's model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.train.helpers import write_corpus
from zenlm.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_pretrain_t5_config_with_span_corruption(tmp_path):
    transformers = pytest.importorskip("transformers")
    corpus = write_corpus(tmp_path)
    out = tmp_path / "run"
    overrides = [
        f"data.paths={corpus}", "data.block_size=48", f"data.cache_dir={tmp_path / 'cache'}",
        "model.d_model=48", "model.n_layers=2", "model.n_decoder_layers=1", "model.d_ff=96",
        "tokenizer.vocab_size=300", "train.max_steps=60", "train.batch_size=8",
        "train.eval_every=0", "train.save_every=0", "train.progress=false",
        f"train.out_dir={out}", "optim.warmup_steps=5", "optim.lr=3e-3",
    ]
    config = str(REPO / "configs" / "t5-span-pydoc.yaml")
    assert main(["pretrain", "--config", config, *(f"--{o}" for o in overrides)]) == 0
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 60 and sum(losses[-10:]) < 0.8 * sum(losses[:10])

    import zenlm

    lm = zenlm.load(out / "model", quantize=None)
    theirs = transformers.T5ForConditionalGeneration.from_pretrained(out / "model").eval()
    src = torch.tensor([lm.tokenizer.encode("the cat sat on a mat.") + [lm.tokenizer.eos_token_id]])
    sentinel = lm.tokenizer.token_to_id("<extra_id_0>")
    assert sentinel is not None  # the run's tokenizer has T5's sentinels
    dec = torch.tensor([[lm.model.start_id, sentinel, 5, 6]])
    with torch.no_grad():
        ours = lm.model(src, dec)
        reference = theirs(input_ids=src, decoder_input_ids=dec).logits
    assert torch.allclose(ours, reference, atol=1e-4), (ours - reference).abs().max()
