"""Typed config: YAML sections, overrides with types, unknown keys with close matches."""

from __future__ import annotations

import pytest

from zenlm.cli import main
from zenlm.train.config import load_config, parse_overrides


def test_demo_config_and_overrides_are_typed():
    config = load_config("demo", ["--train.max_steps=7", "--optim.lr", "1e-3", "--model.n_layers=3",
                                  "--train.compile=true", "--data.paths=a.txt,b.txt"])
    assert config.train.max_steps == 7 and isinstance(config.train.max_steps, int)
    assert config.optim.lr == 1e-3 and config.model["n_layers"] == 3 and config.train.compile is True
    assert config.data.paths == ["a.txt", "b.txt"]


@pytest.mark.parametrize(("override", "message"), [
    ("--train.max_stpes=3", "did you mean max_steps"),
    ("--trian.max_steps=3", "did you mean train"),
    ("--model.n_layer=3", "did you mean n_layers"),
    ("--train.max_steps=abc", "max_steps must be int"),
    ("--train.compile=maybe", "must be true or false"),
    ("--model.d_model=102", "not divisible by n_heads"),
    ("stray", "unexpected argument"),
    # Settings valid one by one, checked once all are set (overrides arrive one at a time).
    ("--train.mask_prob=0", r"mask_prob is the fraction of tokens masked, in \(0, 1\]; got 0.0"),
    ("--train.mask_prob=1.5", "got 1.5"),
    ("--train.schedule_by_time=true", "schedule_by_time needs train.max_minutes > 0, got 0.0"),
    ("--train.schedule_fits_max_minutes=true",
     "schedule_fits_max_minutes needs train.max_minutes > 0, got 0.0"),
    ("--optim.lr_scales=head.", "lr_scales must be a mapping of name prefix to number"),
    ("--optim.lr_scales={head.: fast}", r"lr_scales.head. must be float, got 'fast'"),
])
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("demo", [override])


def test_yaml_unknown_key_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"c\.yaml: optim: unknown key 'optim.learning_rate'"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_learning_rate_scales_from_a_file_and_an_override(tmp_path):
    path = tmp_path / "c.json"  # JSON is YAML
    path.write_text('{"optim": {"lr_scales": {"blocks.": 0.1, "head.": 10}}, "model": '
                    '{"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64}}', encoding="utf-8")
    assert load_config(path).optim.lr_scales == {"blocks.": 0.1, "head.": 10.0}
    config = load_config("demo", ["--optim.lr_scales={embed.: 0.5}"])
    assert config.optim.lr_scales == {"embed.": 0.5}


def test_a_model_without_its_shape_is_refused_by_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  d_model: 64\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks \['n_layers', 'n_heads', 'd_ff'\]: give"):
        load_config(path)


def test_yaml_settings_are_checked_together(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  objective: mlm\n  mask_prob: 0.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="mask_prob .* got 0.0"):
        load_config(path)


def test_cli_reports_unknown_override(capsys):
    assert main(["pretrain", "--config", "demo", "--train.max_stpes=3"]) == 2
    assert "did you mean max_steps" in capsys.readouterr().err


def test_parse_overrides_forms():
    assert parse_overrides(["--a.b=1", "--c.d", "x y"]) == [("a.b", 1), ("c.d", "x y")]
