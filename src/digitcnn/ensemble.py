"""Ensembles: trained models answering as one (models.Ensemble, the mean of their probabilities). Trained
together (`digitcnn train --ensemble N`: each member a run folder of its own) or combined from models trained
apart (`digitcnn ensemble`). Members are never chosen by their test accuracy. A digit reader behind a "not a
digit" detector (models.Gated, `digitcnn ensemble READER --detector RUN`) is made here too."""

import dataclasses
import sys
from pathlib import Path

from .config import (
    CONFIG_FILE,
    DataConfig,
    EnsembleConfig,
    RunConfig,
    read_run_config,
    recipe,
    write_run_config,
)
from .errors import DigitcnnError
from .inference import evaluate, load_model
from .jobs import finish_run, load_split, train_run, trained_on
from .model_config import ModelConfig, is_torch_model
from .models import Ensemble, Gated
from .rejection import NOT_A_DIGIT, REJECT, calibrate, rejects
from .report import validation_slice
from .runs import CHECKPOINT_FILE, MEMBERS_FOLDER, WEIGHTS_FILE, load_run_model, save_model_file


def ensemble_of(models: list) -> Ensemble:
    """One model from trained ones: the members keep their own configs, the ensemble takes their shared classes."""
    first = models[0].config
    members = [dataclasses.asdict(model.config) for model in models]
    shared = {name: getattr(first, name) for name in ("activation", "num_classes", "class_names", "dataset")}
    config = ModelConfig(
        arch="ensemble", members=members, input_mean=first.input_mean, input_std=first.input_std, **shared
    )
    thresholds = [model.config.not_a_digit_threshold for model in models]
    if None not in thresholds:  # until `evaluate --report` chooses the ensemble's own on validation
        config.not_a_digit_threshold = float(sum(thresholds) / len(thresholds))
    return Ensemble(config, models)


def members_of(model) -> list:
    """An ensemble counts as its members, any other model as itself."""
    return list(model.members) if isinstance(model, Ensemble) else [model]


def train_ensemble(
    out,
    members: int,
    archs: list[str],
    data: DataConfig | None = None,
    seed=None,
    resume=False,
    verbose=True,
    **options,
) -> dict:
    """Trains `members` models (seeds seed, seed+1, ...; architectures cycling through `archs`; `options` are
    train_run's keywords) into out/members/N, then saves them as one model in `out`. Resuming skips finished
    members and continues an interrupted one."""
    out = Path(out)
    if resume:
        run = read_run_config(out)
        if run.ensemble is None or run.ensemble.archs is None:
            raise DigitcnnError(f"nothing to resume in {out}: it is not an ensemble trained by digitcnn train")
        settings, data = run.ensemble, run.data or DataConfig()
        members, archs, seed, options = settings.members, settings.archs, settings.seed, settings.options or {}
    elif (out / MEMBERS_FOLDER).exists():
        raise DigitcnnError(f"{out} already holds an ensemble; pass --resume to continue it or choose another --out")
    else:
        seed, data = seed or 0, data or DataConfig()
        knobs = {key: value for key, value in options.items() if key not in ("activation", "device")}
        for arch in archs:  # a bad option fails now, not after the first members have trained
            recipe(arch, **knobs)
        write_run_config(out, RunConfig(data=data, ensemble=EnsembleConfig(members, archs, seed, options)))
    member_results = []
    for index in range(members):
        member_dir = out / MEMBERS_FOLDER / str(index)
        if (member_dir / CONFIG_FILE).exists() and read_run_config(member_dir).results is not None:
            member_results.append(read_run_config(member_dir).results)
            continue
        if verbose:
            print(
                f"ensemble member {index + 1}/{members}: {archs[index % len(archs)]}, seed {seed + index}",
                file=sys.stderr,
            )
        if (member_dir / CHECKPOINT_FILE).exists():
            member_results.append(train_run(member_dir, resume=True, verbose=verbose))
        else:
            member_results.append(
                train_run(
                    member_dir,
                    arch=archs[index % len(archs)],
                    data=data,
                    verbose=verbose,
                    **{**options, "seed": seed + index},
                )
            )
    model = ensemble_of([load_run_model(out / MEMBERS_FOLDER / str(index)) for index in range(members)])
    (_, _), (x_test, y_test) = load_split(data)
    save_model_file(model, out / WEIGHTS_FILE)
    seconds = round(sum(result["train_seconds"] for result in member_results), 2)
    accuracies = [result["test_accuracy"] for result in member_results]
    return finish_run(model, out, x_test, y_test, train_seconds=seconds, member_test_accuracies=accuracies)


def combine_ensemble(out, sources: list, verbose: bool = True) -> dict:
    """Trained models (run folders or model files; an ensemble counts as its members) saved as one ensemble in
    `out`: members trained apart (other recipes, other machines) answer as one model. When every source held out
    the same validation split, the ensemble's validation accuracy is measured too: choose members by that, never
    by the test accuracy this reports."""
    out = Path(out)
    if (out / WEIGHTS_FILE).exists() or (out / CHECKPOINT_FILE).exists():
        raise DigitcnnError(f"{out} already holds a model; choose another --out")
    members, trained = [], []
    for source in sources:
        model = load_model(source)
        if not is_torch_model(model):
            raise DigitcnnError(f"{source}: an ensemble is made of PyTorch models, not of exported .onnx files")
        members.extend(members_of(model))
        trained.append(trained_on(source, model.config))
    if len({tuple(member.config.class_names) for member in members}) > 1:
        raise DigitcnnError("the models do not share their classes: they were trained on different data")
    model = ensemble_of(members)
    # Only a split every source held out is unseen by every member; otherwise none is.
    shared = all(data == trained[0] for data in trained)
    data = dataclasses.replace(trained[0], validation_split=trained[0].validation_split if shared else 0.0)
    (x_train, y_train), (x_test, y_test) = load_split(data)
    data = dataclasses.replace(data, train_examples=len(x_train), test_examples=len(x_test))
    facts: dict = {"sources": [str(source) for source in sources]}
    if data.validation_split > 0:
        validation = validation_slice(x_train, y_train, data.validation_split)
        facts["validation_accuracy"] = evaluate(model, *validation).accuracy
    if verbose:
        print(f"ensemble of {len(members)} models from {len(sources)} sources", file=sys.stderr)
    write_run_config(out, RunConfig(data=data, ensemble=EnsembleConfig(len(members), sources=facts["sources"])))
    save_model_file(model, out / WEIGHTS_FILE)
    return finish_run(model, out, x_test, y_test, **facts)


def combine_gated(out, reader_source, detector_source, verbose: bool = True) -> dict:
    """A digit reader (any model without "not a digit", an ensemble too) behind a detector (a model trained with
    `--reject` on the same classes), saved as one model in `out` (models.Gated). Its threshold is chosen as `train
    --reject` chooses one: on the validation split with generated non-digits, when both held out the same split."""
    out = Path(out)
    if (out / WEIGHTS_FILE).exists() or (out / CHECKPOINT_FILE).exists():
        raise DigitcnnError(f"{out} already holds a model; choose another --out")
    reader, detector = load_model(reader_source), load_model(detector_source)
    if not (is_torch_model(reader) and is_torch_model(detector)):
        raise DigitcnnError("a gated model is made of PyTorch models, not of exported .onnx files")
    if rejects(reader.config):
        raise DigitcnnError(f"{reader_source} answers 'not a digit' itself: the reader is a model trained without it")
    if not rejects(detector.config):
        raise DigitcnnError(f"{detector_source} has no 'not a digit' answer: train the detector with --reject")
    if list(detector.config.class_names[:-1]) != list(reader.config.class_names):
        raise DigitcnnError("the reader and the detector do not share their classes: they were trained on other data")
    first = reader.config
    config = ModelConfig(
        arch="gated",
        members=[dataclasses.asdict(reader.config), dataclasses.asdict(detector.config)],
        activation=first.activation,
        num_classes=first.num_classes + 1,
        class_names=[*first.class_names, NOT_A_DIGIT],
        dataset=first.dataset,
        input_mean=first.input_mean,
        input_std=first.input_std,
        not_a_digit_threshold=REJECT.threshold_floor,  # until the validation split chooses it, below
    )
    model = Gated(config, [reader, detector])
    trained = [trained_on(reader_source, reader.config), trained_on(detector_source, detector.config)]
    # A split the detector trained on would set its threshold too low for digits it never saw: only a shared one.
    data = trained[0] if trained[0] == trained[1] else dataclasses.replace(trained[0], validation_split=0.0)
    (x_train, y_train), (x_test, y_test) = load_split(data)
    data = dataclasses.replace(data, train_examples=len(x_train), test_examples=len(x_test))
    facts: dict = {"sources": [str(reader_source), str(detector_source)]}
    if data.validation_split > 0:
        validation = validation_slice(x_train, y_train, data.validation_split)
        facts.update(calibrate(model, *validation))
        facts["validation_accuracy"] = evaluate(model, *validation).accuracy
    if verbose:
        print(f"{reader_source} behind the detector {detector_source}", file=sys.stderr)
    write_run_config(out, RunConfig(data=data, ensemble=EnsembleConfig(2, sources=facts["sources"])))
    save_model_file(model, out / WEIGHTS_FILE)
    return finish_run(model, out, x_test, y_test, **facts)
