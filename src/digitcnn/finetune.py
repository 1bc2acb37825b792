"""The job behind `digitcnn finetune`: a trained model (the shipped one by default) taught a person's own samples.
Every batch mixes their samples, augmented, with the base model's own training data, so it learns their hand
without forgetting everyone else's. Part of their samples is held out and read before and after; the result is an
ordinary run folder."""

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import STRIPS_FILE, FinetuneConfig, update_run_config
from .errors import DigitcnnError, ModelError
from .folders import read_samples, split_per_class
from .inference import evaluate, load_model, predict_logits
from .jobs import finish_run, load_labelled, skipped, trained_on
from .metrics import fit_temperature
from .model_config import is_torch_model
from .models import Classifier
from .pixels import as_pixels
from .recognize import reads_numbers, strip_weights
from .runs import WEIGHTS_FILE, save_model_file
from .strip_training import export_strip_reader, load_strip_reader, save_strip_reader, tune_strip_reader
from .train import augment, learning_rate_at, make_optimizer
from .writer import Writer, estimate_writer, writer_of

# The base's training digits a hand is measured against: the median shape of each class settles long before this.
REFERENCE_DIGITS = 10_000


def finetune_run(out, config: FinetuneConfig, verbose: bool = True) -> dict:
    """Teaches `config.base` the samples in `config.samples` and writes run folder `out`; returns its results (also
    in config.json["results"]): accuracy on the held-out samples before and after, the base data's test accuracy."""
    started = time.perf_counter()
    out = Path(out)
    if (out / WEIGHTS_FILE).exists():
        raise DigitcnnError(f"{out} already holds a model; choose another --out")
    if config.samples is None:
        raise DigitcnnError("finetune needs the person's samples: pass --data DIR")
    model = load_model(config.base)
    if not is_torch_model(model):
        raise DigitcnnError("finetune changes the model's weights: pass a run folder or .safetensors, not an .onnx")
    plain = read_samples(config.samples, class_names=model.config.class_names, report=skipped)
    kept, held = split_per_class(plain.labels, config.holdout, config.seed)
    if verbose:
        print(
            f"{len(kept)} samples to learn from, {len(held)} held out to measure "
            f"({config.holdout:.0%} of each class, seed {config.seed})",
            file=sys.stderr,
        )

    # Rehearsal: the base's own training data, never its validation split, which the temperature is fitted on.
    data = trained_on(config.base, model.config)
    (x_train, y_train), test, _ = load_labelled(data)
    split_at = len(x_train) - int(len(x_train) * data.validation_split)
    rehearsal, validation = (x_train[:split_at], y_train[:split_at]), (x_train[split_at:], y_train[split_at:])
    # "Before" reads the held-out samples as the base reads them: with the hand it undoes, if it was tuned already.
    measured = read_with(config, model.config, plain, writer_of(model.config)).take(held)
    before = evaluate(model, measured.images, measured.labels).accuracy if len(measured.labels) else None
    taught_as_written = plain.take(kept)  # the hand is measured on these, and the strip reader reads ink as written
    writer = None if config.as_written else hand_of(taught_as_written, *rehearsal)
    hand = writer or Writer()
    model.config = dataclasses.replace(model.config, writer_slant=hand.slant, writer_width=hand.width)
    if verbose and writer is not None:
        print(f"your hand: slant {hand.slant:+.2f}, width x{hand.width:.2f}; undone before reading", file=sys.stderr)
    samples = read_with(config, model.config, plain, writer)  # as the tuned model will read them
    own, measured = samples.take(kept), samples.take(held)

    history = teach(model, (own.images, own.labels), rehearsal, config, verbose)
    strips_taught = teach_strip_reader(model, taught_as_written, rehearsal, config, out, verbose)
    after = evaluate(model, measured.images, measured.labels).accuracy if len(measured.labels) else None
    validation_accuracy = None
    if len(validation[1]):  # the base's temperature was fitted to the base's logits, not these
        logits = predict_logits(model, validation[0])
        model.config.temperature = fit_temperature(logits, validation[1])
        validation_accuracy = float((logits.argmax(axis=1) == validation[1]).mean())
    save_model_file(model, out / WEIGHTS_FILE)
    update_run_config(out, data=data, finetune=config, model=model.config, device="cpu")
    facts = {
        "writer_slant": model.config.writer_slant,
        "writer_width": model.config.writer_width,
        "held_out_samples": len(measured.labels),
        "held_out_accuracy_before": before,
        "held_out_accuracy_after": after,
        "validation_accuracy": validation_accuracy,  # the base data's validation split, after: to tune on
        "samples_used": len(own.labels),
        "samples_skipped": len(samples.problems),
        "strip_reader_taught": strips_taught,
        "mean_training_loss": history[-1]["loss"],
        "train_seconds": round(history[-1]["seconds"], 2),
    }
    results = finish_run(model, out, *test, **facts)
    results["seconds"] = round(time.perf_counter() - started, 2)  # everything: loading, teaching, measuring
    update_run_config(out, results=results)
    return results


def teach_strip_reader(model, own, rehearsal: tuple, config: FinetuneConfig, out: Path, verbose: bool) -> bool:
    """Teaches the base's strip reader (the shipped one, or a tuned base's own) the samples as written, and writes
    it into the run with its checked ONNX twin; whether it did. A model of other classes than the ten digits, or
    an install without a strip reader, keeps the reader it has."""
    base = strip_weights(model)
    if config.strip_steps == 0 or not base.exists() or not reads_numbers(model.config):
        return False
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if verbose else None
    reader = tune_strip_reader(load_strip_reader(base), (own.images, own.labels), rehearsal, config, log)
    out.mkdir(parents=True, exist_ok=True)
    save_strip_reader(reader, out / STRIPS_FILE, {"base": str(base), "samples": len(own.labels)})
    try:
        export_strip_reader(reader, (out / STRIPS_FILE).with_suffix(".onnx"), out / STRIPS_FILE)
    except ModelError as error:  # the export extra missing says what to install
        print(f"no ONNX twin of the strip reader written ({error}): it reads with PyTorch", file=sys.stderr)
    return True


def read_with(config: FinetuneConfig, model_config, plain, writer):
    """The samples framed with `writer`'s hand undone (the plainly read ones when there is none to undo): the same
    files in the same order, as a hand is undone only after each digit is found."""
    if writer is None:
        return plain
    return read_samples(config.samples, class_names=model_config.class_names, writer=writer)


def hand_of(samples, reference_images, reference_labels):
    """The person's slant and width (writer.py) from the samples learned from, against the base's training digits."""
    count = min(len(reference_labels), REFERENCE_DIGITS)
    return estimate_writer(
        samples.images / 255, samples.labels, reference_images[:count] / 255, reference_labels[:count]
    )


def teach(model, own: tuple, rehearsal: tuple, config: FinetuneConfig, verbose: bool = True) -> list[dict]:
    """`config.steps` steps of SGD on batches of `own_per_batch` of the person's samples (with replacement) and the
    rest drawn from `rehearsal`, all augmented; the model is trained in place and left in eval mode."""
    train_config = config.as_train_config()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    own_images, own_labels = as_pixels(own[0], keep_uint8=True), torch.as_tensor(np.asarray(own[1])).long()
    old_images, old_labels = as_pixels(rehearsal[0], keep_uint8=True), torch.as_tensor(np.asarray(rehearsal[1])).long()
    frozen = freeze_early_layers(model, config.frozen_convolutions)
    optimizer = make_optimizer(model, train_config)
    rehearsed = config.batch_size - config.own_per_batch
    history, loss_sum, started = [], 0.0, time.perf_counter()
    model.train()
    for layer in frozen:  # their BatchNorm keeps the base's running statistics
        layer.eval()
    for step in range(config.steps):
        mine = torch.randint(len(own_labels), (config.own_per_batch,), generator=generator)
        theirs = torch.randint(len(old_labels), (rehearsed,), generator=generator)
        pixels = as_pixels(torch.cat([own_images[mine], old_images[theirs]]))
        labels = torch.cat([own_labels[mine], old_labels[theirs]])
        pixels = augment(pixels, train_config, generator)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config.steps, train_config)
        loss = F.cross_entropy(model(pixels), labels, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item()
        if (step + 1) % 50 == 0 or step + 1 == config.steps:
            row = {"step": step + 1, "loss": loss_sum / (step + 1), "seconds": time.perf_counter() - started}
            history.append(row)
            if verbose:
                print(
                    f"step {row['step']}/{config.steps}  loss {row['loss']:.4f}  {row['seconds']:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
    model.eval().requires_grad_(True)
    return history


def freeze_early_layers(model: nn.Module, convolutions: int) -> list[nn.Module]:
    """Stops gradients through each network's layers before its (convolutions + 1)-th convolution (each member of
    an ensemble alike); returns those layers."""
    frozen = []
    for network in (module for module in model.modules() if isinstance(module, Classifier)):
        layers = list(network.body.children())
        starts = [index for index, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]
        stop = starts[convolutions] if convolutions < len(starts) else len(layers)
        for layer in layers[:stop]:
            layer.requires_grad_(False)
            frozen.append(layer)
    return frozen


def describe_results(results: dict, out) -> list[str]:
    """The lines `digitcnn finetune` prints."""
    if results["held_out_accuracy_before"] is None:
        lines = ["held-out samples: none (every class has one sample only, or --holdout 0)"]
    else:
        before, after = results["held_out_accuracy_before"], results["held_out_accuracy_after"]
        lines = [f"held-out samples ({results['held_out_samples']}): accuracy {before:.4f} before, {after:.4f} after"]
    return lines + [
        f"test accuracy after: {results['test_accuracy']:.4f}",
        f"saved the run to {out} ({results['seconds']:.0f} s in all)",
    ]
