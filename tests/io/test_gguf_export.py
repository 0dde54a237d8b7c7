"""A model trained here, exported to HF (transformers: same logits) and GGUF (llama.cpp: same greedy tokens)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zenlm.cli import main
from zenlm.config import ModelConfig
from zenlm.data.shards import BlockSampler
from zenlm.io.gguf import export_gguf, permute_qk
from zenlm.models import build_model
from zenlm.tokenizer_train import train_tokenizer
from zenlm.train.config import LoopConfig, OptimConfig
from zenlm.train.objectives import causal_lm_loss
from zenlm.train.trainer import Trainer

TEXT = "the quick brown fox jumps over the lazy dog. " * 20 + "a cat sat on the mat. " * 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Llama, trained for a few seconds so that its greedy choices are clear-cut."""
    out = tmp_path_factory.mktemp("export")
    tok = train_tokenizer([TEXT], kind="bpe", vocab_size=300, min_frequency=1)
    tokens = np.array(tok.encode(TEXT, add_special_tokens=False) * 4, dtype=np.uint16)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=128, max_seq_len=64, tie_embeddings=False,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = build_model(config)
    loop = LoopConfig(out_dir=str(out / "run"), max_steps=60, batch_size=8, eval_every=0,
                      save_every=60, progress=False)
    Trainer(model, causal_lm_loss, BlockSampler(tokens, 32), None,
            optim=OptimConfig(lr=1e-2, warmup_steps=5), loop=loop, save_extra=tok.save).fit()
    return out, model.eval(), tok


def zenlm_greedy(model, ids, n):
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[-n:]


def test_permute_matches_llama_cpp_layout():
    w = torch.arange(2 * 4 * 3).reshape(8, 3)  # 2 heads of dim 4
    # head 0 rows [0,1,2,3] -> [0,2,1,3]: first-half/second-half pairs become adjacent
    assert permute_qk(w, 2)[:, 0].tolist() == [0, 6, 3, 9, 12, 18, 15, 21]


def test_export_hf_gives_transformers_the_same_logits(trained, tmp_path):
    transformers = pytest.importorskip("transformers")
    out, model, tok = trained
    assert main(["export", str(out / "run"), "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode("the quick brown fox", add_special_tokens=False)])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-5, rtol=1e-5)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok.encode("a cat sat", add_special_tokens=False) == tok.encode("a cat sat", add_special_tokens=False)


@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_gguf_runs_in_llama_cpp_with_the_same_greedy_tokens(trained, tmp_path, gguf_type):
    llama_cpp = pytest.importorskip("llama_cpp")
    out, model, tok = trained
    path = tmp_path / f"model-{gguf_type}.gguf"
    assert main(["export", str(out / "run"), "--to", "gguf", "--type", gguf_type, "--out", str(path)]) == 0
    llm = llama_cpp.Llama(str(path), n_ctx=64, n_threads=2, verbose=False, seed=0)
    prompt = tok.encode("the quick brown", add_special_tokens=False)
    assert llm.tokenize(b"the quick brown", add_bos=False, special=False) == prompt
    ours = zenlm_greedy(model, prompt, 12)
    theirs = []
    for token in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        theirs.append(token)
        if len(theirs) == 12:
            break
    assert theirs == ours


def test_gguf_refuses_other_architectures(tmp_path):
    tok = train_tokenizer([TEXT], kind="bpe", vocab_size=300, min_frequency=1)
    gpt2 = build_model(ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                                   norm="layernorm", positions="learned", gated_mlp=False,
                                   activation="gelu", hf_model_type="gpt2"))
    with pytest.raises(ValueError, match="plain Llama models only"):
        export_gguf(gpt2, tok, tmp_path / "x.gguf")
