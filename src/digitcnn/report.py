"""The evaluation report (`digitcnn evaluate --report DIR`): test metrics per class, the confusion matrix, the
most confident mistakes, training curves, and calibration before and after temperature scaling fitted on the
validation split. A folder: report.md (terminal), report.html (browser, images inside), metrics.json, PNGs."""

import base64
import dataclasses
import html
import json
from pathlib import Path

import numpy as np

from . import plots
from .errors import ModelError
from .files import atomic_write
from .inference import predict_logits
from .metrics import (
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    most_confident_mistakes,
    negative_log_likelihood,
    per_class_metrics,
    reliability_bins,
    softmax,
)
from .pixels import IMAGE_SHAPE
from .rejection import rejects, threshold_facts, with_validation_nondigits
from .runs import WEIGHTS_FILE, model_results, read_history, save_model, save_model_file

MISTAKES_SHOWN = 24  # four rows of six: enough to see a pattern, few enough to read every one
CALIBRATION_BINS = 15  # Guo et al.'s choice; the report and the tests use the same bins
FIGURES = {
    "confusion_matrix": "confusion_matrix.png",
    "mistakes": "mistakes.png",
    "reliability": "reliability.png",
    "history": "history.png",
}


def validation_slice(x_train, y_train, split: float):
    """The last `split` of the training set, as fit() holds it out."""
    start = len(x_train) - int(len(x_train) * split)
    return x_train[start:], y_train[start:]


def build_report(model, test, validation, out, history_rows=None) -> dict:
    """Computes every number, draws every figure into `out`, writes metrics.json, report.md and report.html,
    and returns the metrics. `test` and `validation` are (images, labels); validation may be None (no split),
    in which case no temperature is fitted. A model with the "not a digit" output is fitted on held-in non-digits
    beside the validation digits, and its threshold is chosen again at the fitted temperature."""
    out = Path(out)
    x_test, y_test = test
    labels = np.asarray(y_test, dtype=np.int64)
    names = list(model.config.class_names)
    logits = predict_logits(model, x_test)  # the one pass over the test set; every number below comes from it
    loss = negative_log_likelihood(logits, labels, from_logits=True)
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    confusion = confusion_matrix(labels, logits.argmax(axis=1), len(names))
    per_class = per_class_metrics(confusion)

    calibration: dict = {"bins": CALIBRATION_BINS, "temperature_before": float(model.config.temperature)}
    test_before = softmax(logits, 1.0)
    calibration["test_ece_before"] = expected_calibration_error(test_before, labels, CALIBRATION_BINS)
    temperature = None
    if validation is not None and len(validation[1]):
        if rejects(model.config):  # fitted off the digits too: held-in non-digits join them
            validation = with_validation_nondigits(*validation, model.config.num_classes)
        validation_logits = predict_logits(model, validation[0])
        validation_labels = np.asarray(validation[1], dtype=np.int64)
        temperature = fit_temperature(validation_logits, validation_labels)
        calibration |= {
            "validation_examples": len(validation_labels),
            "temperature": temperature,
            "validation_ece_before": expected_calibration_error(
                softmax(validation_logits), validation_labels, CALIBRATION_BINS
            ),
            "validation_ece_after": expected_calibration_error(
                softmax(validation_logits, temperature), validation_labels, CALIBRATION_BINS
            ),
        }
        if rejects(model.config):  # the threshold follows the temperature
            calibration |= threshold_facts(validation_logits, validation_labels, temperature)
    test_after = softmax(logits, temperature or 1.0)
    calibration["test_ece_after"] = expected_calibration_error(test_after, labels, CALIBRATION_BINS)

    figures = dict(FIGURES)
    plots.plot_confusion_matrix(confusion, names, out / figures["confusion_matrix"])
    wrong = most_confident_mistakes(test_after, labels, MISTAKES_SHOWN)
    images = np.asarray(x_test).reshape(len(labels), *IMAGE_SHAPE)
    plots.plot_mistakes(
        images[wrong],
        labels[wrong],
        test_after[wrong].argmax(axis=1),
        test_after[wrong].max(axis=1),
        names,
        out / figures["mistakes"],
    )
    plots.plot_reliability(
        reliability_bins(test_before, labels, CALIBRATION_BINS),
        reliability_bins(test_after, labels, CALIBRATION_BINS),
        calibration["test_ece_before"],
        calibration["test_ece_after"],
        out / figures["reliability"],
        temperature=temperature,
    )
    if history_rows:
        plots.plot_history(history_rows, out / figures["history"])
    else:
        del figures["history"]

    metrics = {
        "model": model.config.arch,
        "dataset": model.config.dataset,
        "class_names": names,
        "test_examples": len(labels),
        "test_loss": loss,
        "test_accuracy": accuracy,
        "per_class": per_class.to_dict(),
        "confusion_matrix": confusion.tolist(),
        "calibration": calibration,
        "most_confident_mistakes": [
            {
                "index": int(index),
                "actual": int(labels[index]),
                "predicted": int(test_after[index].argmax()),
                "confidence": float(test_after[index].max()),
            }
            for index in wrong
        ],
        "history": history_rows or [],
        "figures": figures,
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write(out / "report.md", markdown(metrics))
    atomic_write(out / "report.html", self_contained_html(metrics, out))
    return metrics


def per_class_rows(metrics: dict) -> list[list[str]]:
    scores = metrics["per_class"]
    rows = [
        [
            name,
            f"{scores['precision'][index]:.4f}",
            f"{scores['recall'][index]:.4f}",
            f"{scores['f1'][index]:.4f}",
            str(scores["support"][index]),
        ]
        for index, name in enumerate(metrics["class_names"])
    ]
    rows.append(
        [
            "macro mean",
            f"{scores['macro_precision']:.4f}",
            f"{scores['macro_recall']:.4f}",
            f"{scores['macro_f1']:.4f}",
            str(sum(scores["support"])),
        ]
    )
    return rows


def summary_lines(metrics: dict) -> list[str]:
    calibration = metrics["calibration"]
    lines = [
        f"test loss: {metrics['test_loss']:.4f}",
        f"test accuracy: {metrics['test_accuracy']:.4f} ({metrics['test_examples']:,} examples)",
    ]
    if "temperature" in calibration:
        lines.append(
            f"temperature {calibration['temperature']:.3f} fitted on {calibration['validation_examples']:,} "
            f"validation examples: validation ECE {calibration['validation_ece_before']:.2%} -> "
            f"{calibration['validation_ece_after']:.2%}, test ECE {calibration['test_ece_before']:.2%} -> "
            f"{calibration['test_ece_after']:.2%}"
        )
    else:
        lines.append(f"test ECE {calibration['test_ece_before']:.2%} (no validation split: no temperature fitted)")
    if "not_a_digit_threshold" in calibration:
        lines.append(
            f'"not a digit" from probability {calibration["not_a_digit_threshold"]:.3f}: it flags '
            f"{calibration['validation_digits_flagged']:.2%} of validation digits and "
            f"{calibration['validation_nondigits_flagged']:.2%} of validation non-digits"
        )
    return lines


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table whose columns are padded, so it reads as well in a terminal as rendered."""
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]

    def line(cells):
        return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (width + 2) for width in widths) + "|", *map(line, rows)])


def markdown(metrics: dict) -> str:
    names = metrics["class_names"]
    figures = metrics["figures"]
    confusion_rows = [[name, *map(str, row)] for name, row in zip(names, metrics["confusion_matrix"], strict=True)]
    parts = [
        f"# Evaluation: {metrics['model']} on {metrics['dataset']}",
        "\n".join(f"- {line}" for line in summary_lines(metrics)),
        "## Per class",
        text_table(["class", "precision", "recall", "F1", "support"], per_class_rows(metrics)),
        "## Confusion matrix (rows: actual, columns: predicted)",
        text_table(["actual \\ predicted", *names], confusion_rows),
        f"![confusion matrix]({figures['confusion_matrix']})",
        "## Most confident mistakes",
        f"![most confident mistakes]({figures['mistakes']})",
        "## Calibration (reliability on the test set, before and after temperature scaling)",
        f"![reliability diagram]({figures['reliability']})",
    ]
    if "history" in figures:
        parts += ["## Training curves", f"![training curves]({figures['history']})"]
    return "\n\n".join(parts) + "\n"


def self_contained_html(metrics: dict, folder: Path) -> str:
    """The same report as one HTML file with its figures inside, so it can be mailed or opened anywhere."""

    def table(header, rows):
        head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def figure(key, caption):
        if key not in metrics["figures"]:
            return ""
        data = base64.b64encode((folder / metrics["figures"][key]).read_bytes()).decode()
        return f'<h2>{caption}</h2><img alt="{caption}" src="data:image/png;base64,{data}">'

    names = metrics["class_names"]
    confusion_rows = [[name, *row] for name, row in zip(names, metrics["confusion_matrix"], strict=True)]
    title = html.escape(f"Evaluation: {metrics['model']} on {metrics['dataset']}")
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(metrics))
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:right}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body><h1>{title}</h1><ul>{summary}</ul>"
        f"<h2>Per class</h2>{table(['class', 'precision', 'recall', 'F1', 'support'], per_class_rows(metrics))}"
        f"<h2>Confusion matrix (rows: actual, columns: predicted)</h2>{table(['', *names], confusion_rows)}"
        + figure("confusion_matrix", "Confusion matrix")
        + figure("mistakes", "Most confident mistakes")
        + figure("reliability", "Calibration")
        + figure("history", "Training curves")
        + "</body></html>\n"
    )


def store_temperature(model, source, temperature: float, not_a_digit_threshold: float | None = None) -> str:
    """Saves the fitted temperature (and the "not a digit" threshold chosen at it) with the model, so `predict`
    (CLI, API, server) uses them from now on. Returns where they went. Exported .onnx files carry the ones they
    were exported with."""
    path = Path(source)
    model.config = dataclasses.replace(model.config, temperature=float(temperature))
    if not_a_digit_threshold is not None:
        model.config = dataclasses.replace(model.config, not_a_digit_threshold=float(not_a_digit_threshold))
    if path.is_dir():
        save_model(model, path)
        return str(path / WEIGHTS_FILE)
    if path.suffix == ".safetensors":
        save_model_file(model, path, model_results(path))
        return str(path)
    raise ModelError(
        f"{path}: the temperature can be stored in a run folder or .safetensors file only; "
        "calibrate the run, then export it again"
    )


def history_of(source) -> list[dict]:
    return read_history(source) if source is not None and Path(source).is_dir() else []
