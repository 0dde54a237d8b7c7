"""Ghost clipping (`--dp-clipping ghost`) against per-example gradients taken one at a time.

Oracles: each example's gradient from its own plain autograd backward (no hooks) of its
loss written out here in float64 from the model's ordinary forward on that example alone
(no padding); Opacus's clipping rule min(1, C / (norm + 1e-6)) and the sum, here; the
step's noise read off a step on an empty Poisson draw with the same secret (noise only:
the noise of step t is a function of (secret, t)).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from zenlm.config import ModelConfig
from zenlm.models.build import build_model
from zenlm.models.heads import SequenceClassifier, TokenClassifier
from zenlm.nn.lora import LoRALinear, apply_lora
from zenlm.tasks import classify, ner, sft
from zenlm.tasks.classify import ClassifyFeature
from zenlm.tasks.ner import TokenFeature
from zenlm.tasks.runner import freeze_all_but_biases_and_norms
from zenlm.tasks.sft import SFTFeature
from zenlm.train.config import OptimConfig
from zenlm.train.dp_clipping import linear_norm_sample
from zenlm.train.privacy import (
    EmptyBatch,
    PhysicalBatches,
    PrivacyError,
    PrivateTraining,
    plan_privacy,
)

SECRET = bytes(range(32))
IGNORE = -100


def encoder(n_labels: int, head: type) -> nn.Module:
    """A 2-block BERT-like encoder (learned positions, LayerNorm) with a task head."""
    config = ModelConfig(vocab_size=40, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                         max_seq_len=32, arch="encoder", positions="learned",
                         norm="layernorm", norm_bias=True, embed_norm=True, pre_norm=False,
                         final_norm=False, gated_mlp=False, activation="gelu",
                         qkv_bias=True, type_vocab_size=2, hf_model_type="bert")
    if head is SequenceClassifier:
        return SequenceClassifier(build_model(config), n_labels, pooling="mean", dropout=0.0)
    return TokenClassifier(build_model(config), n_labels, dropout=0.0)


def decoder(*, tied: bool) -> nn.Module:
    """A 2-block Llama-style decoder (RMSNorm, RoPE, SwiGLU, GQA)."""
    config = ModelConfig(vocab_size=40, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=32, max_seq_len=64, tie_embeddings=tied, hf_model_type="llama")
    return build_model(config)


def with_lora(model: nn.Module, backbone: nn.Module, targets: list[str]) -> nn.Module:
    """LoRA (rank 2, no dropout) with B drawn away from 0, so A's gradient is not 0."""
    apply_lora(backbone, rank=2, alpha=4.0, dropout=0.0, target_modules=targets)
    for module in model.modules():
        if isinstance(module, LoRALinear):
            nn.init.normal_(module.lora_b, std=0.5)
    return model


def ids_of(gen: torch.Generator, length: int) -> list[int]:
    return torch.randint(1, 40, (length,), generator=gen).tolist()


# ------------------------------------------------------------- the oracles' losses
def classify_own(model: nn.Module, row: ClassifyFeature) -> torch.Tensor:
    logits = model(torch.tensor([row.ids]))[0].double()
    return -logits.log_softmax(-1)[row.label]


def ner_own(model: nn.Module, row: TokenFeature) -> torch.Tensor:
    logprobs = model(torch.tensor([row.ids]))[0].double().log_softmax(-1)  # (T, C)
    terms = [-logprobs[t, y] for t, y in enumerate(row.labels) if y != IGNORE]
    return torch.stack(terms).mean()


def sft_own(model: nn.Module, row: SFTFeature) -> torch.Tensor:
    logprobs = model(torch.tensor([row.ids]))[0].double().log_softmax(-1)  # (T, V)
    terms = [-logprobs[t - 1, row.ids[t]] for t in range(1, len(row.ids))
             if row.labels[t] != IGNORE]
    return torch.stack(terms).mean() if terms else logprobs.sum() * 0.0


def case(name: str) -> tuple[nn.Module, list, Callable, Callable, Callable]:
    """(float64 model, rows, collate, the task's private objective, the oracle's loss)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    task, method = name.split("-", 1)
    if task == "classify":
        if method.startswith("decoder"):  # the backbone's own LM head is not used
            model = SequenceClassifier(decoder(tied=False), 2, pooling="mean", dropout=0.0)
            model.backbone.lm_head.weight.requires_grad_(False)
        else:
            model = encoder(2, SequenceClassifier)
        if method.endswith("lora"):
            model = with_lora(model, model.backbone, ["q", "v", "ff1"])
        if method.endswith("bitfit"):
            freeze_all_but_biases_and_norms(model.backbone)
        rows = [ClassifyFeature(ids_of(gen, 3 + i % 5), i % 2) for i in range(7)]
        collate = lambda r: classify.collate_classify(r, pad_id=0)  # noqa: E731
        spec, own = classify.SPEC, classify_own
    elif task == "ner":
        model = encoder(3, TokenClassifier)
        if method == "lora":
            model = with_lora(model, model.backbone, ["q", "k", "v", "o"])
        rows = []
        for i in range(6):
            length = 4 + i % 4
            labels = [IGNORE if t in (0, length - 1) or t % 3 == 2 else (t + i) % 3
                      for t in range(length)]
            rows.append(TokenFeature(ids_of(gen, length), labels, [], sentence=i))
        collate = lambda r: ner.collate_tokens(r, pad_id=0)  # noqa: E731
        spec, own = ner.SPEC, ner_own
    else:
        model = decoder(tied=True)
        if method == "lora":
            model = with_lora(model, model, ["q", "v", "down"])
        rows = []
        for i, length in enumerate((6, 11, 8, 14, 5, 9)):
            prompt = 2 + i if i != 4 else length  # row 4: no assistant token at all
            ids = ids_of(gen, length)
            rows.append(SFTFeature(ids, [IGNORE] * prompt + ids[prompt:]))
        collate = lambda r: sft.collate_sft(r, pad_id=0)  # noqa: E731
        spec, own = sft.SPEC, sft_own
    return model.double(), rows, collate, spec.private_objective(), own


def oracle(model: nn.Module, rows: list, own: Callable) -> tuple[dict, list[float]]:
    """Each row's gradient alone, by plain autograd: ({name: [grad per row]}, norms)."""
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads: dict[str, list[torch.Tensor]] = {n: [] for n in trainable}
    norms = []
    for row in rows:
        model.zero_grad()
        own(model, row).backward()
        for name, param in trainable.items():
            grads[name].append(param.grad.clone() if param.grad is not None
                               else torch.zeros_like(param))
        norms.append(math.sqrt(sum(float((g[-1] ** 2).sum()) for g in grads.values())))
    return grads, norms


def dp_update(model: nn.Module, batch: object, objective: Callable, clip: float,
              n_rows: int, clipping: str) -> dict[str, torch.Tensor]:
    """One private SGD step (lr 1) of `model` on `batch`: the change of each weight."""
    plan = plan_privacy(8.0, 1e-5, clip, batch_size=n_rows, dataset_size=1000, steps=10)
    privacy = PrivateTraining(plan, secret=SECRET, clipping=clipping)
    privacy.transform_model(model)
    sgd = lambda m, _: torch.optim.SGD([p for p in m.parameters() if p.requires_grad],  # noqa: E731
                                       lr=1.0)
    optimizer = privacy.make_optimizer(sgd)(model, OptimConfig())
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    privacy.objective(objective)(model, batch).backward()
    if clipping == "ghost":  # only norms were computed: no per-example gradient is left
        assert all(getattr(p, "grad_sample", None) is None for p in model.parameters())
    optimizer.step()
    return {n: model.get_parameter(n).detach() - before[n] for n in before}


CASES = ["classify-encoder-full", "classify-encoder-lora", "classify-encoder-bitfit",
         "classify-decoder-full",
         "ner-full", "ner-lora", "sft-full-tied", "sft-lora"]


@pytest.mark.parametrize("name", CASES)
def test_ghost_update_equals_clipped_per_example_gradients_plus_the_secret_noise(name):
    model, rows, collate, objective, own = case(name)
    base = copy.deepcopy(model)
    grads, norms = oracle(model, rows, own)
    assert all(any(float(g.abs().max()) > 0 for g in gs) for gs in grads.values())
    clip = sorted(norms)[len(norms) // 2]  # the bound binds for some rows, not for others
    assert min(norms) < clip <= max(norms)
    factors = [min(1.0, clip / (n + 1e-6)) for n in norms]  # Opacus's clipping factor
    clipped = {n: sum(f * g for f, g in zip(factors, gs, strict=True))
               for n, gs in grads.items()}
    n = len(rows)
    pieces = PhysicalBatches([collate(rows[:3]), collate(rows[3:])])  # padded, two pieces
    ghost = dp_update(copy.deepcopy(base), pieces, objective, clip, n, "ghost")
    noise = dp_update(copy.deepcopy(base), EmptyBatch(), objective, clip, n, "ghost")
    exact = dp_update(copy.deepcopy(base), pieces, objective, clip, n, "exact")
    flat_noise = torch.cat([v.flatten() for v in noise.values()])
    plan = plan_privacy(8.0, 1e-5, clip, batch_size=n, dataset_size=1000, steps=10)
    # lr 1: the noise-only step is -N(0, (sigma C)^2) / (q N), element by element
    assert 0.5 < float(flat_noise.std()) / (plan.noise_multiplier * clip / n) < 1.5
    for key, value in ghost.items():
        expected = noise[key] - clipped[key] / n
        # Some grad samplers (LoRA, RMSNorm, positions), hence some norms and so the clipping
        # factors, compute in float32: errors ~1e-8 on weights changing by ~0.5
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(exact[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("shape", [(3, 5), (3, 4, 2, 5), (3, 40, 5)])
def test_linear_norm_sampler_is_exact_for_any_shape_and_both_formulas(shape):
    """Gram matrices (short inputs) or the layer's own gradient (long ones), same norms."""
    torch.manual_seed(0)
    layer = nn.Linear(5, 6).double()
    x = torch.randn(*shape, dtype=torch.float64)
    g = torch.randn(*shape[:-1], 6, dtype=torch.float64)
    got = linear_norm_sample(layer, [x], g)
    for i in range(shape[0]):
        xi, gi = x[i].reshape(-1, 5), g[i].reshape(-1, 6)
        weight, bias = gi.t() @ xi, gi.sum(0)  # the example's own gradient
        assert float(got[layer.weight][i]) == pytest.approx(float(weight.norm()), rel=1e-12)
        assert float(got[layer.bias][i]) == pytest.approx(float(bias.norm()), rel=1e-12)


def test_a_layer_called_twice_is_refused_by_name_under_ghost_clipping():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(self.inner(x)).sum(-1)

    model = Twice()
    privacy = PrivateTraining(plan_privacy(8.0, 1e-5, 1.0, batch_size=4, dataset_size=100,
                                           steps=3), secret=SECRET)
    privacy.transform_model(model)
    model.train()
    with pytest.raises(PrivacyError, match="layer 'inner' runs more than once.*exact"):
        model(torch.randn(4, 3))


def test_an_unknown_clipping_mode_is_refused():
    plan = plan_privacy(8.0, 1e-5, 1.0, batch_size=4, dataset_size=100, steps=3)
    with pytest.raises(PrivacyError, match=r"--dp-clipping must be one of \('ghost', "
                                           r"'exact'\), got 'fast'"):
        PrivateTraining(plan, clipping="fast")


def test_bitfit_leaves_only_biases_norms_and_the_head_trainable():
    model = encoder(2, SequenceClassifier)
    freeze_all_but_biases_and_norms(model.backbone)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(".bias") or "norm" in n or n.startswith("head.")
                             for n in trainable)
    assert {"head.weight", "head.bias", "backbone.blocks.0.attn.q.bias"} <= trainable
    assert not any(n.endswith("q.weight") or n.startswith("backbone.embed.") for n in trainable)
    llama = decoder(tied=True)  # no biases: the RMSNorm gains alone
    freeze_all_but_biases_and_norms(llama)
    assert {n for n, p in llama.named_parameters() if p.requires_grad} == {
        "blocks.0.attn_norm.weight", "blocks.0.mlp_norm.weight", "blocks.1.attn_norm.weight",
        "blocks.1.mlp_norm.weight", "final_norm.weight"}
