"""Corpora: readers, cleaning, PII scrubbing, dedupe, token shards, LM objectives' data."""

from zenlm.data.clean import clean_text
from zenlm.data.dedupe import ExactDeduper, MinHashDeduper
from zenlm.data.pii import find_pii, luhn_valid, scrub_pii
from zenlm.data.prepare import PrepareOptions, PrepareReport, prepare_corpus
from zenlm.data.readers import ReadStats, expand_paths, read_documents
from zenlm.data.shards import BlockSampler, ShardSet, build_shards, token_dtype

__all__ = [
    "BlockSampler",
    "ExactDeduper",
    "MinHashDeduper",
    "PrepareOptions",
    "PrepareReport",
    "ReadStats",
    "ShardSet",
    "build_shards",
    "clean_text",
    "expand_paths",
    "find_pii",
    "luhn_valid",
    "prepare_corpus",
    "read_documents",
    "scrub_pii",
    "token_dtype",
]
