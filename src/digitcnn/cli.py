"""The `digitcnn` command: a thin surface over the package; every command calls the same functions as the API."""

import argparse
import csv
import dataclasses
import datetime
import json
import sys
import time
import typing
from pathlib import Path

from . import distributed
from .config import DataConfig, FinetuneConfig, TrainConfig, choices, parse_knob, recipe_defaults
from .errors import DigitcnnError

EXIT_USER_ERROR = 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def knob_type(config_class: type, name: str):
    """argparse's type for a config field: the config's own conversion and check, reported by the parser."""

    def parse(text: str):
        try:
            return parse_knob(config_class, name, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = name
    return parse


def add_knob(parser: argparse.ArgumentParser, config_class: type, name: str, default: str | None) -> None:
    """--NAME for a config field; left out, the attribute is absent and the config's (or recipe's) default holds."""
    field = next(field for field in dataclasses.fields(config_class) if field.name == name)
    shown = "" if default is None else f" (default: {default})"
    if typing.get_type_hints(config_class)[name] is bool:  # a switch: given, it turns the knob on
        parser.add_argument(f"--{name.replace('_', '-')}", action="store_const", const=True, default=argparse.SUPPRESS,
                            help=field.metadata["help"] + shown)  # fmt: skip
        return
    parser.add_argument(
        f"--{name.replace('_', '-')}",
        type=knob_type(config_class, name),
        default=argparse.SUPPRESS,
        choices=choices(config_class, name),
        help=field.metadata["help"] + shown,
    )


def given_knobs(arguments, config_class: type) -> dict:
    """The config fields given on the command line."""
    names = [field.name for field in dataclasses.fields(config_class)]
    return {name: getattr(arguments, name) for name in names if hasattr(arguments, name)}


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="RUN_DIR", help="a run folder or model file (default: the shipped model)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", choices=choices(DataConfig, "dataset"), help=f"a built-in data set (default: {DataConfig.dataset})"
    )
    source.add_argument(
        "--data", metavar="PATH", help=DataConfig.__dataclass_fields__["path"].metadata["help"]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digitcnn", description="Handwritten-digit recognition on PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.ArgumentDefaultsHelpFormatter

    train = commands.add_parser(
        "train",
        help="train a model into a run folder",
        formatter_class=formatter,
        epilog="Training options left out take the architecture's recipe: the defaults shown per architecture.",
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
        add_knob(train, TrainConfig, field.name, recipe_defaults(field.name))
    add_knob(train, DataConfig, "validation_split", str(DataConfig.validation_split))
    add_knob(train, DataConfig, "limit", None)
    add_data_arguments(train)
    train.add_argument("--out", metavar="DIR", help="run folder (default: runs/ARCH-TIMESTAMP)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bar")

    finetune = commands.add_parser("finetune", help="teach a trained model a person's own samples (--data DIR)",
                                   formatter_class=formatter)  # fmt: skip
    add_model_argument(finetune)
    finetune.add_argument("--data", metavar="DIR", required=True, help="folders 0/ ... 9/ of images, or a labels.csv")
    for name in (field.name for field in dataclasses.fields(FinetuneConfig) if field.name not in ("base", "samples")):
        add_knob(finetune, FinetuneConfig, name, str(getattr(FinetuneConfig, name)))
    finetune.add_argument("--out", metavar="DIR", help="run folder (default: runs/finetune-TIMESTAMP)")
    finetune.add_argument("--quiet", action="store_true", help="no progress lines")

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
    explain.add_argument("--layers", action="store_true",
                         help="draw the page's look-inside view: each convolution block's and pooling step's "
                         "feature maps, the class scores and the saliency")  # fmt: skip

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
    serve.add_argument("--samples", metavar="DIR", help="also keep the samples taught on the page in DIR (off)")

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
               "ensemble": run_ensemble, "finetune": run_finetune}  # fmt: skip
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
    from .ensemble import train_ensemble
    from .jobs import train_run

    overrides = given_knobs(arguments, TrainConfig)
    data_options = {"dataset": arguments.dataset, "path": arguments.data, **given_knobs(arguments, DataConfig)}
    data_options = {key: value for key, value in data_options.items() if value is not None}
    # Left out entirely, --resume can tell that no data option was given.
    data = DataConfig(**data_options) if data_options else None
    options = {"activation": arguments.activation, "device": arguments.device, **overrides}
    out = arguments.out or f"runs/{'-'.join(arguments.arch)}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    verbose = not arguments.quiet
    if arguments.ensemble:
        options = {key: value for key, value in options.items() if value is not None and key != "seed"}
        result = train_ensemble(out, arguments.ensemble, arguments.arch, data=data, seed=overrides.get("seed"),
                                resume=arguments.resume, verbose=verbose, **options)  # fmt: skip
    elif len(arguments.arch) > 1:
        raise DigitcnnError("several architectures make sense only with --ensemble N")
    else:
        result = train_run(out, arch=arguments.arch[0], data=data, resume=arguments.resume, verbose=verbose, **options)
    if distributed.is_main():
        if "member_test_accuracies" in result:
            members = ", ".join(f"{accuracy:.4f}" for accuracy in result["member_test_accuracies"])
            print(f"member test accuracies: {members}")
        print(f"test accuracy: {result['test_accuracy']:.4f}")
        print(f"saved the run to {out} ({result['train_seconds']:.0f} s of training)", file=sys.stderr)
    return 0


def run_finetune(arguments) -> int:
    from .finetune import describe_results, finetune_run

    config = FinetuneConfig(base=arguments.model, samples=arguments.data, **given_knobs(arguments, FinetuneConfig))
    out = arguments.out or f"runs/finetune-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    print("\n".join(describe_results(finetune_run(out, config, verbose=not arguments.quiet), out)))
    return 0


def run_ensemble(arguments) -> int:
    from .ensemble import combine_ensemble

    result = combine_ensemble(arguments.out, arguments.models)
    if result.get("validation_accuracy") is not None:
        print(f"validation accuracy: {result['validation_accuracy']:.4f}")
    print(f"test accuracy: {result['test_accuracy']:.4f}")
    print(f"saved the ensemble to {arguments.out}", file=sys.stderr)
    return 0


def run_evaluate(arguments) -> int:
    from .config import trained_on
    from .inference import evaluate, load_model
    from .jobs import load_split

    model = load_model(arguments.model)
    trained = trained_on(arguments.model, model.config)
    if arguments.dataset is None and arguments.data is None:  # by default, all the test set the model's data has
        data = DataConfig(dataset=trained.dataset, path=trained.path)
    else:
        data = DataConfig(dataset=arguments.dataset or DataConfig.dataset, path=arguments.data)
    (x_train, y_train), (x_test, y_test) = load_split(data)
    if arguments.report:
        if data.path is not None:
            same_data = trained.path is not None and Path(data.path).resolve() == Path(trained.path).resolve()
        else:
            same_data = trained.path is None and data.dataset == trained.dataset
        return write_report(arguments, model, trained, (x_train, y_train), (x_test, y_test), same_data)
    loss, accuracy = evaluate(model, x_test, y_test)
    if arguments.json:
        print(json.dumps({"test_loss": loss, "test_accuracy": accuracy, "examples": len(y_test)}))
    else:
        print(f"test loss: {loss:.4f}\ntest accuracy: {accuracy:.4f}")
    return 0


def write_report(arguments, model, trained: DataConfig, train, test, same_data: bool) -> int:
    from . import report

    split, limit = trained.validation_split, trained.limit
    x_train, y_train = (train[0][:limit], train[1][:limit]) if limit else train
    # The validation split is the model's own only on the data it was trained on; elsewhere none is fitted.
    validation = report.validation_slice(x_train, y_train, split) if same_data and split > 0 else None
    metrics = report.build_report(model, test, validation, arguments.report, report.history_of(arguments.model))
    temperature = metrics["calibration"].get("temperature")
    stored = None
    if temperature is not None and arguments.model is not None and not arguments.model.endswith(".onnx"):
        threshold = metrics["calibration"].get("not_a_digit_threshold")  # a rejecting model's, chosen at that T
        stored = report.store_temperature(model, arguments.model, temperature, threshold)
    if arguments.json:
        print(json.dumps({key: metrics[key] for key in ("test_loss", "test_accuracy", "test_examples", "calibration")}))
    else:
        print("\n".join(report.summary_lines(metrics)))
        print(report.text_table(["class", "precision", "recall", "F1", "support"], report.per_class_rows(metrics)))
    where = f"; temperature stored in {stored}" if stored else ""
    print(f"wrote the report to {arguments.report}/report.md (and report.html, metrics.json){where}", file=sys.stderr)
    return 0


def run_predict(arguments) -> int:
    from .inference import load_model
    from .recognize import csv_rows, describe, expand_paths, is_failure, read_images

    model = load_model(arguments.model)
    paths = expand_paths(arguments.files)
    readings = read_images(model, paths, keep_originals=bool(arguments.show))
    if arguments.json:
        for reading in readings:
            print(json.dumps(reading.as_dict()))
    elif arguments.csv:
        csv.writer(sys.stdout, lineterminator="\n").writerows(csv_rows(readings, model.config))
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
    return 1 if any(is_failure(reading) for reading in readings) else 0


def run_show(arguments) -> int:
    from .inference import load_model, predict
    from .jobs import load_split
    from .plots import plot_predictions

    model = load_model(arguments.model)
    _, (x_test, y_test) = load_split(DataConfig(dataset=arguments.dataset or model.config.dataset, path=arguments.data))
    started = time.perf_counter()
    predicted = predict(model, x_test[:10]).argmax(axis=1)
    plot_predictions(x_test[:10], y_test[:10], predicted, arguments.out, class_names=model.config.class_names)
    print(f"wrote {arguments.out} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


def run_export(arguments) -> int:
    from .inference import load_model
    from .jobs import load_split
    from .onnx_model import VALIDATION_DIGITS, export_onnx  # it names the package to install if onnx is missing

    model = load_model(arguments.model)
    _, (x_test, _) = load_split(DataConfig(dataset=arguments.dataset or model.config.dataset, path=arguments.data))
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
    from .models import is_torch_model
    from .plots import plot_saliency
    from .preprocess import load_image, preprocess

    model = load_model(arguments.model)
    if not is_torch_model(model):
        raise DigitcnnError("explain needs the model's gradients: pass its run folder, not an .onnx file")
    names = model.config.class_names
    if arguments.label is not None and not 0 <= arguments.label < len(names):
        raise DigitcnnError(f"--label must be a class index in [0, {len(names)}), not {arguments.label}")
    pixels = preprocess(load_image(arguments.image))
    probabilities = predict(model, pixels)
    target = int(probabilities.argmax()) if arguments.label is None else arguments.label
    title = f"{arguments.image}: {names[target]} ({probabilities[target]:.1%})"
    if arguments.layers:  # the page's look-inside view, which holds the saliency too
        from .inside import look_inside
        from .plots import plot_inside

        plot_inside(look_inside(model, pixels, target=target), arguments.out, title=f"{title}, {model.config.arch}")
    else:
        plot_saliency(pixels, integrated_gradients(model, pixels, target=target), arguments.out, title=title)
    print(f"{names[target]} ({probabilities[target]:.1%}); wrote {arguments.out}")
    return 0


def run_serve(arguments) -> int:
    try:
        from .serve import serve
    except ImportError as missing:
        hint = "pip install 'digitcnn[web]'"
        raise DigitcnnError(f"serving needs the web extra ({missing.name} is missing): {hint}") from None
    serve(arguments.model, arguments.host, arguments.port, arguments.workers, arguments.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
