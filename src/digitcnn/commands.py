"""What each `digitcnn` command does, given its parsed arguments: each calls the same functions as the Python API
(cli.py only builds the parser and reports errors)."""

import contextlib
import csv
import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path

from .config import DataConfig, FinetuneConfig, TrainConfig, default_arch
from .errors import DigitcnnError


def given_knobs(arguments, config_class: type) -> dict:
    """The config fields given on the command line."""
    names = [field.name for field in dataclasses.fields(config_class)]
    return {name: getattr(arguments, name) for name in names if hasattr(arguments, name)}


def run_train(arguments) -> int:
    from . import distributed
    from .train import keep_freed_memory

    keep_freed_memory()  # the command exits when training ends: its memory is better kept than handed back
    try:
        result, out = train_from(arguments)
        if distributed.is_main():
            if "member_test_accuracies" in result:
                members = ", ".join(f"{accuracy:.4f}" for accuracy in result["member_test_accuracies"])
                print(f"member test accuracies: {members}")
            print(f"test accuracy: {result['test_accuracy']:.4f}")
            print(f"saved the run to {out} ({result['train_seconds']:.0f} s of training)", file=sys.stderr)
        return 0
    finally:
        distributed.teardown()  # the process group train_run joins under torchrun


def train_from(arguments) -> tuple[dict, str]:
    """`digitcnn train`'s work: (the run's results, its folder)."""
    from .ensemble import train_ensemble
    from .jobs import train_run

    overrides = given_knobs(arguments, TrainConfig)
    data_options = {"dataset": arguments.dataset, "path": arguments.data, **given_knobs(arguments, DataConfig)}
    data_options = {key: value for key, value in data_options.items() if value is not None}
    # Left out entirely, --resume can tell that no data option was given.
    data = DataConfig(**data_options) if data_options else None
    options = {"activation": arguments.activation, "device": arguments.device, **overrides}
    archs = getattr(arguments, "arch", None) or [default_arch(arguments.dataset if arguments.data is None else None)]
    out = arguments.out or f"runs/{'-'.join(archs)}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    verbose = not arguments.quiet
    if arguments.ensemble:
        options = {key: value for key, value in options.items() if value is not None and key != "seed"}
        result = train_ensemble(
            out,
            arguments.ensemble,
            archs,
            data=data,
            seed=overrides.get("seed"),
            resume=arguments.resume,
            verbose=verbose,
            **options,
        )
    elif len(archs) > 1:
        raise DigitcnnError("several architectures make sense only with --ensemble N")
    else:
        result = train_run(out, arch=archs[0], data=data, resume=arguments.resume, verbose=verbose, **options)
    return result, out


def run_finetune(arguments) -> int:
    from .finetune import describe_results, finetune_run
    from .train import keep_freed_memory

    keep_freed_memory()
    config = FinetuneConfig(base=arguments.model, samples=arguments.data, **given_knobs(arguments, FinetuneConfig))
    out = arguments.out or f"runs/finetune-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    print("\n".join(describe_results(finetune_run(out, config, verbose=not arguments.quiet), out)))
    return 0


def run_ensemble(arguments) -> int:
    from .ensemble import combine_ensemble, combine_gated

    if arguments.detector is None:
        result = combine_ensemble(arguments.out, arguments.models)
    elif len(arguments.models) == 1:
        result = combine_gated(arguments.out, arguments.models[0], arguments.detector)
    else:
        raise DigitcnnError("--detector stands in front of one model: make the ensemble first, then gate it")
    if result.get("validation_accuracy") is not None:
        print(f"validation accuracy: {result['validation_accuracy']:.4f}")
    if result.get("test_digits_flagged") is not None:
        print(f"test digits answered 'not a digit': {result['test_digits_flagged']:.4f}")
    print(f"test accuracy: {result['test_accuracy']:.4f}")
    print(f"saved the {'gated model' if arguments.detector else 'ensemble'} to {arguments.out}", file=sys.stderr)
    return 0


def run_evaluate(arguments) -> int:
    from .inference import evaluate, load_model
    from .jobs import load_split, trained_on

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
        from .onnx_model import export_twin  # the new temperature made the old twin stale: it is read no more

        if (why_not := export_twin(model, Path(stored), test[0])) is not None:
            print(f"no ONNX twin written ({why_not}): the model reads with PyTorch", file=sys.stderr)
    if arguments.json:
        print(json.dumps({key: metrics[key] for key in ("test_loss", "test_accuracy", "test_examples", "calibration")}))
    else:
        print("\n".join(report.summary_lines(metrics)))
        print(report.text_table(["class", "precision", "recall", "F1", "support"], report.per_class_rows(metrics)))
    where = f"; temperature stored in {stored}" if stored else ""
    print(f"wrote the report to {arguments.report}/report.md (and report.html, metrics.json){where}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def one_torch_thread(model):
    """Each image's candidates are a small batch: one thread reads a photo of a number in ~90 ms where two took
    ~470 ms on two busy cores (benchmarks/numbers.py --timings-only), as the server found for single digits.
    (An ONNX twin runs one thread already.)"""
    from .model_config import is_torch_model

    if not is_torch_model(model):
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)  # `main` may run inside someone else's process


def run_predict(arguments) -> int:
    from .inference import load_model
    from .recognize import csv_rows, describe, expand_paths, is_failure, read_images

    model = load_model(arguments.model, onnx_twin=True)  # the twin, if there is one, spares importing PyTorch
    paths = expand_paths(arguments.files)
    with one_torch_thread(model):
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
    from .inference import load_model, weights_file
    from .jobs import load_split
    from .model_config import is_torch_model
    from .onnx_model import VALIDATION_DIGITS, export_onnx  # it names the package to install if onnx is missing

    model = load_model(arguments.model)
    if not is_torch_model(model):
        raise DigitcnnError("export traces the model in PyTorch: pass its run folder or .safetensors, not an .onnx")
    _, (x_test, _) = load_split(DataConfig(dataset=arguments.dataset or model.config.dataset, path=arguments.data))
    source = weights_file(arguments.model)  # recorded in the file: beside those weights, it is their twin
    report = export_onnx(model, arguments.out, images=x_test[:VALIDATION_DIGITS], source=source)
    report["strip_reader"] = export_own_strip_reader(model, Path(arguments.out))
    if arguments.json:
        print(json.dumps(report))
    else:
        print(f"wrote {report['path']} (ONNX opset {report['opset']})")
        if report["strip_reader"]:
            print(f"wrote {report['strip_reader']}, the run's own strip reader, read with it")
        print(
            f"checked against PyTorch on {report['digits']} test digits: max abs logit difference "
            f"{report['max_abs_difference']:.2e} (tolerance {report['tolerance']:g}), "
            f"labels identical: {'yes' if report['labels_identical'] else 'no'}"
        )
    return 0


def export_own_strip_reader(model, exported: Path) -> str | None:
    """A fine-tuned run's own strip reader, exported beside its model (where `load_model` of the .onnx finds it);
    None for a model that reads with the shipped one, whose stale reader from an earlier export there is removed."""
    from .inference import exported_strip_reader

    beside = exported_strip_reader(exported)
    if model.strip_weights is None:
        beside.unlink(missing_ok=True)
        return None
    from .strip_training import export_strip_reader, load_strip_reader

    export_strip_reader(load_strip_reader(model.strip_weights), beside, model.strip_weights)
    return str(beside)


def run_explain(arguments) -> int:
    from .explain import integrated_gradients
    from .images import load_image
    from .inference import load_model, predict
    from .model_config import is_torch_model
    from .plots import plot_saliency
    from .preprocess import preprocess
    from .writer import writer_of

    model = load_model(arguments.model)
    if not is_torch_model(model):
        raise DigitcnnError("explain needs the model's gradients: pass its run folder, not an .onnx file")
    names = model.config.class_names
    if arguments.label is not None and not 0 <= arguments.label < len(names):
        raise DigitcnnError(f"--label must be a class index in [0, {len(names)}), not {arguments.label}")
    pixels = preprocess(load_image(arguments.image), writer_of(model.config))
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
