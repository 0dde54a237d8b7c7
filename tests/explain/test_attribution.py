"""captum attributions: integrated gradients' completeness, gradient x input by autograd."""

from __future__ import annotations

import pytest
import torch

from tests.explain.conftest import sharpen, tiny_encoder
from zenlm.explain.attribution import attribute
from zenlm.models.heads import SequenceClassifier, TokenClassifier

PAD, CLS, SEP = 0, 101, 102
IDS = torch.tensor([[CLS, 2023, 3185, 2001, 2307, 999, SEP]])  # "this movie was great !"


def _baseline(ids):
    """The path's start, written out here: ordinary tokens -> [PAD], [CLS]/[SEP] kept."""
    base = ids.clone()
    base[(ids != CLS) & (ids != SEP)] = PAD
    return base


@pytest.fixture(scope="module")
def classifier(minilm_folder):
    model = SequenceClassifier(tiny_encoder(minilm_folder), 3).eval()
    sharpen(model.head)
    return model


def test_integrated_gradients_complete_on_a_classifier(classifier):
    with torch.no_grad():
        logits = classifier(IDS)[0].double()
        base_logits = classifier(_baseline(IDS))[0].double()
    for label in range(3):
        found = attribute(classifier, classifier.backbone.embed, IDS, [label], pad=PAD,
                          special={CLS, SEP}, n_steps=64)
        scores, out, base, delta = found.scores, found.output, found.baseline_output, found.delta
        assert scores.shape == (1, IDS.shape[1])
        assert out[0].item() == pytest.approx(logits[label].item(), abs=1e-9)
        assert base[0].item() == pytest.approx(base_logits[label].item(), abs=1e-9)
        gap = (logits[label] - base_logits[label]).item()
        assert abs(gap) > 0.05  # a real difference to account for
        # completeness: the attributions add up to f(text) - f(baseline)
        assert scores.sum().item() == pytest.approx(gap, rel=1e-3, abs=1e-5)
        assert abs(delta[0].item()) < 1e-3 * abs(gap) + 1e-5
        assert found.completeness_error() == pytest.approx(abs(delta[0].item() / gap))
        assert scores[0, 0] == 0 and scores[0, -1] == 0  # kept special tokens move nothing


def test_integrated_gradients_complete_per_token_of_a_tagger(minilm_folder):
    tagger = TokenClassifier(tiny_encoder(minilm_folder), 3).eval()
    sharpen(tagger.head)
    targets = [(1, 2), (3, 0), (4, 1)]
    with torch.no_grad():
        gaps = [(tagger(IDS)[0, t, c] - tagger(_baseline(IDS))[0, t, c]).item()
                for t, c in targets]
    scores = attribute(tagger, tagger.backbone.embed, IDS, targets, pad=PAD,
                       special={CLS, SEP}, n_steps=64).scores
    assert scores.shape == (3, IDS.shape[1])
    for row, gap in zip(scores, gaps, strict=True):
        assert row.sum().item() == pytest.approx(gap, rel=1e-3, abs=1e-5)


def test_gradient_x_input_equals_autograd(classifier):
    stored = {}

    def keep(module, inputs, output):
        output.retain_grad()
        stored["embedding"] = output

    handle = classifier.backbone.embed.register_forward_hook(keep)
    try:
        classifier(IDS)[0, 2].backward()
    finally:
        handle.remove()
        classifier.zero_grad()
    embedding = stored["embedding"]
    expected = (embedding.grad * embedding).sum(-1).double().detach()  # (1, T)
    found = attribute(classifier, classifier.backbone.embed, IDS, [2], pad=PAD,
                      special={CLS, SEP}, method="gxi")
    assert found.baseline_output is None and found.completeness_error() is None
    torch.testing.assert_close(found.scores, expected, atol=1e-6, rtol=1e-5)


def test_unknown_method_is_named(classifier):
    with pytest.raises(ValueError, match="ig.*'lime'"):
        attribute(classifier, classifier.backbone.embed, IDS, [0], pad=PAD, special=set(),
                  method="lime")
