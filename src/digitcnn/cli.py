"""The `digitcnn` command: a thin surface over the package; every command calls the same functions as the API."""

import argparse
import csv
import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path

from . import distributed
from .errors import DigitcnnError
from .train import CHOICES, RECIPES, TrainConfig

EXIT_USER_ERROR = 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {value}")
    return value


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="RUN_DIR", help="a run folder or model file (default: the shipped model)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=("mnist", "fashion-mnist"), help="a built-in data set (default: mnist)")
    source.add_argument(
        "--data", metavar="PATH", help="your own data: an .npz with keras' keys or a folder of IDX files"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digitcnn", description="Handwritten-digit recognition on PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.ArgumentDefaultsHelpFormatter
    recipes = "\n".join(
        f"  {arch}: {values or 'the tutorial recipe (the defaults above)'}" for arch, values in RECIPES.items()
    )

    train = commands.add_parser(
        "train",
        help="train a model into a run folder",
        formatter_class=formatter,
        epilog=f"Each architecture's recipe sets the defaults it differs in:\n{recipes}",
    )
    from .models import ACTIVATIONS, ARCHITECTURES

    def architectures(text: str) -> list[str]:
        names = text.split(",")
        unknown = [name for name in names if name not in ARCHITECTURES]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown[0]!r}; choose from {', '.join(sorted(ARCHITECTURES))}")
        return names

    train.add_argument("--arch", type=architectures, default=["fast"], metavar="|".join(sorted(ARCHITECTURES)),
                       help="architecture; with --ensemble, a comma-separated list for the members")  # fmt: skip
    train.add_argument("--ensemble", type=positive_int, metavar="N", help="train N members (seeds seed..seed+N-1)")
    train.add_argument("--device", help="force a device (cpu, cuda, cuda:1, mps); default: the best available")
    train.add_argument("--activation", choices=ACTIVATIONS, default="relu", help="activation after each layer")
    for field in dataclasses.fields(TrainConfig):
        kind = {"epochs": positive_int, "batch_size": positive_int, "validation_split": fraction}.get(
            field.name, field.type
        )
        train.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=kind,
            choices=CHOICES.get(field.name),
            default=None,
            help=f"{field.metadata['help']} (recipe default)",
        )
    train.add_argument("--limit", type=positive_int, help="use only the first N training and N test images")
    add_data_arguments(train)
    train.add_argument("--out", metavar="DIR", help="run folder (default: runs/ARCH-TIMESTAMP)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bar")

    ensemble = commands.add_parser(
        "ensemble", help="combine trained models into one ensemble run folder", formatter_class=formatter
    )
    ensemble.add_argument("models", nargs="+", metavar="MODEL",
                          help="run folders or model files; an ensemble counts as its members")  # fmt: skip
    ensemble.add_argument("--out", metavar="DIR", required=True, help="the new run folder")

    evaluate = commands.add_parser(
        "evaluate", help="test loss and accuracy of a trained model", formatter_class=formatter
    )
    add_model_argument(evaluate)
    add_data_arguments(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--report", metavar="DIR", help="write report.md, report.html, metrics.json and figures to DIR; fits the "
        "softmax temperature on the validation split and stores it with a --model run folder or .safetensors file"
    )  # fmt: skip

    explain = commands.add_parser(
        "explain", help="which pixels drove a prediction (integrated gradients)", formatter_class=formatter
    )
    add_model_argument(explain)
    explain.add_argument("image", metavar="IMAGE", help="an image file, read as `predict` reads it")
    explain.add_argument("--out", metavar="FILE.png", required=True, help="where to write the figure")
    explain.add_argument("--label", type=int, help="explain this class instead of the predicted one")

    predict = commands.add_parser("predict", help="read digits from image files", formatter_class=formatter)
    add_model_argument(predict)
    predict.add_argument("files", nargs="+", metavar="FILE", help="image files, folders of them, or glob patterns")
    output = predict.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per file per line")
    output.add_argument("--csv", action="store_true", help="CSV with a header row")
    predict.add_argument("--show", metavar="OUT.png", help="draw each image beside what the model saw")

    serve = commands.add_parser("serve", help="the draw-a-digit page and the JSON API", formatter_class=formatter)
    add_model_argument(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=positive_int, default=1,
                       help="processes that read images, each with its own copy of the model (1: threads of "
                       "the server's process); up to the number of cores")  # fmt: skip

    show = commands.add_parser(
        "show", help="ten test digits with actual and predicted labels", formatter_class=formatter
    )
    add_model_argument(show)
    add_data_arguments(show)
    show.add_argument("--out", metavar="FILE.png", required=True, help="where to write the figure")

    export = commands.add_parser(
        "export", help="write a model for another runtime, checked against PyTorch", formatter_class=formatter
    )
    add_model_argument(export)
    export.add_argument("--format", choices=("onnx",), default="onnx", help="file format")
    export.add_argument("--out", metavar="FILE.onnx", required=True, help="where to write the model")
    add_data_arguments(export)
    export.add_argument("--json", action="store_true", help="print the validation report as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    handler = {"train": run_train, "evaluate": run_evaluate, "predict": run_predict, "show": run_show,
               "serve": run_serve, "export": run_export, "explain": run_explain,
               "ensemble": run_ensemble}  # fmt: skip
    try:
        return handler[arguments.command](arguments) or 0
    except (DigitcnnError, ValueError) as error:
        print(f"digitcnn: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("digitcnn: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()


def run_train(arguments) -> int:
    from .api import train_ensemble, train_run

    overrides = {field.name: getattr(arguments, field.name) for field in dataclasses.fields(TrainConfig)}
    options = {"activation": arguments.activation, "dataset": arguments.dataset, "data_path": arguments.data,
               "limit": arguments.limit, "device": arguments.device, **overrides}  # fmt: skip
    out = arguments.out or f"runs/{'-'.join(arguments.arch)}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    verbose = not arguments.quiet
    if arguments.ensemble:
        options = {key: value for key, value in options.items() if value is not None and key != "seed"}
        result = train_ensemble(out, arguments.ensemble, arguments.arch, seed=arguments.seed,
                                resume=arguments.resume, verbose=verbose, **options)  # fmt: skip
    elif len(arguments.arch) > 1:
        raise DigitcnnError("several architectures make sense only with --ensemble N")
    else:
        result = train_run(out, arch=arguments.arch[0], resume=arguments.resume, verbose=verbose, **options)
    if distributed.is_main():
        if "member_test_accuracies" in result:
            members = ", ".join(f"{accuracy:.4f}" for accuracy in result["member_test_accuracies"])
            print(f"member test accuracies: {members}")
        print(f"test accuracy: {result['test_accuracy']:.4f}")
        print(f"saved the run to {out} ({result['train_seconds']:.0f} s of training)", file=sys.stderr)
    return 0


def run_ensemble(arguments) -> int:
    from .api import combine_ensemble

    result = combine_ensemble(arguments.out, arguments.models)
    if result.get("validation_accuracy") is not None:
        print(f"validation accuracy: {result['validation_accuracy']:.4f}")
    print(f"test accuracy: {result['test_accuracy']:.4f}")
    print(f"saved the ensemble to {arguments.out}", file=sys.stderr)
    return 0


def run_evaluate(arguments) -> int:
    from .api import load_split
    from .inference import evaluate, load_model
    from .report import training_data_of

    model = load_model(arguments.model)
    trained_dataset, trained_path = training_data_of(arguments.model)
    dataset, data_path = arguments.dataset, arguments.data
    if dataset is None and data_path is None:  # by default, the test set of the data the model was trained on
        dataset, data_path = trained_dataset or model.config.dataset, trained_path
    (x_train, y_train), (x_test, y_test) = load_split(dataset, data_path)
    if arguments.report:
        if data_path is not None:
            same_data = trained_path is not None and Path(data_path).resolve() == Path(trained_path).resolve()
        else:
            same_data = trained_path is None and dataset == (trained_dataset or model.config.dataset)
        return write_report(arguments, model, (x_train, y_train), (x_test, y_test), same_data)
    loss, accuracy = evaluate(model, x_test, y_test)
    if arguments.json:
        print(json.dumps({"test_loss": loss, "test_accuracy": accuracy, "examples": len(y_test)}))
    else:
        print(f"test loss: {loss:.4f}\ntest accuracy: {accuracy:.4f}")
    return 0


def write_report(arguments, model, train, test, same_data: bool) -> int:
    from . import report

    split, limit = report.validation_split_of(arguments.model)
    x_train, y_train = (train[0][:limit], train[1][:limit]) if limit else train
    # The validation split is the model's own only on the data it was trained on; elsewhere none is fitted.
    validation = report.validation_slice(x_train, y_train, split) if same_data and split > 0 else None
    metrics = report.build_report(model, test, validation, arguments.report, report.history_of(arguments.model))
    temperature = metrics["calibration"].get("temperature")
    stored = None
    if temperature is not None and arguments.model is not None and not arguments.model.endswith(".onnx"):
        stored = report.store_temperature(model, arguments.model, temperature)
    if arguments.json:
        print(json.dumps({key: metrics[key] for key in ("test_loss", "test_accuracy", "test_examples", "calibration")}))
    else:
        print("\n".join(report.summary_lines(metrics)))
        print(report.text_table(["class", "precision", "recall", "F1", "support"], report.per_class_rows(metrics)))
    where = f"; temperature stored in {stored}" if stored else ""
    print(f"wrote the report to {arguments.report}/report.md (and report.html, metrics.json){where}", file=sys.stderr)
    return 0


def run_predict(arguments) -> int:
    import torch

    from .inference import load_model
    from .recognize import expand_paths, read_images

    model = load_model(arguments.model)
    paths = expand_paths(arguments.files)
    # Each image's candidates are a small batch: one thread reads a photo of a number in ~90 ms where two took
    # ~470 ms on two busy cores (benchmarks/numbers.py --timings-only), as the server found for single digits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        readings = read_images(model, paths, keep_originals=bool(arguments.show))
    finally:
        torch.set_num_threads(threads)  # `main` may run inside someone else's process
    if arguments.json:
        for reading in readings:
            print(json.dumps(reading.as_dict()))
    elif arguments.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(  # the number read comes last, so the columns older readers know keep their places
            ["file", "label", "confidence", "unsure", "error"] + [f"p{i}" for i in range(model.config.num_classes)]
            + ["text"]
        )
        for reading in readings:
            writer.writerow(
                [reading.file, reading.label, reading.confidence, reading.unsure, reading.error or ""]
                + (reading.probabilities or [""] * model.config.num_classes) + [reading.text]
            )
    else:
        for reading in readings:
            print(describe(reading))
    if arguments.show:
        from .plots import plot_preprocessed

        plot_preprocessed(
            [r.original for r in readings],
            [r.input for r in readings],
            [r.class_name if r.error is None else r.error for r in readings],
            [r.confidence for r in readings],
            arguments.show,
        )
    return 1 if any(reading.error and reading.error != "no digit found" for reading in readings) else 0


def describe(reading) -> str:
    if reading.error:
        return f"{reading.file}: {reading.error}"
    if len(reading.digits) > 1:  # a number: its text on one line, then how sure its least sure digit is
        flag = "  (unsure)" if reading.unsure else ""
        return f"{reading.file}: {reading.text.replace(chr(10), ' ')} ({len(reading.digits)} digits; least " \
               f"confidence {reading.confidence:.3f}){flag}"  # fmt: skip
    top = ", ".join(f"{entry['label']} {entry['probability']:.3f}" for entry in reading.top3)
    flag = "  (unsure)" if reading.unsure else ""
    return f"{reading.file}: {reading.class_name} (confidence {reading.confidence:.3f}; top-3 {top}){flag}"


def run_show(arguments) -> int:
    from .api import load_split
    from .inference import load_model, predict
    from .plots import plot_predictions

    model = load_model(arguments.model)
    _, (x_test, y_test) = load_split(arguments.dataset or model.config.dataset, arguments.data)
    started = time.perf_counter()
    predicted = predict(model, x_test[:10]).argmax(axis=1)
    plot_predictions(x_test[:10], y_test[:10], predicted, arguments.out, class_names=model.config.class_names)
    print(f"wrote {arguments.out} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


def run_export(arguments) -> int:
    try:
        from .export import export_onnx
    except ImportError as missing:
        raise DigitcnnError(f"export needs the export extra ({missing.name} is missing): "
                            "pip install 'digitcnn[export]'") from None  # fmt: skip
    from .api import load_split
    from .export import VALIDATION_DIGITS
    from .inference import load_model

    model = load_model(arguments.model)
    _, (x_test, _) = load_split(arguments.dataset or model.config.dataset, arguments.data)
    report = export_onnx(model, arguments.out, images=x_test[:VALIDATION_DIGITS])
    if arguments.json:
        print(json.dumps(report))
    else:
        print(f"wrote {report['path']} (ONNX opset {report['opset']})")
        print(f"checked against PyTorch on {report['digits']} test digits: max abs logit difference "
              f"{report['max_abs_difference']:.2e} (tolerance {report['tolerance']:g}), "
              f"labels identical: {'yes' if report['labels_identical'] else 'no'}")  # fmt: skip
    return 0


def run_explain(arguments) -> int:
    from .explain import integrated_gradients
    from .inference import load_model, predict
    from .plots import plot_saliency
    from .preprocess import load_image, preprocess

    model = load_model(arguments.model)
    if not hasattr(model, "parameters"):
        raise DigitcnnError("explain needs the model's gradients: pass its run folder, not an .onnx file")
    names = model.config.class_names
    if arguments.label is not None and not 0 <= arguments.label < len(names):
        raise DigitcnnError(f"--label must be a class index in [0, {len(names)}), not {arguments.label}")
    pixels = preprocess(load_image(arguments.image))
    probabilities = predict(model, pixels)
    target = int(probabilities.argmax()) if arguments.label is None else arguments.label
    saliency = integrated_gradients(model, pixels, target=target)
    title = f"{arguments.image}: {names[target]} ({probabilities[target]:.1%})"
    plot_saliency(pixels, saliency, arguments.out, title=title)
    print(f"{names[target]} ({probabilities[target]:.1%}); wrote {arguments.out}")
    return 0


def run_serve(arguments) -> int:
    try:
        from .serve import serve
    except ImportError as missing:
        hint = "pip install 'digitcnn[web]'"
        raise DigitcnnError(f"serving needs the web extra ({missing.name} is missing): {hint}") from None
    serve(arguments.model, host=arguments.host, port=arguments.port, workers=arguments.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
