"""Task fine-tuning: one `TaskSpec` per task, found by name in `zenlm.tasks.registry`.

Readers live in `zenlm.data.tasks`, heads in `zenlm.models.heads`, metrics in
`zenlm.eval.metrics`; each task module (classify, ner, qa, sft) joins them into its
collators, loss, post-processing and `SPEC`. `spec.py` defines `TaskSpec` and the
saved `TaskInfo`; `runner.py` trains any spec through the one Trainer; `model.py`
(`load_task`) gives a fine-tuned folder's predictions to a program.

`zenlm.tasks` sits above the Python API (`zenlm.load`): import it as
`from zenlm.tasks import load_task`, never through the `zenlm` package itself.
"""

from zenlm.tasks.model import TaskModel, load_task

__all__ = ["TaskModel", "load_task"]
