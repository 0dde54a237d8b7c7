"""The task registry: `--task` name -> `TaskSpec`.

Each task lives in one module of `zenlm.tasks` that ends with `SPEC = SomeTask()`, a
`zenlm.tasks.spec.TaskSpec`; this module lists those modules. Nothing else in the
package dispatches on a task's name: the run (`runner.py`), model folders
(`checkpoint.py`), predictions and the `finetune`/`predict`/`evaluate` commands all
ask `get_task(name)` and call the spec's methods.

Adding a task, say `translate` (or `summarize`), is one new module:
    1. write `src/zenlm/tasks/translate.py` with `class TranslateTask(TaskSpec)`
       (`name = "translate"`, its `headline` metric; `read`, `text_of`, `encode`,
       `collate`, `objective`, `build_model`, `evaluate`, `predict`; override
       `label_set`, `group_of` or `for_training` only if the defaults do not fit)
       and `SPEC = TranslateTask()` at its end;
    2. add `translate` to the import and to `_MODULES` below.
The CLI's `--task` choices, the saved task.json and its reading follow from the registry.
"""

from __future__ import annotations

from zenlm.tasks import classify, ner, qa, sft
from zenlm.tasks.spec import TaskSpec

_MODULES = (classify, ner, qa, sft)
_SPECS: dict[str, TaskSpec] = {module.SPEC.name: module.SPEC for module in _MODULES}


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
