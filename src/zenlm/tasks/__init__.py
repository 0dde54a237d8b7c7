"""Task fine-tuning pieces: collators, losses and post-processing per task.

Readers live in `zenlm.data.tasks`, heads in `zenlm.models.heads`, metrics in
`zenlm.eval.metrics`; these modules join them for classify, ner, qa and sft.
"""
