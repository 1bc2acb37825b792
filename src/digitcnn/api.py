"""The main job as one function: data -> model -> fit -> test accuracy -> run folder with figure."""

import dataclasses
import sys
from pathlib import Path

from . import distributed
from .errors import DigitcnnError
from .inference import evaluate, predict
from .models import INPUT_STATISTICS, build_model, model_config_from_dict
from .runs import CHECKPOINT_FILE, read_config, update_config
from .train import TrainConfig, fit

FIGURE_FILE = "predictions.png"


def train_run(
    out,
    arch="fast",
    activation="relu",
    dataset=None,
    data_path=None,
    limit=None,
    resume=False,
    verbose=True,
    **overrides,
) -> dict:
    """Trains into run folder `out` and returns its results (also written to config.json["results"]).

    With resume=True everything (architecture, data, recipe) comes from the folder's config.json."""
    from .data import class_names, load_data

    distributed.setup()
    out = Path(out)
    if resume:
        config = read_config(out)
        if not (out / CHECKPOINT_FILE).exists() or "data" not in config:
            raise DigitcnnError(f"nothing to resume in {out}: no checkpoint yet")
        data = config["data"]
        dataset, data_path, limit = data["dataset"], data["path"], data["limit"]
        train_config = TrainConfig(**config["train"])
        model_config = config["model"]
    elif (out / CHECKPOINT_FILE).exists():
        raise DigitcnnError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    (x_train, y_train), (x_test, y_test) = load_data(dataset or "mnist", path=data_path)
    if limit:
        x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]
    if resume:
        model = build_model(**dataclasses.asdict(model_config_from_dict(model_config)))
    else:
        name = dataset or "mnist"
        names = class_names(name) if data_path is None else [str(label) for label in range(10)]
        mean, std = INPUT_STATISTICS.get(name if data_path is None else "mnist")
        model = build_model(arch, activation, class_names=names, dataset=name, input_mean=mean, input_std=std)
        train_config = None
        if distributed.is_main():
            update_config(
                out,
                data={
                    "dataset": name,
                    "path": data_path,
                    "limit": limit,
                    "train_examples": len(x_train),
                    "test_examples": len(x_test),
                },
            )
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if resume and overrides:
        raise DigitcnnError("--resume takes the run's own settings; drop the other training options")
    history = fit(
        model, x_train, y_train, config=train_config, run_dir=out, resume=resume, verbose=verbose, **overrides
    )
    test_loss, test_accuracy = evaluate(model, x_test, y_test)
    results = {
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "train_seconds": round(history.seconds, 2),
        "final_val_accuracy": (history.history.get("val_accuracy") or [None])[-1],
    }
    if distributed.is_main():
        update_config(out, results=results)
        from .plots import plot_predictions

        predicted = predict(model, x_test[:10]).argmax(axis=1)
        plot_predictions(x_test[:10], y_test[:10], predicted, out / FIGURE_FILE, class_names=model.config.class_names)
    if verbose and distributed.is_main():
        print(f"trained {dataclasses.asdict(model.config)['arch']} in {history.seconds:.1f} s", file=sys.stderr)
    return results
