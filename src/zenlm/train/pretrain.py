"""Pretraining from scratch: config -> tokenizer -> shards -> model -> Trainer -> HF folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from zenlm.config import to_hf_config
from zenlm.data.readers import read_documents
from zenlm.data.shards import BlockSampler, ShardSet, build_shards
from zenlm.tokenizer import Tokenizer
from zenlm.tokenizer_train import train_tokenizer
from zenlm.train.config import PretrainConfig, default_cache_dir
from zenlm.train.continued import continued_backbone, source_arch
from zenlm.train.distributed import DistContext, init_distributed, shutdown_distributed
from zenlm.train.export import load_trained, save_trained
from zenlm.train.objectives import (
    OBJECTIVES,
    MaskedLMObjective,
    SpanCorruptionObjective,
    build_for_objective,
    causal_lm_loss,
    resolve_objective,
)
from zenlm.train.trainer import Objective, Trainer, TrainResult

__all__ = ["OBJECTIVES", "build_for_objective", "make_objective", "pretrain", "resolve_objective"]

PYDOC_CORPUS = "pydoc:topics"
MASK_TOKEN = "[MASK]"  # added to trained tokenizers of masked-LM runs
#: Sentinels added to trained tokenizers of span-corruption runs (T5's names and count).
SENTINELS = tuple(f"<extra_id_{i}>" for i in range(100))


def resolve_paths(paths: list[str], cache_dir: Path) -> list[Path]:
    """Corpus paths, with "pydoc:topics" written out once as a JSONL file in `cache_dir`."""
    resolved = []
    for entry in paths:
        if entry != PYDOC_CORPUS:
            resolved.append(Path(entry))
            continue
        from pydoc_data.topics import topics

        path = cache_dir / "pydoc_topics.jsonl"
        if not path.is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps({"text": text}) + "\n"
                                   for _, text in sorted(topics.items())), encoding="utf-8")
            tmp.replace(path)
        resolved.append(path)
    return resolved


def prepare_tokenizer(config: PretrainConfig, paths: list[Path], dist: DistContext) -> Tokenizer:
    """The run's tokenizer: the configured folder, the run's own, or trained now (rank 0)."""
    if config.tokenizer.path:
        return Tokenizer.from_folder(config.tokenizer.path)
    folder = Path(config.train.out_dir) / "tokenizer"
    if dist.is_main and not (folder / "tokenizer.json").is_file():
        docs = read_documents(paths, field=config.data.field, txt_unit=config.data.txt_unit,
                              skip_bad_lines=config.data.skip_bad_lines)
        extra = [MASK_TOKEN] if needs_mask_token(config) else []
        if needs_sentinels(config):
            extra = list(SENTINELS)
        tokenizer = train_tokenizer(_capped(docs, config.tokenizer.max_train_chars),
                                    kind=config.tokenizer.kind,  # type: ignore[arg-type]
                                    vocab_size=config.tokenizer.vocab_size,
                                    extra_special_tokens=extra)
        tmp = folder.with_name("tokenizer.tmp")
        tokenizer.save(tmp)
        tmp.replace(folder)  # appears whole, so a crashed run never finds half a tokenizer
    dist.barrier()
    return Tokenizer.from_folder(folder)


def _capped(docs, max_chars: int):  # noqa: ANN001, ANN202
    total = 0
    for doc in docs:
        if total >= max_chars:
            return
        total += len(doc)
        yield doc


def prepare_shards(config: PretrainConfig, paths: list[Path], tokenizer: Tokenizer,
                   dist: DistContext) -> ShardSet:
    """Tokenize once (rank 0 first; the others then find the cached shards)."""
    cache = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
    options = dict(val_fraction=config.data.val_fraction, field=config.data.field,
                   txt_unit=config.data.txt_unit, skip_bad_lines=config.data.skip_bad_lines)
    shards = None
    if dist.is_main:
        shards = build_shards(paths, tokenizer, cache, progress=config.train.progress,
                              **options)  # type: ignore[arg-type]
    dist.barrier()
    return shards or build_shards(paths, tokenizer, cache, progress=False,
                                  **options)  # type: ignore[arg-type]


def pretrain(config: PretrainConfig, *, resume: str = "auto") -> TrainResult:
    """Run a whole pretraining job (also one rank of a torchrun job)."""
    dist = init_distributed()
    try:
        return _pretrain(config, resume, dist)
    finally:
        shutdown_distributed()


def _pretrain(config: PretrainConfig, resume: str, dist: DistContext) -> TrainResult:
    out_dir = Path(config.train.out_dir)
    cache = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
    paths = resolve_paths(config.data.paths, cache)
    tokenizer = prepare_tokenizer(config, paths, dist)
    shards = prepare_shards(config, paths, tokenizer, dist)
    block = config.data.block_size
    continued = None
    if config.train.init_from:
        continued = continued_backbone(config.train.init_from, tokenizer, block,
                                       seed=config.train.seed)
        model_config = continued.model.config
    else:
        model_config = config.model_config(
            vocab_size=tokenizer.vocab_size, max_seq_len=block,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    objective_name = resolve_objective(config.train.objective, model_config)
    if config.train.export_hf:
        to_hf_config(model_config)  # a model the export would refuse is refused before training
    torch.manual_seed(config.train.seed)  # the initial weights
    if continued is None:
        model = build_for_objective(model_config, objective_name)
    else:
        head = continued.mlm_head() if objective_name == "mlm" else None
        model = build_for_objective(model_config, objective_name, continued.model, head)
    if dist.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"model: {n_params / 1e6:.2f}M parameters; tokens: {len(shards.train):,} train, "
              f"{len(shards.val):,} val ({shards.folder})")
    train = BlockSampler(shards.train, block, seed=config.train.seed)
    val = BlockSampler(shards.val, block, shuffle=False) if len(shards.val) > block else None
    trainer = Trainer(
        model, make_objective(objective_name, tokenizer, config), train, val,
        optim=config.optim, loop=config.train, dist=dist,
        run_config={"pretrain": config.to_dict(), "model": model_config.to_dict()},
        save_extra=tokenizer.save,
    )
    result = trainer.fit(resume)
    if dist.is_main and config.train.export_hf:
        if trainer.sharded:  # the weights are spread over ranks: take them from the checkpoint
            model = load_trained(out_dir)[0]
        save_trained(model, out_dir / "model", tokenizer=tokenizer)
    return result


def needs_mask_token(config: PretrainConfig) -> bool:
    """Whether the run trains a masked LM (its tokenizer then needs [MASK])."""
    return config.train.objective == "mlm" or (config.train.objective == "auto"
                                                and run_arch(config) == "encoder")


def needs_sentinels(config: PretrainConfig) -> bool:
    """Whether the run trains span corruption (its tokenizer then needs sentinels)."""
    return config.train.objective == "span" or (config.train.objective == "auto"
                                                 and run_arch(config) == "encoder-decoder")


def run_arch(config: PretrainConfig) -> str:
    """The architecture the run trains: its `model` section's, or its init_from model's."""
    if config.train.init_from:
        return source_arch(config.train.init_from)
    return config.model.get("arch", "decoder")


def make_objective(name: str, tokenizer: Tokenizer, config: PretrainConfig) -> Objective:
    """The Trainer objective of `name` for this tokenizer.

    Raises:
        ValueError: a masked LM whose tokenizer has no [MASK] token, or span corruption
            whose tokenizer has no sentinels, EOS or padding token.
    """
    if name == "causal":
        return causal_lm_loss
    if name == "span":
        return span_objective(tokenizer)
    mask_id = tokenizer.backend.token_to_id(MASK_TOKEN)
    if mask_id is None:
        raise ValueError(f"train.objective=mlm needs a {MASK_TOKEN} token, and tokenizer "
                         f"{config.tokenizer.path or 'of the run'} has none")
    specials = [i for i, t in tokenizer.backend.get_added_tokens_decoder().items() if t.special]
    return MaskedLMObjective(mask_id=mask_id, vocab_size=tokenizer.vocab_size,
                             special_ids=specials, mask_prob=config.train.mask_prob)


def span_objective(tokenizer: Tokenizer) -> SpanCorruptionObjective:
    """T5's span corruption with this tokenizer's sentinels, EOS and padding."""
    sentinels = [tokenizer.backend.token_to_id(t) for t in SENTINELS]
    missing = [name for name, value in (("sentinel <extra_id_0>", sentinels[0]),
                                        ("EOS", tokenizer.eos_token_id),
                                        ("padding", tokenizer.pad_token_id)) if value is None]
    if missing:
        raise ValueError(f"train.objective=span needs a tokenizer with {', '.join(missing)} "
                         "tokens (a tokenizer trained by the run has them)")
    return SpanCorruptionObjective(sentinel_ids=[i for i in sentinels if i is not None],
                                   eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
