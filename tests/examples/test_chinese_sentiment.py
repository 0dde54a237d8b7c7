"""benchmarks/chinese_sentiment.py runs its whole chain on tiny data it is given, and keeps the
validation reviews out of the tokenizer, pretraining and fine-tuning inputs."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer

from zenlm.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
GOOD = ["房间干净", "服务热情", "早餐丰富", "位置方便", "床很舒服", "性价比高"]
BAD = ["设施陈旧", "隔音很差", "前台态度不好", "房间有异味", "空调坏了", "价格太贵"]
N_REVIEWS = 240


def write_data(root: Path) -> list[tuple[str, str]]:
    """chinese-text/*.txt and chnsenticorp/train.csv, shaped as ../shared/data's; the rows."""
    rng = random.Random(0)
    text = root / "chinese-text"
    text.mkdir(parents=True)
    names, verbs = ["宝玉", "黛玉", "宋江", "武松", "凤姐"], ["笑道", "说道", "叹道", "问道"]
    for book in ("a", "b"):
        lines = [f"{rng.choice(names)}{rng.choice(verbs)}：“今日天气很好，我们去园中走走。”"
                 f"第{i}回。" for i in range(150)]
        (text / f"{book}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = []
    for i in range(N_REVIEWS):
        label = str(i % 3 != 0)  # 2:1, sorted by label as the real file is
        words = GOOD if label == "True" else BAD
        review = f"{rng.choice(words)}，{rng.choice(words)}, 第{i}号评论。"  # an ASCII comma
        rows.append(("1" if label == "True" else "0", review))
    rows.sort(key=lambda r: r[0], reverse=True)
    folder = root / "chnsenticorp"
    folder.mkdir()
    with (folder / "train.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["label", "review"])
        writer.writerows(rows)
    return rows


def read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [(r["label"], r["review"]) for r in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(data rows, --out folder, results.json, stdout) of one tiny run of the whole chain."""
    root = tmp_path_factory.mktemp("chinese")
    rows = write_data(root / "data")
    out = root / "out"
    args = ["--data", str(root / "data"), "--out", str(out), "--minutes", "10",
            "--layers", "1", "--d-model", "32", "--heads", "2", "--block-size", "32",
            "--batch-size", "8", "--vocab-size", "300", "--pretrain-steps", "3",
            "--finetune-steps", "4", "--eval-every", "2", "--ft-batch-size", "8",
            "--probe", "20", "--dev-size", "10", "--mask-prob", "0.25", "--review-weight", "3",
            "--ft-dropout", "0.1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "chinese_sentiment.py"),
                           *args], capture_output=True, text=True, timeout=600, env=env,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return rows, out, json.loads((out / "results.json").read_text(encoding="utf-8")), done.stdout


def test_split_is_seeded_and_complete(run):
    rows, out, results, _ = run
    parts = {name: read_csv(out / f"{name}.csv") for name in ("train", "dev", "validation")}
    assert len(parts["validation"]) == N_REVIEWS // 10 and len(parts["dev"]) == 10
    assert sorted(sum(parts.values(), [])) == sorted(rows)  # every row once (all distinct)
    assert {label for label, _ in parts["validation"]} == {"0", "1"}  # shuffled, not the tail
    assert results["split"]["counts"] == {k: len(v) for k, v in parts.items()}


def test_validation_reviews_reach_no_training_input(run):
    _, out, results, _ = run
    validation = [review for _, review in read_csv(out / "validation.csv")]
    own = results["routes"]["own"]
    config = json.loads(Path(own["pretrain"]["config"]).read_text(encoding="utf-8"))
    command = own["finetune"]["command"]
    finetune_inputs = [command[command.index(flag) + 1] for flag in ("--train", "--val")]
    inputs = {  # every file a tokenizer, the pretraining or the fine-tuning read
        *own["tokenizer"]["inputs"].values(), *config["data"]["paths"], *finetune_inputs,
    }
    assert Path(own["tokenizer"]["inputs"]["corpus"]) in map(Path, config["data"]["paths"])
    assert str(out / "validation.csv") not in command
    for path in inputs:
        text = Path(path).read_text(encoding="utf-8")
        assert text.strip()
        leaked = [review for review in validation if review in text]
        assert leaked == [], (path, leaked[:3])
    train = {review for _, review in read_csv(out / "train.csv")}
    corpus = Path(own["tokenizer"]["inputs"]["corpus"]).read_text(encoding="utf-8")
    assert all(json.dumps(review, ensure_ascii=False) in corpus for review in train)


def test_every_stage_leaves_its_artefacts(run):
    _, out, results, stdout = run
    own = results["routes"]["own"]
    for kind in ("wordpiece", "unigram"):
        assert (out / "tokenizers" / kind / "tokenizer.json").is_file()
    model = Path(own["pretrain"]["model"])
    assert json.loads((model / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
    assert own["pretrain"]["steps"] == 3 and own["finetune"]["steps"] == 4
    config = json.loads(Path(own["pretrain"]["config"]).read_text(encoding="utf-8"))
    assert config["train"]["mask_prob"] == 0.25  # --mask-prob reaches the pretraining
    reviews = own["tokenizer"]["inputs"]["reviews"]  # --review-weight 3: the corpus + 2 copies
    assert config["data"]["paths"] == [reviews, reviews, own["tokenizer"]["inputs"]["corpus"]]
    command = own["finetune"]["command"]
    assert command[command.index("--dropout") + 1] == "0.1"  # --ft-dropout reaches finetune
    assert (Path(own["finetune"]["model"]) / "task.json").is_file()
    assert own["n"] == N_REVIEWS // 10 and 0.0 <= own["accuracy"] <= 1.0
    assert set(own["stages"]) == {"tokenizer", "pretrain", "finetune", "evaluate"}
    # Each figure is rounded to 0.001 minute, so the stages' sum may pass the rounded
    # total by up to half a unit per figure (it did: 0.222 against 0.221).
    slack = 0.0005 * (len(own["stages"]) + 1) + 1e-9
    assert sum(own["stages"].values()) <= own["total_minutes"] + slack
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "| own |" in table and f"({N_REVIEWS // 10} reviews)" in table
    assert "cpu " in stdout and "features " in stdout  # the CPU the figures ran on


def test_tokenizer_choice_follows_its_measurement(run):
    """The recorded probe figures, recomputed with Hugging Face `tokenizers` directly."""
    _, out, results, _ = run
    tok = results["routes"]["own"]["tokenizer"]
    reviews = (out / "corpus" / "train_reviews.txt").read_text(encoding="utf-8").splitlines()
    probe = reviews[-tok["probe_reviews"]:]
    unk_names = {"wordpiece": "[UNK]", "unigram": "<unk>"}
    for kind, recorded in tok["candidates"].items():
        backend = HFTokenizer.from_file(str(out / "tokenizers" / kind / "tokenizer.json"))
        ids = [i for text in probe for i in backend.encode(text, add_special_tokens=False).ids]
        unk = backend.token_to_id(unk_names[kind])
        assert recorded["tokens_per_review"] == pytest.approx(len(ids) / len(probe))
        assert recorded["unk_rate"] == pytest.approx(ids.count(unk) / len(ids))
    scores = tok["candidates"]
    best_unk = min(s["unk_rate"] for s in scores.values())
    fair = [k for k, s in scores.items() if s["unk_rate"] <= best_unk + 0.001]
    assert tok["chosen"] == min(fair, key=lambda k: scores[k]["tokens_per_review"])
    assert Path(tok["folder"]) == out / "tokenizers" / tok["chosen"]


def test_comparison_routes_run_on_the_same_split(run, minilm_folder, smollm2_gguf, tmp_path):
    _, first_out, _, _ = run
    out = tmp_path / "routes"
    args = ["--data", str(first_out.parent / "data"), "--out", str(out),
            "--routes", "minilm-extended,smollm2-lora", "--finetune-steps", "2",
            "--eval-every", "0", "--ft-batch-size", "4", "--dev-size", "10", "--minutes", "5"]
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "chinese_sentiment.py"),
                           *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_csv(out / "validation.csv") == read_csv(first_out / "validation.csv")  # seeded
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results["routes"]) == ["minilm-extended", "smollm2-lora"]
    for name, route in results["routes"].items():
        command = route["finetune"]["command"]
        assert command[command.index("--train") + 1] == str(out / "train.csv"), name
        assert str(out / "validation.csv") not in command
        assert route["finetune"]["steps"] == 2 and route["n"] == N_REVIEWS // 10
    assert "--extend-vocab" in results["routes"]["minilm-extended"]["finetune"]["command"]
    assert "--lora" in results["routes"]["smollm2-lora"]["finetune"]["command"]


def test_init_writes_a_continued_pretraining_config_zenlm_reads(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "chinese_sentiment", REPO / "benchmarks" / "chinese_sentiment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(["--init", "all-minilm-l6-v2", "--body-lr-scale", "0.2",
                              "--out", str(tmp_path)])
    inputs = {"corpus": str(tmp_path / "corpus.jsonl"), "reviews": str(tmp_path / "r.txt")}
    path = module.pretrain_config(args, tmp_path, inputs, str(tmp_path / "tok"), 5.0)
    config = load_config(path)  # as `zenlm pretrain --config` reads it
    assert config.model == {} and config.train.init_from == "all-minilm-l6-v2"
    assert config.optim.lr_scales == {"encoder.blocks.": 0.2}
    scratch = load_config(module.pretrain_config(module.parse_args(["--out", str(tmp_path)]),
                                                 tmp_path, inputs, str(tmp_path / "tok"), 5.0))
    assert scratch.model["n_layers"] == 4 and not scratch.train.init_from
    assert scratch.optim.lr_scales == {}


@pytest.mark.parametrize(("flags", "message"), [
    (["--review-weight", "0"], "--review-weight must be 1 or more (copies of the reviews), got 0"),
    (["--ft-dropout", "1"], "--ft-dropout must be a dropout rate in [0, 1), got 1.0"),
    (["--body-lr-scale", "-1"], "--body-lr-scale must be 0 or more (0 freezes the blocks), "
                                "got -1.0"),
])
def test_bad_options_are_refused_before_any_stage(tmp_path, flags, message):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "chinese_sentiment.py"),
                           "--out", str(tmp_path / "out"), *flags], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "out").exists()  # nothing was split, trained or written
