"""zenlm.errors: errors carry what they are about as data, not only in their text."""

from __future__ import annotations

import pickle

import pytest

from zenlm.errors import InvalidParameter, ZenlmError


def test_invalid_parameter_carries_its_parameter():
    error = InvalidParameter("top_p", "top_p must be in (0, 1], got 1.5")
    assert error.param == "top_p"
    assert str(error) == error.message == "top_p must be in (0, 1], got 1.5"
    assert isinstance(error, ZenlmError) and isinstance(error, ValueError)  # old handlers
    with pytest.raises(ValueError, match="top_p must be"):
        raise error


def test_invalid_parameter_survives_pickling():
    """Errors cross process boundaries (data loader workers, multiprocessing) intact."""
    error = pickle.loads(pickle.dumps(InvalidParameter("n", "n must be >= 1, got 0")))
    assert (type(error), error.param, str(error)) == (InvalidParameter, "n", "n must be >= 1, got 0")


def test_generation_config_names_the_parameter_as_data():
    from zenlm.generate import GenerationConfig

    for field, value in [("top_p", 0.0), ("temperature", -1.0), ("seed", "x"), ("top_k", -2)]:
        with pytest.raises(InvalidParameter) as info:
            GenerationConfig(**{field: value}).validate()
        assert info.value.param == field and info.value.message.startswith(field)
