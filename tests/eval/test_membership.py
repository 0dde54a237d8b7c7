"""The membership-inference evaluation: its AUC and ROC against scikit-learn's."""

from __future__ import annotations

import random

import pytest

from zenlm.eval.membership import mann_whitney_auc, roc_curve, tpr_at


def scores(seed: int, shift: float, n: int) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    # rounded: many ties, which the rank formula must average like sklearn does
    inside = [round(rng.gauss(shift, 1.0), 1) for _ in range(n)]
    outside = [round(rng.gauss(0.0, 1.0), 1) for _ in range(n + 7)]
    return inside, outside


@pytest.mark.parametrize(("seed", "shift"), [(0, 0.0), (1, 0.5), (2, 2.0), (3, -1.0)])
def test_auc_and_roc_equal_sklearn(seed, shift):
    metrics = pytest.importorskip("sklearn.metrics")
    inside, outside = scores(seed, shift, 150)
    truth = [1] * len(inside) + [0] * len(outside)
    assert mann_whitney_auc(inside, outside) == pytest.approx(
        metrics.roc_auc_score(truth, inside + outside), abs=1e-12)
    fpr, tpr = roc_curve(inside, outside)
    sk_fpr, sk_tpr, _ = metrics.roc_curve(truth, inside + outside, drop_intermediate=False)
    assert fpr == pytest.approx(sk_fpr.tolist()) and tpr == pytest.approx(sk_tpr.tolist())
    best = max(t for f, t in zip(sk_fpr, sk_tpr, strict=True) if f <= 0.1)
    assert tpr_at(fpr, tpr, 0.1) == pytest.approx(best)


def test_auc_extremes_and_empty_sides():
    assert mann_whitney_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert mann_whitney_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert mann_whitney_auc([1.0], [1.0]) == 0.5
    with pytest.raises(ValueError, match="got 0 and 2"):
        mann_whitney_auc([], [1.0, 2.0])


def test_membership_options_are_checked():
    from zenlm.tasks.membership import run

    with pytest.raises(ValueError, match="not --data"):
        run(model="m", data="d.tsv", members="a", non_members="b")
    with pytest.raises(ValueError, match="needs --members F"):
        run(model="m", members="a")


@pytest.fixture(scope="module")
def private_run(minilm_folder, tmp_path_factory):
    """(folder, members, non-members, finetune's summary) of a DP run through the CLI."""
    import json

    from zenlm.cli import main

    tmp = tmp_path_factory.mktemp("dp")
    rows = [f"a {'good' if i % 2 else 'bad'} film number {i}\t{i % 2}" for i in range(60)]
    members, non_members = tmp / "train.tsv", tmp / "held.tsv"
    members.write_text("sentence\tlabel\n" + "\n".join(rows[:40]) + "\n", encoding="utf-8")
    non_members.write_text("sentence\tlabel\n" + "\n".join(rows[40:]) + "\n", encoding="utf-8")
    lines: list[str] = []
    capture = pytest.MonkeyPatch()
    capture.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    try:
        code = main(["finetune", "--task", "classify", "--model", str(minilm_folder),
                     "--train", str(members), "--val", str(non_members), "--output",
                     str(tmp / "run"), "--max-steps", "4", "--batch-size", "8",
                     "--max-length", "16", "--lora", "--lora-dropout", "0",
                     "--freeze-layers", "5", "--dp-epsilon", "2", "--dp-delta", "1e-3",
                     "--dp-max-grad-norm", "0.5", "--lr", "1e-2"])
    finally:
        capture.undo()
    assert code == 0
    return tmp / "run" / "model", members, non_members, json.loads("\n".join(lines))


def test_private_finetune_evaluate_and_attack_through_the_cli(private_run, tmp_path, capsys):
    import json

    from opacus.accountants import RDPAccountant

    from zenlm.cli import main

    model, members, non_members, summary = private_run
    assert main(["evaluate", "--task", "classify", "--model", str(model), "--data",
                 str(non_members), "--json"]) == 0
    dp = json.loads(capsys.readouterr().out)["dp"]
    oracle = RDPAccountant()
    for _ in range(4):
        oracle.step(noise_multiplier=dp["noise_multiplier"], sample_rate=8 / 40)
    assert dp["epsilon"] == pytest.approx(oracle.get_epsilon(delta=1e-3), rel=1e-9)
    assert (dp["steps"], dp["sample_rate"], dp["delta"], dp["max_grad_norm"]) == (
        4, 0.2, 1e-3, 0.5)
    assert dp == summary["dp"]
    assert "secret" not in (model / "privacy.json").read_text()
    assert main(["evaluate", "--task", "membership", "--model", str(model), "--members",
                 str(members), "--non-members", str(non_members), "--json",
                 "--report", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.0 <= report["auc"] <= 1.0 and report["dp"] == dp
    assert (tmp_path / "roc.png").stat().st_size > 1000


@pytest.mark.parametrize(("flags", "message"), [
    (["--dp-epsilon", "0"], "--dp-epsilon must be a finite number > 0, got 0.0"),
    (["--dp-epsilon", "1", "--dp-delta", "0.05"], "--dp-delta must be in (0, 1/N)"),
    (["--dp-epsilon", "1", "--lora", "--lora-dropout", "0.1"], "--lora-dropout 0"),
])
def test_bad_private_settings_are_one_clear_error(private_run, minilm_folder, tmp_path, capsys,
                                                  flags, message):
    from zenlm.cli import main

    _, members, _, _ = private_run
    assert main(["finetune", "--task", "classify", "--model", str(minilm_folder), "--train",
                 str(members), "--output", str(tmp_path), "--max-steps", "1", *flags]) == 2
    assert message in capsys.readouterr().err
