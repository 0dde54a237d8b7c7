"""Score a `zenlm finetune` output folder on a labelled file, as a `Report`."""

from __future__ import annotations

from typing import Any

from zenlm.eval.report import Report, Table


def evaluate_finetuned(task: str, model: str, data: str | None, source: str | None = None,
                       target: str | None = None, num_beams: int | None = None,
                       plot: str | None = None) -> Report:
    """Score a fine-tuned model with its own head on a labelled file.

    Args:
        task: The task it was fine-tuned for (checked against its task.json).
        model: A `zenlm finetune` output folder.
        data: The labelled file in the task's format (or None with source/target).
        source: translate/summarize: the source text file.
        target: translate/summarize: the aligned target file.
        num_beams: translate/summarize: beam width (default: the model's task.json).
        plot: classify: also draw the confusion matrix to this image path.
    """
    from zenlm.eval.metrics import plot_confusion_matrix
    from zenlm.tasks.checkpoint import backbone_of, load_task_model
    from zenlm.tasks.registry import get_task
    from zenlm.tasks.spec import pad_id

    spec = get_task(task)
    network, tokenizer, info = load_task_model(model)
    check_task(task, info.task)
    if num_beams is not None:
        info.options["num_beams"] = num_beams
    data, where = _evaluation_data(spec, data, source, target)
    examples = spec.read(data, info.labels or None)
    scores = spec.evaluate(network, tokenizer, info, examples,
                           pad_id(tokenizer, backbone_of(network).config))
    if plot:
        if "confusion_matrix" not in scores:
            raise ValueError(f"--plot draws a confusion matrix, which task {task!r} has not")
        plot_confusion_matrix(scores["confusion_matrix"], info.labels, plot)
    from zenlm.tasks.private import read_public_record

    privacy = read_public_record(model)
    if privacy is not None:  # a DP-trained model: the guarantee it was trained under
        scores = {**scores, "dp": privacy}
    settings = {"model": model, "data": where, "examples": scores.get("n")}
    return Report(task, scores, settings, tables=_per_label_tables(scores))


def check_task(task: str, trained_for: str) -> None:
    """Refuse to score a model with another task's head."""
    if trained_for != task:
        raise ValueError(f"this model was fine-tuned for --task {trained_for}, not {task}")


def _evaluation_data(spec: Any, data: str | None, source: str | None,
                     target: str | None) -> tuple[str | tuple[str, str], str]:
    """What `spec.read` takes (a file, or source and target files), and how to name it."""
    if source is None and target is None:
        if data is None:
            raise ValueError("give --data FILE (or --source F --target F for parallel text)")
        return data, data
    if data is not None or source is None or target is None or not spec.parallel:
        raise ValueError("--source and --target go together, instead of --data, and only "
                         "for translate/summarize")
    return (source, target), f"{source} + {target}"


def _per_label_tables(scores: dict[str, Any]) -> list[Table]:
    per = scores.get("per_class") or scores.get("per_type")
    if not per:
        return []
    rows = [[label, m["precision"], m["recall"], m["f1"], m["support"]]
            for label, m in per.items()]
    return [Table("Per label", ["label", "precision", "recall", "f1", "support"], rows)]
