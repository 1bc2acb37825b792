"""The training loop: batches by index from one uint8 tensor, augmentation in batches, a pure learning-rate
function, and a checkpoint per epoch from which an interrupted run resumes to the same weights."""

import copy
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .config import DataConfig, DistributedFacts, TrainConfig, recipe, update_run_config
from .errors import ModelError
from .inference import as_labels, evaluate
from .pixels import as_pixels
from .runs import WEIGHTS_FILE, load_checkpoint, save_checkpoint, save_model_file, write_history


@dataclasses.dataclass
class History:
    """Per-epoch metrics, shaped like Keras' History: history["val_accuracy"][-1] is the last epoch's."""

    history: dict[str, list[float]]
    epoch: list[int]
    seconds: float  # training wall time, this process, resumed runs included


def learning_rate_at(step: int, total_steps: int | None, config: TrainConfig, steps_per_epoch: int = 1) -> float:
    """The learning rate of step `step` of `total_steps`. A "plateau" run warms up over its first epoch and holds the
    peak until its length is decided (`total_steps` None until then), then decays to zero over its last epoch."""
    if config.schedule == "constant":
        return config.learning_rate
    if config.schedule == "plateau":
        if step < steps_per_epoch and total_steps != steps_per_epoch:  # a one-epoch run has no time to warm up
            return config.learning_rate * (step + 1) / steps_per_epoch
        if total_steps is None:
            return config.learning_rate
        return config.learning_rate * min(1.0, max(0.0, (total_steps - step) / steps_per_epoch))
    warmup_steps = max(1, round(config.warmup_fraction * total_steps))
    if step < warmup_steps:
        return config.learning_rate * (step + 1) / warmup_steps
    return config.learning_rate * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def augment(pixels: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Random shift, rotation and zoom of a whole batch in one grid_sample; never flips (digits are not
    symmetric). The background stays 0 because MNIST's is."""
    if not (config.translate or config.rotate or config.scale or config.stroke):
        return pixels
    count, _, height, width = pixels.shape
    if config.stroke:
        pixels = vary_strokes(pixels, (torch.rand(count, generator=generator) * 2 - 1) * config.stroke)
    if not (config.translate or config.rotate or config.scale):
        return pixels

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(count, generator=generator) * 2 - 1) * limit

    angle = uniform(math.radians(config.rotate))
    zoom = 1 + uniform(config.scale)
    # affine_grid maps output to input coordinates in [-1, 1]; one pixel is 2 / size there.
    shift_x, shift_y = uniform(config.translate) * 2 / width, uniform(config.translate) * 2 / height
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid's own sampling points (pixel centres, align_corners=False), computed by broadcasting: its batched
    # matrix product of 784 x 3 by 3 x 2 per image took 2.1 ms a batch of 256 against 0.6 (issue 20).
    xs = ((torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1).view(1, 1, width)
    ys = ((torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1).view(1, height, 1)
    cos, sin, shift_x, shift_y = (value.view(count, 1, 1) for value in (cos, sin, shift_x, shift_y))
    grid = torch.stack([cos * xs - sin * ys + shift_x, sin * xs + cos * ys + shift_y], dim=-1)
    return F.grid_sample(pixels, grid.to(pixels.device), mode="bilinear", padding_mode="zeros", align_corners=False)


def vary_strokes(pixels: torch.Tensor, amounts: torch.Tensor) -> torch.Tensor:
    """Thicker strokes where amount > 0, thinner where < 0: a blend toward the 3x3 dilation or erosion, so an
    amount of 1 is about one pixel either way. People's pens are rarely MNIST's ~3 px, and preprocessing
    brings them only toward it."""
    dilated = F.max_pool2d(pixels, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-pixels, 3, stride=1, padding=1)
    amounts = amounts.to(pixels.device).view(-1, 1, 1, 1)
    return torch.where(
        amounts > 0, pixels.lerp(dilated, amounts.clamp_min(0)), pixels.lerp(eroded, (-amounts).clamp_min(0))
    )


class NesterovSGD:
    """torch.optim.SGD(nesterov=True)'s arithmetic, step for step, without torch.optim: the first optimizer made
    from torch.optim imports torch._dynamo, 1.2 s of the default command's budget (issue 20). The same interface
    as far as fit and finetune use it: param_groups, zero_grad, step, state_dict, load_state_dict (checkpoints
    of either read into the other)."""

    def __init__(self, groups: list[dict], lr: float, momentum: float):
        self.param_groups = [
            {"lr": lr, "momentum": momentum, **group, "params": list(group["params"])} for group in groups
        ]
        self.momentum_buffers: dict[nn.Parameter, torch.Tensor] = {}

    def parameters(self) -> list[nn.Parameter]:
        return [parameter for group in self.param_groups for parameter in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.parameters():
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            momentum, weight_decay = group["momentum"], group["weight_decay"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                gradient = parameter.grad.add(parameter, alpha=weight_decay) if weight_decay else parameter.grad
                buffer = self.momentum_buffers.get(parameter)
                if buffer is None:
                    buffer = self.momentum_buffers[parameter] = gradient.clone()
                else:
                    buffer.mul_(momentum).add_(gradient)
                parameter.add_(gradient.add(buffer, alpha=momentum), alpha=-group["lr"])

    def state_dict(self) -> dict:
        """torch.optim's layout: state by the parameter's position, each group's parameters as positions."""
        positions = {parameter: index for index, parameter in enumerate(self.parameters())}
        state = {
            positions[parameter]: {"momentum_buffer": buffer} for parameter, buffer in self.momentum_buffers.items()
        }
        groups, start = [], 0
        for group in self.param_groups:
            count = len(group["params"])
            groups.append({**group, "params": list(range(start, start + count))})
            start += count
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        parameters = self.parameters()
        for group, saved in zip(self.param_groups, state_dict["param_groups"], strict=True):
            group.update({key: saved[key] for key in ("lr", "momentum", "weight_decay")})
        self.momentum_buffers = {
            parameters[int(index)]: values["momentum_buffer"].clone() for index, values in state_dict["state"].items()
        }


def make_optimizer(model: nn.Module, config: TrainConfig) -> NesterovSGD | torch.optim.Optimizer:
    # Weight decay on the weights of convolutions and linear layers only, not on BatchNorm or biases.
    decayed = [p for p in model.parameters() if p.dim() > 1]
    others = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": others, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return NesterovSGD(groups, lr=config.learning_rate, momentum=config.momentum)
    return (
        torch.optim.AdamW(groups, lr=config.learning_rate)
        if config.weight_decay
        else torch.optim.Adam(groups, lr=config.learning_rate)
    )


def checkpoint_tensors(model, average, optimizer, generator) -> dict[str, torch.Tensor]:
    tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
    if average is not None:
        tensors.update({f"average.{name}": value for name, value in average.state_dict().items()})
    for index, state in optimizer.state_dict()["state"].items():
        tensors.update({f"optimizer.{index}.{key}": value for key, value in state.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if generator is not None:  # None: the caller keeps its data's generator itself (a numpy one, in JSON)
        tensors["rng.data"] = generator.get_state()
    return tensors


def restore_checkpoint(tensors, model, average, optimizer, generator, param_groups) -> None:
    def section(prefix):
        return {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}

    model.load_state_dict(section("model."))
    if average is not None:
        average.load_state_dict(section("average."))
    state: dict[int, dict] = {}
    for name, value in section("optimizer.").items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    torch.set_rng_state(tensors["rng.torch"])
    if generator is not None:
        generator.set_state(tensors["rng.data"])


def fit(
    model,
    x,
    y,
    batch_size: int | None = None,
    epochs: int | None = None,
    validation_split: float | None = None,
    *,
    seed: int | None = None,
    config: TrainConfig | None = None,
    data: DataConfig | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    verbose: bool = True,
    device: str | None = None,
    generated=None,
    **overrides,
) -> History:
    """Trains `model` in place on images `x` (uint8 or [0, 1] floats) and labels `y` (indices or one-hot).

    Knobs not given come from the architecture's recipe (`RECIPES`); the validation split from `data` (what x and
    y are, recorded in the run folder), else DataConfig's. With `run_dir`, the run's config is written there
    first, and every epoch a checkpoint, history.csv and model.safetensors; `resume=True` continues from the
    checkpoint. Under torchrun each process trains on its own shard of every epoch (DistributedDataParallel).
    `generated` (images, labels) join the training part: non-digits as the model's last class, "not a digit", and
    digits as `preprocess` reads them from pictures (rejection.py)."""
    given = {"batch_size": batch_size, "epochs": epochs, "seed": seed, **overrides}
    given = {key: value for key, value in given.items() if value is not None}
    data = data or DataConfig(dataset=model.config.dataset)  # fit alone knows only the model's data set
    dataset = data.dataset if data.path is None else None
    config = recipe(model.config.arch, dataset, **{**(dataclasses.asdict(config) if config else {}), **given})
    if validation_split is not None:
        data = dataclasses.replace(data, validation_split=validation_split)
    images, labels = as_pixels(x, keep_uint8=True), torch.from_numpy(as_labels(y))
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    split_at = len(images) - int(len(images) * data.validation_split)
    if split_at < 1:
        raise ValueError("validation_split leaves no training examples")
    target = distributed.select_device(device)
    config = dataclasses.replace(config, precision=resolved_precision(config.precision, target))
    model.to(target)
    train_images, train_labels = images[:split_at].to(target), labels[:split_at].to(target)
    validation = (images[split_at:], labels[split_at:]) if split_at < len(images) else None
    if generated is not None:
        extra = as_pixels(generated[0], keep_uint8=train_images.dtype == torch.uint8).to(target)
        extra_labels = torch.from_numpy(as_labels(generated[1])).to(device=target, dtype=train_labels.dtype)
        train_images, train_labels = torch.cat([train_images, extra]), torch.cat([train_labels, extra_labels])

    world_size = distributed.world_size()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # data order and augmentation, same on every rank
    average = copy.deepcopy(model).eval() if config.ema_decay else None
    optimizer = make_optimizer(model, config)
    local_batch = max(1, config.batch_size // world_size)
    # What a checkpoint must be resumed with: the recipe and the held-out split, flat, as checkpoints have held it.
    settings = {**dataclasses.asdict(config), "validation_split": data.validation_split}
    rows: list[dict] = []
    start_epoch, elapsed_before = 0, 0.0
    # A plateau run's length is decided as it goes: None while the peak holds, then its epochs, the decay included.
    planned_epochs = None if config.schedule == "plateau" and config.epochs > 1 else config.epochs
    if resume:
        tensors, state = load_checkpoint(run_dir)
        if {"reject": False, **state["config"]} != settings:  # checkpoints from before `reject` lack it
            raise ModelError(f"the checkpoint in {run_dir} was made with another configuration; resume with no options")
        restore_checkpoint(tensors, model, average, optimizer, generator, state["param_groups"])
        start_epoch, rows, elapsed_before = state["epoch"], state["history"], state["seconds"]
        planned_epochs = state.get("planned_epochs", planned_epochs)
        if distributed.is_main():
            print(f"resuming {run_dir} after epoch {start_epoch}/{config.epochs}", file=sys.stderr)
    if run_dir is not None and distributed.is_main():
        spread = DistributedFacts(world_size, local_batch, local_batch * world_size, config.learning_rate)
        update_run_config(run_dir, data=data, train=config, model=model.config, distributed=spread, device=str(target))

    network = distributed.wrap(model)
    started = time.perf_counter()
    epoch = start_epoch
    while epoch < (planned_epochs or config.epochs):
        epoch_started = time.perf_counter()
        row = train_epoch(
            network,
            average,
            optimizer,
            generator,
            train_images,
            train_labels,
            epoch,
            local_batch,
            config,
            verbose,
            planned_epochs,
        )
        if validation is not None:
            row["val_loss"], row["val_accuracy"] = evaluate(average or model, *validation)
        row["seconds"] = round(time.perf_counter() - epoch_started, 3)
        rows.append(row)
        epoch += 1
        if planned_epochs is None and peak_should_end(rows, config, elapsed_before + time.perf_counter() - started):
            planned_epochs = epoch + 1  # one more: the decay
        if verbose and distributed.is_main():
            print(format_epoch(row, planned_epochs or config.epochs), file=sys.stderr, flush=True)
        if run_dir is not None and distributed.is_main():
            save_model_file(average or model, Path(run_dir) / WEIGHTS_FILE)
            write_history(run_dir, rows)
            state = {
                "epoch": epoch,
                "planned_epochs": planned_epochs,
                "config": settings,
                "history": rows,
                "param_groups": optimizer.state_dict()["param_groups"],
                "seconds": elapsed_before + time.perf_counter() - started,
            }
            save_checkpoint(run_dir, checkpoint_tensors(model, average, optimizer, generator), state)
    if average is not None:  # the averaged weights are the result
        model.load_state_dict(average.state_dict())
    distributed.share_buffers(model)
    model.eval()
    history = {key: [row[key] for row in rows if row.get(key) is not None] for key in rows[0] if key != "epoch"}
    return History(history, [row["epoch"] for row in rows], elapsed_before + time.perf_counter() - started)


# A tenth of a percentage point: an epoch at the peak that gains less is noise (5 of MNIST's 5,400 validation
# digits); an easy data set decays after a few epochs, a harder one keeps climbing by more.
PLATEAU_MIN_IMPROVEMENT = 0.001


def peak_should_end(rows: list[dict], config: TrainConfig, elapsed: float) -> bool:
    """Whether a plateau run decays next: after the warm-up epoch and one at the peak, validation accuracy did not
    beat its best by PLATEAU_MIN_IMPROVEMENT, or one more epoch at the peak would leave no room for the decay
    within `epochs` or `time_budget`. Every process decides alike."""
    epochs_done = len(rows)
    accuracies = [row["val_accuracy"] for row in rows if row.get("val_accuracy") is not None]
    stalled = len(accuracies) >= 3 and accuracies[-1] < max(accuracies[:-1]) + PLATEAU_MIN_IMPROVEMENT
    out_of_epochs = epochs_done + 2 > config.epochs
    slowest = max(row["seconds"] for row in rows)
    out_of_time = config.time_budget is not None and elapsed + 2 * slowest > config.time_budget
    decided = torch.tensor(float(stalled or out_of_epochs or out_of_time))
    return distributed.sum_tensor(decided).item() > 0  # one process short of time decides for all


def shard_indices(permutation: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This process's part of an epoch: every example goes to exactly one process."""
    return permutation[rank::world_size]


def train_epoch(
    network, average, optimizer, generator, images, labels, epoch, local_batch, config, verbose, planned_epochs
) -> dict:
    """One pass over this process's shard; returns the epoch's mean training loss and accuracy over all shards."""
    network.train()
    world_size = distributed.world_size()
    # The schedule counts the steps of the largest shard, so every process agrees on the learning rate.
    steps_per_epoch = math.ceil(math.ceil(len(images) / world_size) / local_batch)
    total_steps = steps_per_epoch * planned_epochs if planned_epochs is not None else None
    shard = shard_indices(torch.randperm(len(images), generator=generator), distributed.rank(), world_size)
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    progress = distributed.progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", verbose)
    with distributed.uneven_shards(network):  # a shard one batch shorter must not hang the others
        for step, start in enumerate(range(0, len(shard), local_batch)):
            indices = shard[start : start + local_batch].to(images.device)
            batch_labels = labels[indices]
            pixels = augment(as_pixels(images[indices]), config, generator)
            learning_rate = learning_rate_at(epoch * steps_per_epoch + step, total_steps, config, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            with autocast(images.device, config.precision):
                logits = network(pixels)
                loss = F.cross_entropy(logits, batch_labels, label_smoothing=config.label_smoothing, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            (loss / len(indices)).backward()
            optimizer.step()
            if average is not None:
                # Early on, a long average would mostly remember the random initial weights.
                global_step = epoch * steps_per_epoch + step
                update_average(average, unwrap(network), min(config.ema_decay, (1 + global_step) / (10 + global_step)))
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == batch_labels).sum()
            if progress is not None:
                progress.update()
    if progress is not None:
        progress.close()
    seen = distributed.sum_tensor(torch.tensor(float(len(shard)), device=images.device)).item()
    return {
        "epoch": epoch + 1,
        "loss": distributed.sum_tensor(loss_sum).item() / seen,
        "accuracy": distributed.sum_tensor(correct.float()).item() / seen,
        "learning_rate": learning_rate,
    }


# glibc's malloc gives a large block back to the system when it is freed (or trims the heap under it), so every
# training step's activations and gradients land on fresh pages, each first touch a page fault. Kept instead:
# blocks up to 32 MB (glibc's own ceiling for its moving threshold) come from the heap, and the heap is trimmed
# only past 1 GB free. benchmarks.levers measures what it buys.
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Has this process reuse the memory it frees rather than return it to the system: for a command that trains
    and then exits (it keeps its peak memory until then), not for a library call or the server. True if the C
    library took the settings (glibc: mallopt's M_MMAP_THRESHOLD -3 and M_TRIM_THRESHOLD -1)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt
        return False
    return bool(mallopt(-3, MMAP_THRESHOLD_BYTES)) and bool(mallopt(-1, TRIM_THRESHOLD_BYTES))


def resolved_precision(precision: str, device: torch.device) -> str:
    """ "auto" as this device trains: bfloat16 on a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX),
    where it is faster; float32 elsewhere (emulated bfloat16 is slower, and GPUs were not measured)."""
    if precision != "auto":
        return precision
    return "bfloat16" if device.type == "cpu" and native_bfloat16() else "float32"


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 itself (AVX512-BF16 or AMX) rather than emulating it."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def autocast(device: torch.device, precision: str):
    """The forward pass in `precision` where it pays (convolutions, matrix products); weights, gradients and the
    optimizer stay float32, and so does inference."""
    dtype = getattr(torch, precision)  # a Precision is a torch dtype's name
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    average_state, model_state = average.state_dict(), model.state_dict()
    for name, value in average_state.items():
        if value.is_floating_point():
            value.lerp_(model_state[name], 1 - decay)
        else:
            value.copy_(model_state[name])


def format_epoch(row: dict, epochs: int) -> str:
    parts = [f"epoch {int(row['epoch'])}/{epochs}", f"loss {row['loss']:.4f}", f"accuracy {row['accuracy']:.4f}"]
    if row.get("val_loss") is not None:
        parts += [f"val_loss {row['val_loss']:.4f}", f"val_accuracy {row['val_accuracy']:.4f}"]
    return "  ".join(parts + [f"lr {row['learning_rate']:.3g}", f"{row['seconds']:.1f}s"])
