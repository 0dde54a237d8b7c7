"""Bad checkpoints raise one clear zenlm error naming the file and the problem."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import zenlm
from zenlm.errors import CheckpointError, UnsafeFormatError, UnsupportedModelError

from ..models.tiny_hf import tiny_hf_model


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    tiny_hf_model("llama").save_pretrained(folder)
    return folder


def _copy(src, dst):
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_missing_path_names_it_and_the_alternatives(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope.*short names"):
        zenlm.load(tmp_path / "nope")


def test_folder_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        zenlm.load(tmp_path, quantize=None)


def test_corrupt_config_json(good_folder, tmp_path):
    _copy(good_folder, tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: not valid JSON"):
        zenlm.load(tmp_path, quantize=None)


def test_unknown_architecture(good_folder, tmp_path):
    _copy(good_folder, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "mamba"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="'mamba'"):
        zenlm.load(tmp_path, quantize=None)


def test_truncated_safetensors(good_folder, tmp_path):
    _copy(good_folder, tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: cannot read safetensors"):
        zenlm.load(tmp_path, quantize=None)


def test_garbage_safetensors(good_folder, tmp_path):
    _copy(good_folder, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        zenlm.load(tmp_path, quantize=None)


def test_shape_mismatch_names_the_tensor(good_folder, tmp_path):
    _copy(good_folder, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 100
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"mlp\.(gate|up|down)\.weight has shape"):
        zenlm.load(tmp_path, quantize=None)


def test_missing_tensor(good_folder, tmp_path):
    _copy(good_folder, tmp_path)
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing.*blocks\.1\.mlp\.up\.weight"):
        zenlm.load(tmp_path, quantize=None)


def test_unexpected_tensor(good_folder, tmp_path):
    _copy(good_folder, tmp_path)
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.0.vision_tower.weight"] = torch.zeros(2)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="vision_tower"):
        zenlm.load(tmp_path, quantize=None)


def test_missing_shard_of_an_index(good_folder, tmp_path):
    _copy(good_folder, tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="00002-of-00002.safetensors: listed in the index"):
        zenlm.load(tmp_path, quantize=None)


def test_sharded_folder_loads(good_folder, tmp_path):
    hf = tiny_hf_model("llama")
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    lm = zenlm.load(tmp_path, quantize=None)
    ids = torch.randint(3, 96, (1, 8))
    with torch.no_grad():
        assert (lm.logits(ids) - hf(ids).logits).abs().max() < 1e-4


class _Boom:
    def __reduce__(self):  # would run code if unpickled
        return (exec, ("raise SystemExit('unpickled!')",))


@pytest.mark.parametrize("name", ["model.bin", "model.pt", "weights.pth", "x.ckpt"])
def test_pickle_file_is_refused_without_unpickling(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(UnsafeFormatError, match=r"pickle.*safetensors"):
        zenlm.load(path, quantize=None)


def test_folder_with_only_pytorch_model_bin_is_refused(good_folder, tmp_path):
    (tmp_path / "config.json").write_text((good_folder / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(UnsafeFormatError, match="pytorch_model.bin"):
        zenlm.load(tmp_path, quantize=None)


def test_lone_safetensors_file_points_to_its_folder(good_folder):
    with pytest.raises(CheckpointError, match="give the folder"):
        zenlm.load(good_folder / "model.safetensors")
