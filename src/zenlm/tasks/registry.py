"""The task registry: `--task` name -> `TaskSpec`.

Each task lives in one module of `zenlm.tasks` that ends with `SPEC = SomeTask()`, a
`zenlm.tasks.spec.TaskSpec`; this module lists those modules. Nothing else in the
package dispatches on a task's name: the run (`runner.py`), model folders
(`checkpoint.py`), predictions and the `finetune`/`predict`/`evaluate` commands all
ask `get_task(name)` and call the spec's methods.

Adding a task, say `translate` or `summarize`, is one new module:
    1. write `src/zenlm/tasks/translate.py` holding the task's mechanics (its reader
       if `zenlm.data.tasks` has none, encoding, collator, loss, decoding) and
       `class TranslateTask(TaskSpec[Example, Feature])` with `name = "translate"`, a
       `headline` metric (e.g. "bleu"), and `read`, `text_of`, `encode`, `collate`,
       `objective`, `build_model`, `evaluate`, `predict` (override `label_set`,
       `group_of` or `for_training` only if the defaults do not fit); settings of its
       own that a saved model needs go in `TaskInfo.options`. End it with
       `SPEC = TranslateTask()`.
    2. name the module in the import and in `_MODULES` below.
The CLI's `--task` choices, task.json and the `finetune`/`evaluate`/`predict` commands
then serve the new task with no other change.
"""

from __future__ import annotations

from zenlm.tasks import classify, ner, qa, sft, summarize, translate
from zenlm.tasks.defaults import check_defaults
from zenlm.tasks.spec import TaskSpec

_MODULES = (classify, ner, qa, sft, translate, summarize)
_SPECS: dict[str, TaskSpec] = {module.SPEC.name: module.SPEC for module in _MODULES}
if len(_SPECS) != len(_MODULES):  # two modules registered the same name
    raise RuntimeError(f"task names are not unique: {[m.SPEC.name for m in _MODULES]}")
for _spec in _SPECS.values():  # a typo in a task's defaults fails at import, by name
    check_defaults(_spec.name, _spec.defaults)


def task_names() -> tuple[str, ...]:
    """The registered task names, in registration order."""
    return tuple(_SPECS)


def get_task(name: str) -> TaskSpec:
    """The spec of task `name`.

    Raises:
        ValueError: `name` is not registered (the message lists the valid names).
    """
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(_SPECS)}") from None
