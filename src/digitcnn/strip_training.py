"""The strip reader (strips.py) as a PyTorch network, the synthetic numbers it learns from, and its training.

Numbers are built from MNIST's first 54,000 training digits only (the last 6,000 are the validation split, and
the test digits are the numbers benchmark's), side by side at every spacing from wide gaps to 4 px of overlap,
each digit a little smaller or larger and off the baseline, the whole slanted and written with a finer or thicker
pen, then enlarged and brought back through `strip_input` as a photographed number's blob is. Reproduce the
shipped reader (it writes its checked ONNX twin beside it):

    .venv/bin/python -m digitcnn.strip_training --out src/digitcnn/weights/strips.safetensors

An interrupted run leaves its checkpoint beside --out; the same command with --resume continues it.
"""

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from .errors import DigitcnnError, ModelError
from .files import atomic_path, file_sha256
from .preprocess import morphology
from .runs import load_checkpoint_file, load_weights_file, save_checkpoint_file  # the one safetensors reader
from .strips import BLANK, FRAME, METADATA_KEY, STRIP_HEIGHT, decode, read_strips, strip_input
from .train import checkpoint_tensors, restore_checkpoint

INK = 0.5  # a pixel above half intensity is ink when the space between two digits is measured


@dataclasses.dataclass(frozen=True)
class StripTrainingConfig:
    """Every knob of the strip reader's training and of the numbers it is trained on."""

    steps: int = 12_000  # batches; ~66 min on 2 cores (6,000 read overlapping numbers 2-3 points worse)
    # Steps between checkpoints (one is also written after the last step): an interruption costs ~1 min of training
    # at most, for a ~5 MB write that takes a fraction of a second. How often one is written does not change the run.
    checkpoint_every: int = 250
    batch_size: int = 64  # strips per batch
    learning_rate: float = 2e-3  # Adam's peak, reached after a tenth of the steps, then cosine to zero
    weight_decay: float = 5e-4
    seed: int = 0
    training_digits: int = 54_000  # MNIST's training digits numbers are built from; the rest is validation
    max_digits: int = 6  # digits per training number (1 to this)
    smallest_scale: float = 0.8  # each digit is drawn at this to 1.1 times MNIST's size
    largest_scale: float = 1.1
    baseline_jitter: int = 3  # px at MNIST's scale, up or down
    # Spaces between neighbouring digits' ink boxes, px at MNIST's scale (negative: columns shared), drawn from
    # these ranges with these weights: touching and overlapping digits are what the search cannot cut.
    spacings: tuple = ((3, 12, 0.2), (0, 3, 0.25), (0, 0, 0.2), (-4, -1, 0.35))
    enlarge: tuple = (1.5, 5.0)  # the built number is enlarged by this before strip_input scales it back
    shear: float = 0.3  # columns per row, either way
    thicker_pen: int = 2  # px at MNIST's scale
    thinner_pen: int = 1  # px at MNIST's scale; 0 for a person's own digits, which come in their own pen

    def __post_init__(self):
        if self.steps < 1 or self.checkpoint_every < 1:
            raise ValueError(
                f"steps and checkpoint_every must be at least 1, not {self.steps} and {self.checkpoint_every}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"the learning rate must be above 0, not {self.learning_rate}")


class StripReader(nn.Module):
    """(N, 1, 32, W) strips in [0, 1] -> (N, W / 2, 11) logits, a frame per two columns, class 10 the blank."""

    def __init__(self, width: int = 64):
        super().__init__()

        def block(inputs, outputs, pool):
            layers = [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]
            return layers + [nn.MaxPool2d(pool)]

        self.features = nn.Sequential(
            *block(1, width // 2, (2, 2)),  # 16 x W/2
            *block(width // 2, width, (2, 1)),  # 8 x W/2
            *block(width, width * 3 // 2, (2, 1)),  # 4 x W/2
            nn.Conv2d(width * 3 // 2, 2 * width, (4, 3), padding=(0, 1), bias=False),  # 1 x W/2
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.head = nn.Sequential(  # each frame sees ~40 columns: a digit and its neighbours' edges
            nn.Conv1d(2 * width, 2 * width, 5, padding=2, bias=False),
            nn.BatchNorm1d(2 * width),
            nn.ReLU(),
            nn.Conv1d(2 * width, 2 * width, 5, padding=2, bias=False),
            nn.BatchNorm1d(2 * width),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv1d(2 * width, BLANK + 1, 1),
        )
        self.width = width

    def columns(self, strips: torch.Tensor) -> torch.Tensor:
        """(N, 1, 32, W) strips -> (N, C, W / 2) features, what the head reads."""
        return self.features((strips - 0.1307) / 0.3081).squeeze(2)

    def forward(self, strips: torch.Tensor) -> torch.Tensor:
        return self.head(self.columns(strips)).transpose(1, 2)


def scaled_digit(digit: np.ndarray, scale: float) -> np.ndarray:
    """A 28x28 uint8 digit cut to its inked columns and resized by `scale` (28 * scale rows), as float ink in [0, 1]:
    one digit of a made-up number, before `digits_in_a_row` lays them side by side."""
    columns = np.flatnonzero(digit.max(axis=0) > 0)
    digit = digit[:, columns[0] : columns[-1] + 1]
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(28 * scale)))
    return np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BILINEAR), np.float32) / 255


def digits_in_a_row(placed: list[tuple[np.ndarray, int]], spaces: list[int]) -> np.ndarray:
    """Digits (float ink, each with the row it starts at) side by side on one dark strip as tall and wide as they
    are: between neighbours' ink (columns above INK) `spaces` px, negative where they overlap."""
    lefts = [0]
    for (left_image, _), (right_image, _), space in zip(placed[:-1], placed[1:], spaces, strict=True):
        left_ink = np.flatnonzero(left_image.max(axis=0) > INK)
        right_ink = np.flatnonzero(right_image.max(axis=0) > INK)
        lefts.append(lefts[-1] + int(left_ink[-1]) + 1 + space - int(right_ink[0]))
    shift = -min(lefts)
    width = max(left + image.shape[1] for left, (image, _) in zip(lefts, placed, strict=True)) + shift
    height = max(top + image.shape[0] for image, top in placed)
    strip = np.zeros((height, width), np.float32)
    for left, (image, top) in zip(lefts, placed, strict=True):
        window = strip[top : top + image.shape[0], left + shift : left + shift + image.shape[1]]
        np.maximum(window, image, out=window)
    return strip


def synthetic_number(images: np.ndarray, labels: np.ndarray, rng, config: StripTrainingConfig, count: int, draw=None):
    """A number of `count` random digits, as (strip input, its labels); `draw(rng, count)` picks their indices
    (uniformly by default)."""
    chosen = rng.integers(0, len(images), count) if draw is None else draw(rng, count)
    low, high, weights = zip(*config.spacings, strict=True)
    kinds = rng.choice(len(weights), count - 1, p=np.array(weights) / sum(weights))
    placed = []
    for index in chosen:
        image = scaled_digit(images[index], rng.uniform(config.smallest_scale, config.largest_scale))
        top = config.baseline_jitter + round((28 * config.largest_scale - image.shape[0]) / 2)
        placed.append((image, top + int(rng.integers(-config.baseline_jitter, config.baseline_jitter + 1))))
    strip = digits_in_a_row(placed, [int(rng.integers(low[kind], high[kind] + 1)) for kind in kinds])
    factor = rng.uniform(*config.enlarge)
    shear = rng.uniform(-config.shear, config.shear)  # a hand that slants more or less than MNIST's writers
    size = (round(strip.shape[1] * factor), round(strip.shape[0] * factor))
    enlarged = Image.fromarray(strip, "F").resize(size, Image.Resampling.BICUBIC)
    slack = round(abs(shear) * size[1])
    enlarged = enlarged.transform(
        (size[0] + slack, size[1]), Image.Transform.AFFINE,
        (1, shear, -slack if shear > 0 else 0, 0, 1, 0), Image.Resampling.BILINEAR,
    )  # fmt: skip
    enlarged = np.asarray(enlarged, np.float32)
    pen = int(rng.integers(-config.thinner_pen, config.thicker_pen + 1))  # strokes thinner or thicker by this
    if pen and rng.random() < 0.5:
        penned = morphology(enlarged, round(pen * factor / 2))
        # A finer pen may erase a number of hairline strokes (a thin 1 drawn on the page, taught by finetune): that
        # one keeps its own pen. MNIST's strokes outlast it, so the shipped reader's numbers are as they were.
        enlarged = penned if penned.max() > 0.1 else enlarged
    rows, columns = np.flatnonzero(enlarged.max(axis=1) > 0.1), np.flatnonzero(enlarged.max(axis=0) > 0.1)
    enlarged = enlarged[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    return strip_input(np.clip(enlarged, 0, 1)), labels[chosen]


def batch(images, labels, rng, config: StripTrainingConfig, draw=None):
    """A padded batch: strips (N, 1, 32, W), targets concatenated, frames and target lengths per strip. Its
    numbers all have as many digits, so few columns are padding."""
    count = int(rng.integers(1, config.max_digits + 1))
    numbers = [synthetic_number(images, labels, rng, config, count, draw) for _ in range(config.batch_size)]
    numbers = [(strip, digits) for strip, digits in numbers if strip is not None]
    width = max(strip.shape[1] for strip, _ in numbers)
    strips = np.zeros((len(numbers), 1, STRIP_HEIGHT, width), np.float32)
    for row, (strip, _) in enumerate(numbers):
        strips[row, 0, :, : strip.shape[1]] = strip
    frames = torch.tensor([strip.shape[1] // FRAME for strip, _ in numbers])
    targets = torch.from_numpy(np.concatenate([digits for _, digits in numbers]).astype(np.int64))
    return torch.from_numpy(strips), targets, frames, torch.tensor([len(digits) for _, digits in numbers])


def learning_rate(step: int, config: StripTrainingConfig) -> float:
    warmup = config.steps // 10
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (config.steps - warmup)))


def train_strip_reader(
    images,
    labels,
    config: StripTrainingConfig,
    log=print,
    checkpoint: Path | None = None,
    resume: bool = False,
    start: Path | None = None,
) -> StripReader:
    """The reader trained on numbers built from `images`, from random weights or from the reader at `start` (a
    further schedule of config.steps). With `checkpoint`, the weights, AdamW's moments, the step and both random
    generators (PyTorch's for dropout, numpy's for the numbers) are saved there every `checkpoint_every` steps and
    after the last; `resume` continues from it to the weights an uninterrupted run ends with (the learning rate is
    a function of the step, so the schedule needs nothing more)."""
    if resume and checkpoint is None:
        raise ValueError("resuming needs the checkpoint to resume from")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    images, labels = images[: config.training_digits], labels[: config.training_digits]
    model = StripReader()
    if start is not None:
        model.load_state_dict(load_strip_reader(start).state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_function = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    first_step, running, seconds_before = 0, [], 0.0
    if resume:
        first_step, running, seconds_before = restore_strip_checkpoint(checkpoint, config, model, optimizer, rng)
        log(f"resuming after step {first_step}/{config.steps} from {checkpoint}")
    elif checkpoint is not None and checkpoint.exists():
        raise ModelError(f"{checkpoint} holds an interrupted run: pass --resume to continue it, or delete it")
    started = time.perf_counter()
    for step in range(first_step, config.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        strips, targets, frames, lengths = batch(images, labels, rng, config)
        log_probabilities = model(strips).log_softmax(2).transpose(0, 1)  # T, N, 11 as CTCLoss takes them
        loss = loss_function(log_probabilities, targets, frames, lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(float(loss.detach()))
        seconds = seconds_before + time.perf_counter() - started
        if (step + 1) % 500 == 0 or step + 1 == config.steps:
            log(f"step {step + 1}/{config.steps}: loss {np.mean(running):.4f}, {seconds:.0f} s")
            running = []
        if checkpoint is not None and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
            state = {
                "step": step + 1,
                "config": resumable_settings(config),
                "param_groups": optimizer.state_dict()["param_groups"],
                "numbers_rng": rng.bit_generator.state,  # numpy's generator: a dict of Python ints, JSON as it is
                "running": running,  # the losses since the last line logged, so the next one averages as many
                "seconds": seconds,
            }
            save_checkpoint_file(checkpoint, checkpoint_tensors(model, None, optimizer, None), state)
    return model.eval()


def tune_strip_reader(reader: StripReader, own: tuple, rehearsal: tuple, config, log=None) -> StripReader:
    """The reader (trained in place) taught a person's digits as `finetune` teaches the classifier: numbers built
    of their digits (28x28, framed as written: the reader sees a hand's slant and width) and rehearsal digits,
    each digit theirs with probability `config.strip_share`, for `config.strip_steps` steps of SGD on the head
    alone. The convolutions and every BatchNorm's statistics stay the base's: the head learns to name shapes the
    features already see (a slashed 0 read as 88), with less to unlearn on everyone else's numbers."""
    own_images, own_labels = own
    images, labels = np.concatenate([own_images, rehearsal[0]]), np.concatenate([own_labels, rehearsal[1]])
    mine, theirs = len(own_labels), len(rehearsal[1])

    def draw(rng, count: int) -> np.ndarray:
        return np.where(
            rng.random(count) < config.strip_share, rng.integers(0, mine, count), mine + rng.integers(0, theirs, count)
        )

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    # A finer pen would wipe out a hairline digit drawn on the page beside thicker ones, and its label would stay.
    numbers = StripTrainingConfig(batch_size=config.strip_batch_size, thinner_pen=0)
    optimizer = torch.optim.SGD(reader.head.parameters(), lr=config.strip_learning_rate, momentum=0.9)
    loss_function = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    reader.eval()
    reader.head.train()
    for layer in reader.head:
        if isinstance(layer, nn.BatchNorm1d):
            layer.eval()
    started = time.perf_counter()
    for step in range(config.strip_steps):
        strips, targets, frames, lengths = batch(images, labels, rng, numbers, draw)
        with torch.no_grad():
            features = reader.columns(strips)
        log_probabilities = reader.head(features).transpose(1, 2).log_softmax(2).transpose(0, 1)
        for group in optimizer.param_groups:
            group["lr"] = config.strip_learning_rate * (1 - step / config.strip_steps)
        loss = loss_function(log_probabilities, targets, frames, lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if log is not None:
        log(f"strip reader: {config.strip_steps} steps, {time.perf_counter() - started:.1f}s")
    return reader.eval()


def checkpoint_path(out) -> Path:
    """Where an interrupted run writing `out` waits to be resumed: beside it, until the run finishes."""
    return Path(out).with_suffix(".checkpoint.safetensors")


def resumable_settings(config: StripTrainingConfig) -> dict:
    """The config as a checkpoint records it (tuples as JSON's lists): what a run must be resumed with."""
    settings = json.loads(json.dumps(dataclasses.asdict(config)))
    del settings["checkpoint_every"]  # saving more or less often changes nothing the run computes
    return settings


def restore_strip_checkpoint(
    path: Path, config: StripTrainingConfig, model, optimizer, rng
) -> tuple[int, list[float], float]:
    """Loads the checkpoint at `path` into the model, the optimizer and both generators; returns (steps done, the
    losses since the last line logged, seconds trained)."""
    if not path.exists():
        raise ModelError(f"nothing to resume: {path} is missing")
    tensors, state = load_checkpoint_file(path)
    recorded, settings = state.get("config", {}), resumable_settings(config)
    if recorded != settings:
        differences = ", ".join(
            f"{name} {recorded.get(name)} there, {settings.get(name)} here"
            for name in sorted(settings.keys() | recorded.keys())
            if recorded.get(name) != settings.get(name)
        )
        raise ModelError(f"{path} was made with other settings ({differences}); resume with those it was started with")
    restore_checkpoint(tensors, model, None, optimizer, None, state["param_groups"])
    rng.bit_generator.state = state["numbers_rng"]
    return state["step"], state["running"], state["seconds"]


def torch_reader(model: StripReader):
    """The reader as `strips.read_strips` takes it: strips -> each one's digits."""

    def logits(strips: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(strips)).numpy()

    return functools.partial(read_strips, logits)


def validation_accuracy(model, images, labels, config: StripTrainingConfig, count: int = 2000) -> dict:
    """Numbers built from the validation digits, per spacing: the share read exactly."""
    result = {}
    for low, high, _ in config.spacings:
        spacing_only = dataclasses.replace(config, spacings=((low, high, 1.0),))
        rng = np.random.default_rng(1)
        numbers = [synthetic_number(images, labels, rng, spacing_only, 2 + index % 5) for index in range(count)]
        read = torch_reader(model)([strip for strip, _ in numbers])
        right = [
            [int(digit.argmax()) for digit, _ in decode(row)] == list(truth)
            for row, (_, truth) in zip(read, numbers, strict=True)
        ]
        result[f"{low}..{high} px"] = round(float(np.mean(right)), 4)
    return result


def save_strip_reader(model: StripReader, path, results: dict) -> None:
    metadata = {METADATA_KEY: json.dumps({"width": model.width, "results": results})}
    with atomic_path(path) as temporary:
        save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, temporary, metadata)


def export_strip_reader(model: StripReader, path, source) -> None:
    """The reader as ONNX beside its weights (`strips.OnnxStripReader` runs it without PyTorch), kept only when
    onnxruntime reads validation strips of every width as PyTorch does."""
    import warnings

    from .onnx_model import OPSET, TOLERANCE, import_extra
    from .strips import OnnxStripReader

    onnx = import_extra("onnx", "exporting the strip reader")
    with atomic_path(path) as temporary:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (torch.rand(2, 1, STRIP_HEIGHT, 48),),
                str(temporary),
                input_names=["strips"],
                output_names=["logits"],
                dynamic_axes={"strips": {0: "batch", 3: "width"}, "logits": {0: "batch", 1: "frames"}},
                opset_version=OPSET,
                dynamo=False,
            )
        exported = onnx.load(str(temporary))
        onnx.helper.set_model_props(exported, {METADATA_KEY: json.dumps({"source_sha256": file_sha256(source)})})
        onnx.save(exported, str(temporary))
        twin = OnnxStripReader(temporary)
        with torch.inference_mode():
            for width in (16, 58, 120):
                batch_of_strips = torch.rand(3, 1, STRIP_HEIGHT, width)
                difference = np.abs(twin.logits(batch_of_strips.numpy()) - model(batch_of_strips).numpy()).max()
                if difference > TOLERANCE:
                    raise ModelError(f"the strip reader's ONNX export differs from PyTorch by {difference:.2e}")


def read_results(path) -> dict:
    """What a reader's file records of its training (its `results`), with the file's sha256."""
    _, metadata = load_weights_file(path)
    if METADATA_KEY not in metadata:
        raise ModelError(f"{path} is not a strip reader: no {METADATA_KEY} metadata")
    return {"sha256": file_sha256(path), **json.loads(metadata[METADATA_KEY]).get("results", {})}


def load_strip_reader(path) -> StripReader:
    try:
        tensors, metadata = load_weights_file(path)
        model = StripReader(json.loads(metadata[METADATA_KEY])["width"])
        model.load_state_dict(tensors)
    except (ModelError, KeyError, ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{path} is not a strip reader: {reason}") from None
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    from .data import load_data

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the .safetensors file to write; its ONNX twin goes beside it")
    parser.add_argument("--steps", type=int, default=StripTrainingConfig.steps)
    parser.add_argument("--seed", type=int, default=StripTrainingConfig.seed)
    parser.add_argument(
        "--learning-rate", type=float, default=StripTrainingConfig.learning_rate, help="the schedule's peak"
    )
    parser.add_argument(
        "--from",
        dest="start",
        default=None,
        help="a reader's .safetensors to go on training for --steps (given again with --resume)",
    )
    parser.add_argument("--validation-numbers", type=int, default=2000, help="numbers per spacing read after")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=StripTrainingConfig.checkpoint_every,
        help="steps between checkpoints, written beside --out as OUT.checkpoint.safetensors",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the interrupted run from its checkpoint (same --steps, --seed)"
    )
    arguments = parser.parse_args(argv)
    checkpoint = checkpoint_path(arguments.out)
    try:
        config = StripTrainingConfig(
            steps=arguments.steps,
            seed=arguments.seed,
            learning_rate=arguments.learning_rate,
            checkpoint_every=arguments.checkpoint_every,
        )
    except ValueError as error:  # a knob out of range, reported as argparse reports its own
        parser.error(str(error))
    try:
        start = Path(arguments.start) if arguments.start else None
        # Read before the run, not after it: a start file moved or replaced meanwhile costs nothing trained.
        started_from = read_results(start) if start is not None else None
        (images, labels), _ = load_data()
        model = train_strip_reader(images, labels, config, checkpoint=checkpoint, resume=arguments.resume, start=start)
        validation = images[config.training_digits :], labels[config.training_digits :]
        exact = validation_accuracy(model, *validation, config, arguments.validation_numbers)
        results = {"validation_exact": exact, "steps": config.steps, "seed": config.seed}
        if started_from is not None:  # what the run went on from, and its own settings and results
            results.update(learning_rate=config.learning_rate, started_from=started_from)
        print(results)
        save_strip_reader(model, arguments.out, results)
        export_strip_reader(model, Path(arguments.out).with_suffix(".onnx"), arguments.out)
    except DigitcnnError as error:
        raise SystemExit(f"strip_training: error: {error}") from None
    except KeyboardInterrupt:
        left = f"; --resume continues from {checkpoint}" if checkpoint.exists() else ""
        print(f"strip_training: interrupted{left}", file=sys.stderr)
        raise SystemExit(130) from None
    checkpoint.unlink(missing_ok=True)  # the run is done: its weights and twin are written


if __name__ == "__main__":
    main()
