"""The main job as one function: data -> model -> fit -> test accuracy -> run folder with figure; and the same
for an ensemble, whose members are run folders of their own."""

import dataclasses
import sys
from pathlib import Path

import torch

from . import distributed
from .errors import DigitcnnError
from .inference import evaluate, predict
from .models import INPUT_STATISTICS, Ensemble, build_model, ensemble_of, model_config_from_dict
from .runs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    MEMBERS_FOLDER,
    WEIGHTS_FILE,
    load_run_model,
    read_config,
    save_model,
    update_config,
)
from .train import TrainConfig, fit, recipe

FIGURE_FILE = "predictions.png"


def load_split(dataset=None, data_path=None, limit=None):
    """(train, test) of a built-in data set or the user's, cut to the first `limit` of each."""
    from .data import load_data

    (x_train, y_train), (x_test, y_test) = load_data(dataset or "mnist", path=data_path)
    if limit:
        x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]
    return (x_train, y_train), (x_test, y_test)


def train_run(
    out, arch="fast", activation="relu", dataset=None, data_path=None, limit=None, resume=False, verbose=True,
    device=None, **overrides,
) -> dict:  # fmt: skip
    """Trains into run folder `out` and returns its results (also written to config.json["results"]).

    With resume=True everything (architecture, data, recipe) comes from the folder's config.json."""
    from .data import class_names

    distributed.setup()
    out = Path(out)
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if resume:
        if not (out / CHECKPOINT_FILE).exists():
            raise DigitcnnError(f"nothing to resume in {out}: no checkpoint there")
        config = read_config(out)
        if "data" not in config:
            raise DigitcnnError(f"nothing to resume in {out}: its config.json does not say what it was trained on")
        if overrides:
            raise DigitcnnError("--resume takes the run's own settings; drop the other training options")
        dataset, data_path, limit = config["data"]["dataset"], config["data"]["path"], config["data"]["limit"]
        train_config = TrainConfig(**config["train"])
        model = build_model(**dataclasses.asdict(model_config_from_dict(config["model"])))
    elif (out / CHECKPOINT_FILE).exists():
        raise DigitcnnError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    (x_train, y_train), (x_test, y_test) = load_split(dataset, data_path, limit)
    if not resume:
        name = dataset or "mnist"
        names = class_names(name) if data_path is None else [str(label) for label in range(10)]
        mean, std = INPUT_STATISTICS[name if data_path is None else "mnist"]
        # The initial weights come from the run's seed too, so the same command gives the same model.
        torch.manual_seed(recipe(arch, **overrides).seed)
        model = build_model(arch, activation, class_names=names, dataset=name, input_mean=mean, input_std=std)
        train_config = None
        if distributed.is_main():
            data = {"dataset": name, "path": data_path, "limit": limit, "train_examples": len(x_train),
                    "test_examples": len(x_test)}  # fmt: skip
            update_config(out, data=data)
    history = fit(model, x_train, y_train, config=train_config, run_dir=out, resume=resume, verbose=verbose,
                  device=device, **overrides)  # fmt: skip
    results = finish_run(model, out, x_test, y_test, train_seconds=round(history.seconds, 2),
                         final_val_accuracy=(history.history.get("val_accuracy") or [None])[-1])  # fmt: skip
    if verbose and distributed.is_main():
        print(f"trained {model.config.arch} in {history.seconds:.1f} s", file=sys.stderr)
    return results


def train_ensemble(out, members: int, archs: list[str], seed=None, resume=False, verbose=True, **options) -> dict:
    """Trains `members` models (seeds seed, seed+1, ...; architectures cycling through `archs`) into
    out/members/N, then saves them as one model in `out`. Resuming skips finished members and continues an
    interrupted one. Members are never chosen by their test accuracy: every member trained is in."""
    out = Path(out)
    if resume:
        settings = read_config(out).get("ensemble")
        if settings is None:
            raise DigitcnnError(f"nothing to resume in {out}: it is not an ensemble run")
        members, archs, seed, options = settings["members"], settings["archs"], settings["seed"], settings["options"]
    elif (out / MEMBERS_FOLDER).exists():
        raise DigitcnnError(f"{out} already holds an ensemble; pass --resume to continue it or choose another --out")
    else:
        seed = seed or 0
        update_config(out, ensemble={"members": members, "archs": archs, "seed": seed, "options": options})
    member_results = []
    for index in range(members):
        member_dir = out / MEMBERS_FOLDER / str(index)
        if (member_dir / CONFIG_FILE).exists() and "results" in read_config(member_dir):
            member_results.append(read_config(member_dir)["results"])
            continue
        if verbose:
            print(f"ensemble member {index + 1}/{members}: {archs[index % len(archs)]}, seed {seed + index}",
                  file=sys.stderr)  # fmt: skip
        partial = (member_dir / CHECKPOINT_FILE).exists()
        member_options = {} if partial else {**options, "arch": archs[index % len(archs)], "seed": seed + index}
        member_results.append(train_run(member_dir, resume=partial, verbose=verbose, **member_options))
    model = ensemble_of([load_run_model(out / MEMBERS_FOLDER / str(index)) for index in range(members)])
    data_options = {key: options.get(key) for key in ("dataset", "data_path", "limit")}
    (_, _), (x_test, y_test) = load_split(data_options["dataset"], data_options["data_path"], data_options["limit"])
    save_model(model, out)
    seconds = round(sum(result["train_seconds"] for result in member_results), 2)
    accuracies = [result["test_accuracy"] for result in member_results]
    return finish_run(model, out, x_test, y_test, train_seconds=seconds, member_test_accuracies=accuracies)


def combine_ensemble(out, sources: list, verbose: bool = True) -> dict:
    """Trained models (run folders or model files; an ensemble counts as its members) saved as one ensemble in
    `out`: members trained apart (other recipes, other machines) answer as one model. When every source held out
    the same validation split, the ensemble's validation accuracy is measured too: choose members by that, never
    by the test accuracy this reports."""
    from .inference import load_model
    from .report import training_data_of, validation_slice, validation_split_of

    out = Path(out)
    if (out / WEIGHTS_FILE).exists() or (out / CHECKPOINT_FILE).exists():
        raise DigitcnnError(f"{out} already holds a model; choose another --out")
    members, trained_on = [], []
    for source in sources:
        model = load_model(source)
        if not isinstance(model, torch.nn.Module):
            raise DigitcnnError(f"{source}: an ensemble is made of PyTorch models, not of exported .onnx files")
        members.extend(model.members if isinstance(model, Ensemble) else [model])
        dataset, data_path = training_data_of(source)
        trained_on.append((dataset or model.config.dataset, data_path, *validation_split_of(source)))
    if len({tuple(member.config.class_names) for member in members}) > 1:
        raise DigitcnnError("the models do not share their classes: they were trained on different data")
    model = ensemble_of(members)
    dataset, data_path, split, limit = trained_on[0]
    (x_train, y_train), (x_test, y_test) = load_split(dataset, data_path, limit)
    data = {"dataset": dataset, "path": data_path, "limit": limit}
    facts: dict = {"sources": [str(source) for source in sources]}
    if len(set(trained_on)) == 1 and split > 0:
        data["validation_split"] = split
        facts["validation_accuracy"] = evaluate(model, *validation_slice(x_train, y_train, split)).accuracy
    if verbose:
        print(f"ensemble of {len(members)} models from {len(sources)} sources", file=sys.stderr)
    update_config(out, data=data, ensemble={"sources": facts["sources"], "members": len(members)})
    save_model(model, out)
    return finish_run(model, out, x_test, y_test, **facts)


def finish_run(model, out: Path, x_test, y_test, **facts) -> dict:
    """The one look at the test set: loss and accuracy into config.json["results"], and the figure."""
    test_loss, test_accuracy = evaluate(model, x_test, y_test)
    results = {"test_loss": test_loss, "test_accuracy": test_accuracy, **facts}
    if distributed.is_main():
        update_config(out, results=results)
        from .plots import plot_predictions

        predicted = predict(model, x_test[:10]).argmax(axis=1)
        plot_predictions(x_test[:10], y_test[:10], predicted, out / FIGURE_FILE, class_names=model.config.class_names)
    return results
