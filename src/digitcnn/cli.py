"""The `digitcnn` command: a thin surface over the package; every command calls the same functions as the API."""

import argparse
import dataclasses
import sys
import textwrap

from . import commands
from .config import (
    DATASET_DEFAULT_ARCHS,
    DEFAULT_ARCH,
    DataConfig,
    FinetuneConfig,
    TrainConfig,
    choices,
    parse_knob,
    recipe_defaults,
    type_hints,
)
from .errors import DigitcnnError
from .model_config import ACTIVATIONS, ARCHITECTURE_NAMES

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
    if type_hints(config_class)[name] is bool:  # a switch: given, it turns the knob on
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            action="store_const",
            const=True,
            default=argparse.SUPPRESS,
            help=field.metadata["help"] + shown,
        )
        return
    parser.add_argument(
        f"--{name.replace('_', '-')}",
        type=knob_type(config_class, name),
        default=argparse.SUPPRESS,
        choices=choices(config_class, name),
        help=field.metadata["help"] + shown,
    )


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="RUN_DIR", help="a run folder or model file (default: the shipped model)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", choices=choices(DataConfig, "dataset"), help=f"a built-in data set (default: {DataConfig.dataset})"
    )
    source.add_argument("--data", metavar="PATH", help=DataConfig.__dataclass_fields__["path"].metadata["help"])


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's, but a line never breaks inside a hyphenated name ("fashion-mnist", "--batch-size")."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digitcnn", description="Handwritten-digit recognition on PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = HelpFormatter

    train = commands.add_parser(
        "train",
        help="train a model into a run folder",
        formatter_class=formatter,
        epilog="Training options left out take the architecture's recipe: the defaults shown per architecture.",
    )

    def architectures(text: str) -> list[str]:
        names = text.split(",")
        unknown = [name for name in names if name not in ARCHITECTURE_NAMES]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown[0]!r}; choose from {', '.join(sorted(ARCHITECTURE_NAMES))}"
            )
        return names

    train.add_argument(
        "--arch",
        type=architectures,
        default=argparse.SUPPRESS,  # absent: the data set's default network, named in the help
        metavar="|".join(sorted(ARCHITECTURE_NAMES)),
        help=f"architecture; with --ensemble, a comma-separated list for the members (default: {DEFAULT_ARCH}; "
        + ", ".join(f"{arch} on {dataset}" for dataset, arch in DATASET_DEFAULT_ARCHS.items())
        + ")",
    )
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

    finetune = commands.add_parser(
        "finetune", help="teach a trained model a person's own samples (--data DIR)", formatter_class=formatter
    )
    add_model_argument(finetune)
    finetune.add_argument("--data", metavar="DIR", required=True, help="folders 0/ ... 9/ of images, or a labels.csv")
    for name in (field.name for field in dataclasses.fields(FinetuneConfig) if field.name not in ("base", "samples")):
        add_knob(finetune, FinetuneConfig, name, str(getattr(FinetuneConfig, name)))
    finetune.add_argument("--out", metavar="DIR", help="run folder (default: runs/finetune-TIMESTAMP)")
    finetune.add_argument("--quiet", action="store_true", help="no progress lines")

    ensemble = commands.add_parser(
        "ensemble", help="combine trained models into one ensemble run folder", formatter_class=formatter
    )
    ensemble.add_argument(
        "models", nargs="+", metavar="MODEL", help="run folders or model files; an ensemble counts as its members"
    )
    ensemble.add_argument(
        "--detector",
        metavar="RUN",
        help="a model trained with --reject, answering 'not a digit' in front of the one MODEL, which keeps its digits",
    )
    ensemble.add_argument("--out", metavar="DIR", required=True, help="the new run folder")

    evaluate = commands.add_parser(
        "evaluate", help="test loss and accuracy of a trained model", formatter_class=formatter
    )
    add_model_argument(evaluate)
    add_data_arguments(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--report",
        metavar="DIR",
        help="write report.md, report.html, metrics.json and figures to DIR; fits the "
        "softmax temperature on the validation split and stores it with a --model run folder or .safetensors file",
    )

    explain = commands.add_parser(
        "explain", help="which pixels drove a prediction (integrated gradients)", formatter_class=formatter
    )
    add_model_argument(explain)
    explain.add_argument("image", metavar="IMAGE", help="an image file, read as `predict` reads it")
    explain.add_argument("--out", metavar="FILE.png", required=True, help="where to write the figure")
    explain.add_argument("--label", type=int, help="explain this class instead of the predicted one")
    explain.add_argument(
        "--layers",
        action="store_true",
        help="draw the page's look-inside view: each convolution block's and pooling step's "
        "feature maps, the class scores and the saliency",
    )

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
    serve.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="processes that read images, each with its own copy of the model (1: threads of "
        "the server's process); up to the number of cores",
    )
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
    handler = {
        "train": commands.run_train,
        "evaluate": commands.run_evaluate,
        "predict": commands.run_predict,
        "show": commands.run_show,
        "serve": commands.run_serve,
        "export": commands.run_export,
        "explain": commands.run_explain,
        "ensemble": commands.run_ensemble,
        "finetune": commands.run_finetune,
    }
    try:
        return handler[arguments.command](arguments) or 0
    except (DigitcnnError, ValueError) as error:
        print(f"digitcnn: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("digitcnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
