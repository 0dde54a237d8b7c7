"""The coloured text's pieces put back together are the text (WordPiece and byte-level BPE)."""

from __future__ import annotations

from zenlm.explain.tokens import special_ids, text_pieces

TEXT = "A gorgeous, witty film that never recovers.  Naïve café 東京!"


def test_pieces_rebuild_the_text(minilm_lm, smollm2_subject):
    for tokenizer in (minilm_lm.tokenizer, smollm2_subject.tokenizer):
        ids = tokenizer.encode(TEXT)
        pieces = text_pieces(tokenizer, TEXT, ids)
        assert len(pieces) == len(ids)
        ordinary = [p for p, i in zip(pieces, ids, strict=True) if i not in special_ids(tokenizer)]
        assert "".join(ordinary) == TEXT
