"""Task fine-tuning: one `TaskSpec` per task, found by name in `zenlm.tasks.registry`.

Readers live in `zenlm.data.tasks`, heads in `zenlm.models.heads`, metrics in
`zenlm.eval.metrics`; each task module (classify, ner, qa, sft) joins them into its
collators, loss, post-processing and `SPEC`. `spec.py` defines `TaskSpec` and the
saved `TaskInfo`; `runner.py` trains any spec through the one Trainer.
"""
