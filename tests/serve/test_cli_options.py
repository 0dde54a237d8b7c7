"""`zenlm serve` options: where the key comes from, the served model's name."""

from __future__ import annotations

import pytest

from zenlm.commands.serve import _api_key, _default_name


def test_key_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("ZENLM_API_KEY", raising=False)
    assert _api_key(None, None) is None
    (tmp_path / "k").write_text("  secret-from-file\n")
    assert _api_key(None, str(tmp_path / "k")) == "secret-from-file"
    monkeypatch.setenv("ZENLM_API_KEY", "from-env")
    assert _api_key(None, None) == "from-env"
    assert _api_key("given", None) == "given"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        _api_key(None, str(tmp_path / "empty"))


def test_default_model_names():
    assert _default_name("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert _default_name("/models/SmolLM2.Q4_1.gguf") == "SmolLM2.Q4_1"
    assert _default_name("/models/my-folder") == "my-folder"
