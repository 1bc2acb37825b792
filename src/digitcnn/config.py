"""Every knob of a run in one typed place, and the run folder's config.json. DataConfig says what a run trains on,
TrainConfig how (each architecture's recipe is one), ModelConfig (beside the architectures, in models.py) what it
builds; RunConfig holds them with what the run recorded. write_run_config is the one writer of config.json and
read_run_config the one reader, which also reads the layout older runs wrote."""

import dataclasses
import functools
import json
import numbers
import typing
from pathlib import Path
from typing import Any, Literal

from .errors import ModelError
from .files import atomic_write
from .model_config import ModelConfig, model_config_from_dict

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"  # a run folder's model, beside its config
STRIPS_FILE = "strips.safetensors"  # a fine-tuned run's own strip reader (strips.py), taught the same hand

Dataset = Literal["mnist", "fashion-mnist"]  # the built-in data sets (data.py loads them)
Optimizer = Literal["adam", "sgd"]  # sgd: with Nesterov momentum
# onecycle: linear warm-up, then linear decay to zero. plateau: warm-up, the peak held while validation accuracy
# improves (within `epochs` and `time_budget`), then one epoch of linear decay to zero: as long as the data needs.
Schedule = Literal["constant", "onecycle", "plateau"]
# torch dtype names: the training forward pass under autocast; auto is bfloat16 where the CPU computes it natively
Precision = Literal["auto", "float32", "bfloat16"]


def knob(default, help: str, *, at_least=None, below=None):
    """A config field whose help text (unit, reason) is also the command line's --help. `at_least` and `below`
    bound its value; `check` enforces them, and a Literal type's choices, for the API and the command line alike."""
    return dataclasses.field(default=default, metadata={"help": help, "at_least": at_least, "below": below})


@functools.cache
def type_hints(config_class: type) -> dict[str, Any]:
    """A config class's field types, resolved once: every check of every field asks for them."""
    return typing.get_type_hints(config_class)


def choices(config_class: type, name: str) -> tuple | None:
    """The allowed values of a Literal-typed field (None for any other field): the one list of them."""
    hint = type_hints(config_class)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def value_type(config_class: type, name: str) -> type:
    """The type of field `name`'s values: a Literal's values' type, or an optional field's type without None."""
    hint = type_hints(config_class)[name]
    if typing.get_origin(hint) is Literal:
        return type(typing.get_args(hint)[0])
    return next((part for part in typing.get_args(hint) if part is not type(None)), hint)


def check(config_class: type, name: str, value) -> None:
    """Raises ValueError, naming the field and what it allows, if `value` does not fit field `name`."""
    allowed = choices(config_class, name)
    if allowed is not None and value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    # The API takes values as given (the command line converts them), and a batch size of 128.0 would otherwise
    # fail deep inside training.
    kind = {int: numbers.Integral, float: numbers.Real}.get(value_type(config_class, name))  # an int is a fine float
    if kind is not None and value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise ValueError(
            f"{name} must be {'a whole number' if kind is numbers.Integral else 'a number'}, not {value!r}"
        )
    metadata = next(field.metadata for field in dataclasses.fields(config_class) if field.name == name)
    at_least, below = metadata.get("at_least"), metadata.get("below")
    if value is None or ((at_least is None or value >= at_least) and (below is None or value < below)):
        return
    if below is not None:
        raise ValueError(f"{name} must be in [{at_least:g}, {below:g}), not {value}")
    raise ValueError(f"{name} must be at least {at_least}, not {value}")


def parse_knob(config_class: type, name: str, text: str):
    """A command-line value for field `name`: converted to the field's type, then checked as the config checks it."""
    kind = value_type(config_class, name)
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name} must be {'an' if kind is int else 'a'} {kind.__name__}, not {text!r}") from None
    check(config_class, name, value)
    return value


def validate(config) -> None:
    for field in dataclasses.fields(config):
        check(type(config), field.name, getattr(config, field.name))


@dataclasses.dataclass
class DataConfig:
    """What a run trains on; saved as config.json["data"], so evaluating, calibrating or resuming the run needs no
    data flags."""

    dataset: Dataset = knob("mnist", "a built-in data set (ignored when `path` is given)")
    path: str | None = knob(
        None,
        "your own data: an .npz with keras' keys, a folder of IDX files, or a folder of "
        "image files in class folders (or with a labels.csv of file,label rows)",
    )
    limit: int | None = knob(None, "use only the first N training and N test images", at_least=1)
    validation_split: float = knob(
        0.1,
        "last fraction of the training set held out, as Keras does: temperatures "
        "and ensemble members are chosen on it, never on the test set",
        at_least=0.0,
        below=1.0,
    )
    # An image folder comes without a test split; Keras' examples hold out a fifth the same way.
    test_split: float = knob(
        0.2, "an image folder's test set: this fraction of each class, drawn with split_seed", at_least=0.0, below=1.0
    )
    split_seed: int = knob(0, "seeds which images of a folder form its test set, so every command draws the same")
    # Counted when the data was loaded, not settings: two configs naming the same data compare equal without them.
    train_examples: int | None = dataclasses.field(default=None, compare=False)
    test_examples: int | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        if self.path is not None:
            self.path = str(self.path)  # as JSON keeps it
        validate(self)


@dataclasses.dataclass
class TrainConfig:
    """Every training knob. The defaults are the tutorial's recipe; RECIPES holds each architecture's tuned values,
    chosen on the validation split only."""

    epochs: int = knob(20, "passes over the training set (plateau: at most)", at_least=1)
    batch_size: int = knob(128, "examples per optimizer step (the global batch under torchrun)", at_least=1)
    optimizer: Optimizer = knob("adam", "adam, or sgd (Nesterov momentum)")
    learning_rate: float = knob(1e-3, "peak learning rate")
    momentum: float = knob(0.9, "SGD momentum")
    weight_decay: float = knob(0.0, "on conv and linear weights: decoupled for adam, L2 for sgd")
    schedule: Schedule = knob(
        "constant",
        "constant; onecycle: linear warm-up then linear decay to zero; plateau: "
        "the peak held while validation accuracy improves, then one epoch of decay",
    )
    time_budget: float | None = knob(
        None,
        "seconds of training at most (plateau): the decay starts in time to end "
        "within it; a slower machine trains fewer epochs",
        at_least=1.0,
    )
    warmup_fraction: float = knob(
        0.2, "fraction of all steps spent warming up (onecycle; plateau warms up over its first epoch)"
    )
    label_smoothing: float = knob(0.0, "probability mass spread over the other classes")
    translate: float = knob(0.0, "augmentation: random shift up to this many pixels each way")
    rotate: float = knob(0.0, "augmentation: random rotation up to this many degrees each way")
    scale: float = knob(0.0, "augmentation: random zoom up to this fraction each way")
    stroke: float = knob(0.0, "augmentation: random stroke thickening or thinning, up to this fraction of 1 px")
    ema_decay: float = knob(0.0, "per-step moving average of the weights, used as the result; 0 is off")
    precision: Precision = knob(
        "float32",
        "float32, or bfloat16: the training forward pass under autocast (pays "
        "on CPUs with native bfloat16; others emulate it, benchmarks.levers); auto: "
        "bfloat16 on such a CPU, else float32 (the run records which)",
    )
    seed: int = knob(0, "seeds the weights, data order, augmentation and dropout")
    # Off by default until benchmarks.not_a_digit meets its goals (benchmarks/README.md, "Not a digit"): the best
    # detectors so far still flag fewer than 90% of some held-out families, and cost eroded-stroke digits more
    # than the point allowed.
    reject: bool = knob(
        False,
        'digit data only: an 11th output, "not a digit", learned from generated non-digits '
        "(nondigits.py), its threshold chosen on the validation split; off until it meets its goals",
    )

    def __post_init__(self):
        validate(self)


TUTORIAL = TrainConfig()  # the tutorial's recipe, for the tutorial's network
# fmt: off
# SGD on a one-cycle schedule with label smoothing: the large learning rate BatchNorm allows, for the other networks.
ONE_CYCLE = dataclasses.replace(
    TUTORIAL, batch_size=256, optimizer="sgd", learning_rate=0.2, weight_decay=5e-4, schedule="onecycle",
    label_smoothing=0.1,
)
# The accurate recipe: augmentation (shift, rotation, zoom, stroke width), a long one-cycle schedule and EMA.
AUGMENTED = dataclasses.replace(
    ONE_CYCLE, epochs=15,
    translate=2.0, rotate=10.0, scale=0.1, stroke=0.5,
    ema_decay=0.999,
)
# The default's: 3 epochs, 1-px shifts, and bfloat16 where the CPU has it (as accurate on the validation split, and
# faster: benchmarks/README.md). The other recipes keep float32, which their published figures were made with.
QUICK = dataclasses.replace(ONE_CYCLE, epochs=3, translate=1.0, precision="auto")
# lean's: two epochs of batches of 128, as accurate on the validation split as QUICK's three of 256 (median of
# seeds 0-7) in ~0.8x the time: a batch of 128 costs more than half of 256's, twice as many steps do not.
LEAN = dataclasses.replace(QUICK, epochs=2, batch_size=128)
RECIPES: dict[str, TrainConfig] = {
    "fast": QUICK,
    "strided": QUICK,  # fast's: 2 epochs, batch 512 did worse on the validation split
    "lean": LEAN,
    "seed": TUTORIAL,
    "best": AUGMENTED,
    "deep": AUGMENTED,  # best's recipe, untuned
    "unpooled": AUGMENTED,  # best's recipe, untuned
}
# fmt: on


# The network `digitcnn train` trains when none is named. `lean` reads digits as well as `fast` (validation
# accuracy, then the test set) in ~0.8x the time, issue 20's budget; on Fashion-MNIST it read ~0.5 points fewer
# validation clothes than `fast` at the same 12 epochs, so that data set keeps `fast` (benchmarks/README.md).
DEFAULT_ARCH = "lean"
DATASET_DEFAULT_ARCHS = {"fashion-mnist": "fast"}


def default_arch(dataset: str | None) -> str:
    """The default network for a built-in data set; None (a user's own digits) takes MNIST's."""
    return DATASET_DEFAULT_ARCHS.get(dataset or "mnist", DEFAULT_ARCH)


# Where a built-in data set needs more than MNIST's recipe: Fashion-MNIST's classes are harder to tell apart, and
# `fast` at 3 epochs stops near 91%; 12 epochs (~2.5 min on 2 cores) fit the default command in 3 minutes.
DATASET_RECIPES: dict[tuple[str, str], dict[str, Any]] = {("fast", "fashion-mnist"): {"epochs": 12}}


def recipe(arch: str, dataset: str | None = None, **overrides) -> TrainConfig:
    """The architecture's tuned recipe (for that built-in `dataset`, if it has its own) with `overrides` (None
    values ignored) applied on top."""
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown training option {unknown[0]!r}; choose from {', '.join(sorted(known))}")
    given = {key: value for key, value in overrides.items() if value is not None}
    tuned = DATASET_RECIPES.get((arch, dataset), {})
    return dataclasses.replace(RECIPES.get(arch, TUTORIAL), **{**tuned, **given})


def recipe_defaults(name: str) -> str:
    """Field `name`'s value in each architecture's recipe, for --help: "3 for fast; 20 for seed; 15 for best, deep,
    unpooled", or the one value every recipe agrees on."""
    by_value: dict[Any, list[str]] = {}
    for arch, values in RECIPES.items():
        by_value.setdefault(getattr(values, name), []).append(arch)
    parts = [f"{value} for {', '.join(archs)}" for value, archs in by_value.items()] if len(by_value) > 1 else []
    parts = parts or [str(next(iter(by_value)))]
    for (arch, dataset), values in DATASET_RECIPES.items():
        parts += [f"{values[name]} for {arch} on {dataset}"] if name in values else []
    return "; ".join(parts)


@dataclasses.dataclass
class FinetuneConfig:
    """`digitcnn finetune`: a trained model taught a person's own samples, rehearsing its own training data in every
    batch so it keeps reading everyone else's. The defaults were chosen on benchmarks/finetune.py's writer styles,
    which are drawn from MNIST's validation split."""

    base: str | None = knob(None, "the model taught: a run folder or .safetensors file; None is the shipped model")
    samples: str | None = knob(None, "the person's samples: a folder of class folders (0/ ... 9/) or a labels.csv")
    holdout: float = knob(
        0.2,
        "fraction of each class's samples held out to measure before and after (never the last sample of a class)",
        at_least=0.0,
        below=1.0,
    )
    frozen_convolutions: int = knob(
        3,
        "the first N convolutions (with their BatchNorm) keep the base's weights and "
        "statistics: no gradients through the full-size layers, a third of the time a "
        "step takes; the base's stroke detectors stay",
        at_least=0,
    )
    # 150 steps read the hardest hands worse and let a very narrow one take MNIST under 99.5% (benchmarks.finetune).
    steps: int = knob(400, "optimizer steps, whatever the number of samples: the time a fine-tune takes", at_least=1)
    batch_size: int = knob(128, "examples per step: the person's samples, the rest rehearsal", at_least=2)
    own_per_batch: int = knob(32, "the person's samples (drawn with replacement, augmented) in each batch", at_least=1)
    learning_rate: float = knob(
        0.02,
        "peak learning rate of SGD (Nesterov) on a one-cycle schedule: a tenth of "
        "the recipes' 0.2, which would unlearn what the base knows",
        at_least=0.0,
    )
    weight_decay: float = knob(5e-4, "L2 on conv and linear weights, as the base's recipe")
    label_smoothing: float = knob(0.1, "as the base's recipe")
    translate: float = knob(2.0, "augmentation: random shift up to this many pixels each way")
    rotate: float = knob(10.0, "augmentation: random rotation up to this many degrees each way")
    scale: float = knob(0.1, "augmentation: random zoom up to this fraction each way")
    stroke: float = knob(0.5, "augmentation: random stroke thickening or thinning, up to this fraction of 1 px")
    seed: int = knob(0, "seeds the held-out samples, the batches and the augmentation")
    # Undoing a hand's slant and width took the slanted and narrow writer styles from 93.5-98.5% to 99.3-99.7% read
    # after fine-tuning (benchmarks.finetune, validation digits).
    as_written: bool = knob(
        False,
        "keep the samples' slant and width as written, for the fine-tune alone to learn, rather than "
        "estimating them and undoing them before every reading (writer.py)",
    )
    # The strip reader, which reads touching digits whole (strips.py), learns the hand too: untaught, it read the
    # slashed zeros of benchmarks.finetune's styles as 88 or 18, and its reading won over the taught classifier's.
    strip_steps: int = knob(
        60, "steps teaching the strip reader's head the samples; 0 keeps the base's reader", at_least=0
    )
    strip_batch_size: int = knob(32, "synthetic numbers per strip reader step", at_least=1)
    # A larger share learned no more of the engineer's hand and unlearned more of everyone else's touching numbers;
    # a smaller one learned too little of it (benchmarks/README.md, "The strip reader learns the hand too").
    strip_share: float = knob(
        0.25, "the share of the strip reader's digits that are the person's", at_least=0.0, below=1.0
    )
    strip_learning_rate: float = knob(
        3e-3, "SGD (momentum 0.9) on the strip reader's head, decaying to zero", at_least=0.0
    )

    def __post_init__(self):
        validate(self)
        if self.own_per_batch >= self.batch_size:
            raise ValueError(
                f"own_per_batch ({self.own_per_batch}) must leave room for rehearsal in batch_size ({self.batch_size})"
            )

    def as_train_config(self) -> TrainConfig:
        """The training loop's view: optimizer, schedule and augmentation as train.py reads them."""
        shared = {
            "batch_size",
            "learning_rate",
            "weight_decay",
            "label_smoothing",
            "translate",
            "rotate",
            "scale",
            "stroke",
            "seed",
        }
        values = {name: getattr(self, name) for name in shared}
        return TrainConfig(epochs=1, optimizer="sgd", schedule="onecycle", **values)


@dataclasses.dataclass
class EnsembleConfig:
    """An ensemble run: trained here (`members` runs in members/N, architectures cycling through `archs`, seeds
    seed, seed+1, ...) or combined from models trained apart (`sources`)."""

    members: int
    archs: list[str] | None = None
    seed: int | None = None
    options: dict[str, Any] | None = None  # train_run's keywords every member got: activation, device, recipe
    sources: list[str] | None = None


@dataclasses.dataclass
class DistributedFacts:
    """How training was spread over processes (torchrun): recorded for people, never read back as settings."""

    world_size: int
    batch_size_per_process: int
    effective_batch_size: int
    peak_learning_rate: float


@dataclasses.dataclass
class RunConfig:
    """A run folder's config.json: one section per field, None where the run has none (a combined ensemble trains
    nothing, a folder from save_model alone holds just the model)."""

    data: DataConfig | None = None
    train: TrainConfig | None = None
    model: ModelConfig | None = None
    ensemble: EnsembleConfig | None = None
    finetune: FinetuneConfig | None = None
    distributed: DistributedFacts | None = None
    device: str | None = None
    results: dict[str, Any] | None = None  # the one look at the test set (and what else the job measured)


SECTIONS = {
    "data": DataConfig,
    "train": TrainConfig,
    "ensemble": EnsembleConfig,
    "finetune": FinetuneConfig,
    "distributed": DistributedFacts,
}


def write_run_config(run_dir: str | Path, run: RunConfig) -> None:
    """The one writer of config.json (atomically)."""
    sections = {
        field.name: dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        for field in dataclasses.fields(run)
        if (value := getattr(run, field.name)) is not None
    }
    atomic_write(Path(run_dir) / CONFIG_FILE, json.dumps(sections, indent=2) + "\n")


def update_run_config(run_dir: str | Path, **sections) -> RunConfig:
    """The folder's config (empty if it has none yet) with `sections` replaced, written back."""
    run = read_run_config(run_dir) if (Path(run_dir) / CONFIG_FILE).exists() else RunConfig()
    run = dataclasses.replace(run, **sections)
    write_run_config(run_dir, run)
    return run


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The one reader of config.json, this layout and the one runs wrote before DataConfig."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{run_dir} is not a digitcnn run folder: {CONFIG_FILE} is missing") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"{path} is unreadable: {error}") from None
    try:
        raw = upgrade(raw)
        run = RunConfig(**{name: raw.get(name) for name in ("device", "results")})
        if raw.get("model") is not None:
            run.model = model_config_from_dict(raw["model"])
        for name, section in SECTIONS.items():
            if raw.get(name) is not None:
                known = {field.name for field in dataclasses.fields(section)}
                setattr(run, name, section(**{key: value for key, value in raw[name].items() if key in known}))
    except (TypeError, ValueError, AttributeError) as error:
        raise ModelError(f"{path} is unreadable: {error}") from None
    return run


def upgrade(raw: dict) -> dict:
    """config.json as runs before DataConfig wrote it, in today's layout: the validation split was the "train"
    section's, an ensemble trained here kept its data options among its members' options, and one combined from
    runs that held out different digits recorded no split."""
    raw = {name: dict(value) if isinstance(value, dict) else value for name, value in raw.items()}
    data, train, ensemble = raw.get("data"), raw.get("train"), raw.get("ensemble")
    if train is not None and "validation_split" in train:
        split = train.pop("validation_split")
        if data is None:  # written by fit alone, which knew only the model's data set
            data = {"dataset": (raw.get("model") or {}).get("dataset", DataConfig.dataset)}
        data.setdefault("validation_split", split)
    if ensemble is not None and ensemble.get("options") is not None:
        options = dict(ensemble["options"])
        moved = {
            "dataset": options.pop("dataset", None),
            "path": options.pop("data_path", None),
            "limit": options.pop("limit", None),
            "validation_split": options.pop("validation_split", None),
        }
        ensemble["options"] = options
        if data is None:
            data = {key: value for key, value in moved.items() if value is not None}
    if data is not None and ensemble is not None and ensemble.get("sources") is not None:
        data.setdefault("validation_split", 0.0)  # no digit was held out from every member
    raw.update(data=data, train=train, ensemble=ensemble)
    return raw


@dataclasses.dataclass
class InsideConfig:
    """The "look inside" view (inside.py): how much of each layer it shows, and how finely it explains."""

    # More tiles per layer would only grow the answer; fewer saliency steps are as close to explain's 64 (cosine
    # similarity on validation digits, benchmarks/README.md) at a quarter of the cost, for a live view.
    tiles_per_layer: int = knob(32, "a wider layer shows only its this many most active channels", at_least=1)
    saliency_steps: int = knob(16, "integrated-gradients steps for the view's saliency", at_least=1)

    def __post_init__(self):
        validate(self)
