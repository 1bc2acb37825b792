"""The jobs behind `digitcnn train`: data -> model -> fit -> the one look at the test set -> a run folder with its
config and figure. ensemble.py runs the same job per member."""

import dataclasses
import sys
from pathlib import Path
from typing import NamedTuple

import torch

from . import distributed
from .config import DataConfig, default_arch, read_run_config, recipe, update_run_config
from .data import class_names, load_data
from .errors import DigitcnnError
from .folders import is_image_folder, read_samples, split_per_class
from .inference import evaluate, predict
from .model_config import INPUT_STATISTICS, ModelConfig
from .models import build_model
from .rejection import NOT_A_DIGIT, REJECT, calibrate, flagged, rejects, training_examples
from .runs import CHECKPOINT_FILE, WEIGHTS_FILE, save_model_file
from .train import fit

FIGURE_FILE = "predictions.png"


class LabelledSplit(NamedTuple):
    train: tuple  # (x_train, y_train)
    test: tuple  # (x_test, y_test)
    class_names: list[str]


def load_split(data: DataConfig | None = None):
    """(train, test) of the data `data` names, cut to the first `data.limit` of each."""
    return tuple(load_labelled(data)[:2])


def load_labelled(data: DataConfig | None = None) -> LabelledSplit:
    """The train and test parts of the data `data` names, cut to the first `data.limit` of each, with the names of
    its classes. An image folder's test part is drawn from it (data.test_split, seeded), and said so."""
    data = data or DataConfig()
    if data.path is not None and is_image_folder(data.path):
        samples = read_samples(data.path, report=skipped)
        kept, held = split_per_class(samples.labels, data.test_split, data.split_seed)
        print(
            f"{data.path}: {len(samples.labels)} images in {len(samples.class_names)} classes; {len(held)} of them "
            f"({data.test_split:.0%} of each class, seed {data.split_seed}) held out as the test set",
            file=sys.stderr,
        )
        train, test = (samples.images[kept], samples.labels[kept]), (samples.images[held], samples.labels[held])
        names = samples.class_names
    else:
        train, test = load_data(data.dataset, path=data.path)
        names = class_names(data.dataset) if data.path is None else [str(label) for label in range(10)]
    if data.limit:
        train, test = tuple(part[: data.limit] for part in train), tuple(part[: data.limit] for part in test)
    return LabelledSplit(train, test, names)


def skipped(problem: str) -> None:
    print(f"skipped {problem}", file=sys.stderr)


def train_run(
    out,
    arch=None,
    activation="relu",
    data: DataConfig | None = None,
    resume=False,
    verbose=True,
    device=None,
    **overrides,
) -> dict:
    """Trains into run folder `out` and returns its results (also written to config.json["results"]). `overrides`
    are TrainConfig knobs on top of the architecture's recipe; with no `arch`, the data set's default network.

    With the `reject` knob, a digit model learns a last class, "not a digit", from generated non-digits, and its
    threshold is chosen on the validation split. With resume=True everything (architecture, data, recipe) comes
    from the folder's config.json."""
    distributed.setup()
    out = Path(out)
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if resume:
        if not (out / CHECKPOINT_FILE).exists():
            raise DigitcnnError(f"nothing to resume in {out}: no checkpoint there")
        run = read_run_config(out)
        if run.data is None or run.train is None or run.model is None:
            raise DigitcnnError(f"nothing to resume in {out}: its config.json does not say what it was trained on")
        if overrides or data is not None:
            raise DigitcnnError("--resume takes the run's own settings; drop the other training options")
        data, train_config = run.data, run.train
        model = build_model(**dataclasses.asdict(run.model))
    elif (out / CHECKPOINT_FILE).exists():
        raise DigitcnnError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    else:
        data = data or DataConfig()
        builtin = data.dataset if data.path is None else None
        arch = arch or default_arch(builtin)
        train_config = recipe(arch, builtin, **overrides)
        if train_config.reject and data.path is None and data.dataset != "mnist":
            raise DigitcnnError(f"--reject is for digits (mnist or your own data), not {data.dataset}")
    (x_train, y_train), (x_test, y_test), names = load_labelled(data)
    data = dataclasses.replace(data, train_examples=len(x_train), test_examples=len(x_test))
    if not resume:
        mean, std = INPUT_STATISTICS[data.dataset if data.path is None else "mnist"]
        rejection = {}
        if train_config.reject:
            names = [*names, NOT_A_DIGIT]
            rejection = {"not_a_digit_threshold": REJECT.threshold_floor}
        # The initial weights come from the run's seed too, so the same command gives the same model.
        torch.manual_seed(train_config.seed)
        model = build_model(
            arch,
            activation,
            num_classes=len(names),
            class_names=names,
            dataset=data.dataset,
            input_mean=mean,
            input_std=std,
            **rejection,
        )
    # Not a digit: generated non-digits made from the training part only join training; the threshold is chosen
    # on the validation split (its digits and held-in non-digits) once the weights are final.
    split_at = len(x_train) - int(len(x_train) * data.validation_split)
    generated = None
    if rejects(model.config):
        training_part = x_train[:split_at], y_train[:split_at]
        from .recognize import strip_reader  # the shipped strip reader crops some of the digits it learns from

        generated = training_examples(*training_part, model.config.num_classes, train_config.seed, strip_reader())
    history = fit(
        model,
        x_train,
        y_train,
        config=train_config,
        data=data,
        run_dir=out,
        resume=resume,
        verbose=verbose,
        device=device,
        generated=generated,
    )
    facts = {}
    if rejects(model.config) and split_at < len(x_train):
        facts = calibrate(model, x_train[split_at:], y_train[split_at:])
        if distributed.is_main():
            save_model_file(model, out / WEIGHTS_FILE)  # finish_run writes its config, threshold and all
    results = finish_run(
        model,
        out,
        x_test,
        y_test,
        train_seconds=round(history.seconds, 2),
        final_val_accuracy=(history.history.get("val_accuracy") or [None])[-1],
        **facts,
    )
    if verbose and distributed.is_main():
        print(f"trained {model.config.arch} in {history.seconds:.1f} s", file=sys.stderr)
    return results


def finish_run(model, out: Path, x_test, y_test, **facts) -> dict:
    """The one look at the test set: loss and accuracy into config.json["results"] beside the model's config, the
    figure, and the weights' ONNX twin (which `digitcnn predict` and the server then run, on onnxruntime)."""
    test_loss, test_accuracy = evaluate(model, x_test, y_test)
    results = {"test_loss": test_loss, "test_accuracy": test_accuracy, **facts}
    if rejects(model.config):  # the share of test digits answered "not a digit"
        results["test_digits_flagged"] = float(flagged(predict(model, x_test), model.config).mean())
    if distributed.is_main():
        update_run_config(out, model=model.config, results=results)
        from .plots import plot_predictions  # matplotlib, only once a run has finished

        predicted = predict(model, x_test[:10]).argmax(axis=1)
        plot_predictions(x_test[:10], y_test[:10], predicted, out / FIGURE_FILE, class_names=model.config.class_names)
        from .onnx_model import export_twin

        if (why_not := export_twin(model, out / WEIGHTS_FILE, x_test)) is not None:
            print(f"no ONNX twin written ({why_not}): the run reads with PyTorch", file=sys.stderr)
    return results


def trained_on(source, model_config: ModelConfig | None = None) -> DataConfig:
    """The data a model was trained on: its run folder's data section. A lone model file (the shipped one too), or
    a folder that does not say, was trained on its own data set, all of it, with the default split held out."""
    if source is not None and Path(source).is_dir():
        run = read_run_config(source)
        if run.data is not None:
            return run.data
        model_config = run.model or model_config
    return DataConfig(dataset=model_config.dataset if model_config is not None else DataConfig.dataset)
