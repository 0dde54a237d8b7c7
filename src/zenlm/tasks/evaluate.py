"""Score a `zenlm finetune` output folder on a labelled file, as a `Report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zenlm.eval.calibration import DEFAULT_BINS, check_bins
from zenlm.eval.report import Report, save_figure


def evaluate_finetuned(task: str, model: str, data: str | None, source: str | None = None,
                       target: str | None = None, num_beams: int | None = None,
                       plot: str | None = None, bins: int = DEFAULT_BINS,
                       n_best: int | None = None,
                       max_answer_length: int | None = None) -> Report:
    """Score a fine-tuned model with its own head on a labelled file.

    Args:
        task: The task it was fine-tuned for (checked against its task.json).
        model: A `zenlm finetune` output folder.
        data: The labelled file in the task's format (or None with source/target).
        source: translate/summarize: the source text file.
        target: translate/summarize: the aligned target file.
        num_beams: translate/summarize: beam width (default: the model's task.json).
        plot: classify/ner: also draw the confusion matrix to this image path (PNG, SVG
            or PDF by suffix; the same heat map `--report` writes).
        bins: classify/ner/qa: equal-width bins of the calibration (ECE, reliability).
        n_best: qa: span candidates per window (default: the model's task.json).
        max_answer_length: qa: longest answer in tokens (default: the model's task.json).
    """
    from zenlm.tasks.checkpoint import backbone_of, load_task_model
    from zenlm.tasks.registry import get_task, task_names
    from zenlm.tasks.spec import pad_id

    check_bins(bins)
    spec = get_task(task)
    if bins != DEFAULT_BINS and not _calibrated(spec):
        valid = [name for name in task_names() if _calibrated(get_task(name))]
        raise ValueError(f"--bins {bins}: task {task!r} reports no calibration; --bins is "
                         f"for {', '.join(valid)}")
    network, tokenizer, info = load_task_model(model)
    check_task(task, info.task)
    if num_beams is not None:
        info.options["num_beams"] = num_beams
    _override_options(spec, info.options, n_best=n_best, max_answer_length=max_answer_length)
    data, where = _evaluation_data(spec, data, source, target)
    examples = spec.read(data, info.labels or None)
    report = spec.report(network, tokenizer, info, examples,
                         pad_id(tokenizer, backbone_of(network).config), bins=bins)
    if plot:
        _plot_confusion_matrix(report, task, plot)
    from zenlm.tasks.private import read_public_record

    privacy = read_public_record(model)
    if privacy is not None:  # a DP-trained model: the guarantee it was trained under
        report.metrics["dp"] = privacy
    report.settings = {"model": model, "data": where, "examples": report.metrics.get("n"),
                       **report.settings}
    return report


def _override_options(spec: Any, options: dict[str, Any], **given: int | None) -> None:
    """Given settings over the model's task.json options (qa's --n-best...).

    A task whose `options` does not keep a setting refuses it by name.
    """
    for name, value in given.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if name not in spec.options({name: value}):
            from zenlm.tasks.registry import get_task, task_names

            owners = [t for t in task_names() if name in get_task(t).options({name: value})]
            raise ValueError(f"{flag} applies to --task {', '.join(owners)}, not {spec.name}")
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
        options[name] = value


def _calibrated(spec: Any) -> bool:
    """Whether the task's report has calibration (it overrides `TaskSpec.report`)."""
    from zenlm.tasks.spec import TaskSpec

    return type(spec).report is not TaskSpec.report


def _plot_confusion_matrix(report: Report, task: str, path: str) -> None:
    """`--plot PATH`: the report's confusion-matrix figure, written to PATH."""
    figures = [f for f in report.figures if f.name.endswith("confusion_matrix")]
    if not figures:
        raise ValueError(f"--plot draws a confusion matrix, which task {task!r} has not")
    save_figure(figures[0], Path(path))


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
