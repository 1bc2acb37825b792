"""Architectures by name. Every model takes float pixels in [0, 1] shaped (N, 1, 28, 28) and returns logits;
input normalization lives inside the model so an exported model needs no preprocessing constants."""

import copy
import threading
import weakref
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .config import default_arch
from .model_config import ACTIVATIONS, ARCHITECTURE_NAMES, ModelConfig
from .pixels import as_pixels

# The tutorial's LeakyReLU variant; 0.1 is the slope such tutorials use (Keras' own default is 0.3).
LEAKY_RELU_SLOPE = 0.1


ARCHITECTURES: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register(name: str):
    if name not in ARCHITECTURE_NAMES:
        raise ValueError(f"architecture {name!r} is not listed in model_config.ARCHITECTURE_NAMES")

    def add(builder):
        ARCHITECTURES[name] = builder
        return builder

    return add


class Classifier(nn.Module):
    """A body from the registry behind a fixed input normalization; carries its ModelConfig as `.config`."""

    def __init__(self, config: ModelConfig, body: nn.Module):
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor(config.input_mean), persistent=False)
        self.register_buffer("std", torch.tensor(config.input_std), persistent=False)
        self.body = body

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, 1, 28, 28) in [0, 1] -> (N, classes)
        return self.body((pixels - self.mean) / self.std)


class Ensemble(nn.Module):
    """Trained models answering as one with the mean of their probabilities. Its "logits" are the log of that
    mean, so softmax gives it back and predict, evaluate, export and serve treat it as any other model. It lives with
    the architectures because loading any model builds it by name; ensemble.py makes one from trained models and
    holds the ensemble jobs."""

    def __init__(self, config: ModelConfig, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.config = config
        self.members = nn.ModuleList(members)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([F.softmax(member(pixels), dim=1) for member in self.members]).mean(dim=0)
        return probabilities.clamp_min(1e-12).log()


class Gated(nn.Module):
    """A digit reader behind a "not a digit" detector, answering as one model whose last class is "not a digit":
    the reader's ten probabilities scaled by the detector's probability that the image is a digit at all. The
    digits keep the reader's order, so its accuracy is the reader's: the detector costs digits only the ones it
    flags, and each network is trained and improved on its own. Each member answers at its own fitted temperature;
    the "logits" are log-probabilities, so softmax gives them back. `digitcnn ensemble READER --detector RUN`."""

    def __init__(self, config: ModelConfig, members: list[nn.Module]):
        super().__init__()
        if len(members) != 2:
            raise ValueError("a gated model is two networks: a digit reader and a detector")
        self.config = config
        self.members = nn.ModuleList(members)  # [reader, detector], the layout an Ensemble's weights have

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        reader, detector = self.members
        digits = F.log_softmax(reader(pixels) / reader.config.temperature, dim=1)  # (N, 10)
        judged = F.log_softmax(detector(pixels) / detector.config.temperature, dim=1)  # (N, 11): its last, not a digit
        is_digit = torch.logsumexp(judged[:, :-1], dim=1, keepdim=True)  # log(1 - p), without rounding to log(0)
        return torch.cat([digits + is_digit, judged[:, -1:]], dim=1)


# Models made of trained models, built from their members' configs.
COMPOSITES = {"ensemble": Ensemble, "gated": Gated}


def build_model(arch: str | None = None, activation: str = "relu", num_classes: int = 10, **config) -> Classifier:
    """Builds an untrained model by architecture name, by default the network `digitcnn train` trains for the
    `dataset` keyword's data set (MNIST's when none); extra keywords are ModelConfig fields."""
    arch = arch or default_arch(config.get("dataset"))
    if arch not in ARCHITECTURES and arch not in COMPOSITES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    model_config = ModelConfig(arch=arch, activation=activation, num_classes=num_classes, **config)
    if len(model_config.class_names) != num_classes:
        model_config.class_names = [str(index) for index in range(num_classes)]
    if arch in COMPOSITES:
        members = [build_model(**member) for member in model_config.members or []]
        model = COMPOSITES[arch](model_config, members)
    else:
        model = Classifier(model_config, ARCHITECTURES[arch](model_config))
    # oneDNN's preferred layout, faster on CPUs (benchmarks.levers measures it); the logits are unchanged.
    return model.to(memory_format=torch.channels_last)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def activation_layer(config: ModelConfig) -> nn.Module:
    if config.activation == "leaky_relu":
        return nn.LeakyReLU(LEAKY_RELU_SLOPE)
    return nn.ReLU()


class ByteDropout(nn.Module):
    """Dropout whose mask comes from random bytes: one 64-bit draw gives eight, so generating the mask costs less
    than nn.Dropout's bernoulli_ (benchmarks.levers measures both). The same distribution for any rate that is a
    multiple of 1/256 (0.25 and 0.5 are)."""

    def __init__(self, rate: float):
        super().__init__()
        if round(rate * 256) != rate * 256 or not 0 <= rate < 1:
            raise ValueError(f"ByteDropout needs a rate in [0, 1) that is a multiple of 1/256, not {rate}")
        self.rate = rate

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return features
        count = features.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((count + 7) // 8,), dtype=torch.int64, device=features.device)
        random_bytes = words.view(torch.uint8)[:count].view(features.shape)
        keep = random_bytes >= round(self.rate * 256)
        return features * keep.to(features.dtype) * (1 / (1 - self.rate))

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


@register("seed")
def seed_network(config: ModelConfig) -> nn.Module:
    """The tutorial's network, layer for layer: 2,076,554 parameters. With "leaky_relu" the convolutions are
    linear and each is followed by a LeakyReLU, as in the tutorial's variant."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        activation_layer(config),  # 26x26
        nn.Conv2d(32, 64, 3),
        activation_layer(config),  # 24x24
        nn.Conv2d(64, 128, 3),
        activation_layer(config),  # 22x22: most of the network's 97 MFLOP per image
        ByteDropout(0.25),
        nn.MaxPool2d(2),  # 11x11
        nn.Flatten(),
        nn.Linear(128 * 11 * 11, 128),
        activation_layer(config),
        ByteDropout(0.5),
        nn.Linear(128, config.num_classes),
    )


def conv_block(
    in_channels: int, out_channels: int, config: ModelConfig, padding: int = 1, stride: int = 1
) -> list[nn.Module]:
    # No bias: BatchNorm's shift makes it redundant.
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        activation_layer(config),
    ]


@register("fast")
def fast_network(config: ModelConfig) -> nn.Module:
    """Narrow and downsampled early, so most work runs at 14x14 and 7x7: 7.5 MFLOP per image, 1/13 of the
    seed network's, with BatchNorm for large learning rates. Chosen on the validation split
    (benchmarks/README.md has the measurements)."""
    return nn.Sequential(
        *conv_block(1, 16, config),  # 28x28
        nn.MaxPool2d(2),  # 14x14
        *conv_block(16, 32, config),
        *conv_block(32, 32, config),
        nn.MaxPool2d(2),  # 7x7
        *conv_block(32, 64, config),
        nn.MaxPool2d(2),  # 3x3
        nn.Flatten(),
        nn.Linear(64 * 3 * 3, config.num_classes),
    )


@register("strided")
def strided_network(config: ModelConfig) -> nn.Module:
    """`fast` with a cheaper stem: its first convolution steps 2 pixels, so nothing runs at 28x28 and the body
    is `fast`'s from 14x14 on. Almost the same FLOPs (a 1-channel convolution is little work either way); what
    goes is every pass over 28x28x16 activations, the BatchNorm, ReLU and pooling and their gradients, which on a
    CPU cost more than that convolution's arithmetic. For issue 20's time budget; benchmarks/README.md has how
    it did."""
    return nn.Sequential(
        *conv_block(1, 16, config, stride=2),  # 14x14
        *conv_block(16, 32, config),
        *conv_block(32, 32, config),
        nn.MaxPool2d(2),  # 7x7
        *conv_block(32, 64, config),
        nn.MaxPool2d(2),  # 3x3
        nn.Flatten(),
        nn.Linear(64 * 3 * 3, config.num_classes),
    )


@register("lean")
def lean_network(config: ModelConfig) -> nn.Module:
    """`fast` with less done at full size and at 14x14, for issue 20's time budget: the first convolution's output
    is pooled before its BatchNorm and ReLU (so they run at 14x14; its BatchNorm is not folded for inference), and
    the 32-channel convolution runs at 7x7. 4.7 MFLOP per image rather than 7.5, a training step ~1.4x faster,
    as accurate on the validation split (benchmarks/README.md)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),  # 28x28
        nn.MaxPool2d(2),  # 14x14
        nn.BatchNorm2d(16),
        activation_layer(config),
        *conv_block(16, 32, config),
        nn.MaxPool2d(2),  # 7x7
        *conv_block(32, 32, config),
        *conv_block(32, 64, config),
        nn.MaxPool2d(2),  # 3x3
        nn.Flatten(),
        nn.Linear(64 * 3 * 3, config.num_classes),
    )


@register("best")
def best_network(config: ModelConfig) -> nn.Module:
    """`fast` doubled in width and with a second convolution at 7x7: 44 MFLOP per image, 6x `fast` and under half
    the seed network's; with augmentation and a longer schedule, the accurate single model."""
    return nn.Sequential(
        *conv_block(1, 32, config),  # 28x28
        nn.MaxPool2d(2),  # 14x14
        *conv_block(32, 64, config),
        *conv_block(64, 64, config),
        nn.MaxPool2d(2),  # 7x7
        *conv_block(64, 128, config),
        *conv_block(128, 128, config),
        nn.MaxPool2d(2),  # 3x3
        nn.Flatten(),
        ByteDropout(0.25),
        nn.Linear(128 * 3 * 3, config.num_classes),
    )


@register("deep")
def deep_network(config: ModelConfig) -> nn.Module:
    """Two convolutions at every scale, the first pair at full 28x28 resolution before any pooling, and a global
    average over the last 7x7 instead of `best`'s flattened 3x3: 58 MFLOP per image. Built as an ensemble member
    unlike `best` (benchmarks/README.md has how it did)."""
    return nn.Sequential(
        *conv_block(1, 32, config),
        *conv_block(32, 32, config),  # 28x28
        nn.MaxPool2d(2),  # 14x14
        *conv_block(32, 64, config),
        *conv_block(64, 64, config),
        nn.MaxPool2d(2),  # 7x7
        *conv_block(64, 128, config),
        *conv_block(128, 128, config),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        ByteDropout(0.25),
        nn.Linear(128, config.num_classes),
    )


@register("unpooled")
def unpooled_network(config: ModelConfig) -> nn.Module:
    """Ten unpadded 3x3 convolutions, widening by 8 channels each, and no pooling: every layer sees the whole
    digit at full detail and the last 8x8 map keeps where each feature is. The shape of the 3x3 no-pooling
    members of An et al. (2020, "up to 99.87%" test accuracy for a vote of three), at half their width: 87 MFLOP
    per image, 2x `best`'s. Built to make mistakes other than `best`'s and `deep`'s (benchmarks/README.md has
    whether it does)."""
    widths = [16, 24, 32, 40, 48, 56, 64, 72, 80, 88]
    layers, channels = [], 1
    for width in widths:  # 28x28 -> 26x26 -> ... -> 8x8
        layers += conv_block(channels, width, config, padding=0)
        channels = width
    return nn.Sequential(*layers, nn.Flatten(), ByteDropout(0.25), nn.Linear(channels * 8 * 8, config.num_classes))


# Images per forward pass when predicting: on 2 cores, passes of 256 keep each layer's activations in cache and
# run faster than passes of 1,024 (benchmarks.onnx_vs_torch); larger batches a caller asks for are split to it.
INFERENCE_CHUNK = 256
_inference_copies: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()
_inference_copies_lock = threading.Lock()


def inference_network(model: nn.Module) -> nn.Module:
    """The model as it predicts: an eval-mode copy with each BatchNorm folded into the convolution before it (one
    pass over the activations fewer per block, the same logits to ~1e-6), made again whenever the weights change.
    The model itself while anything watches its layers (forward hooks, as the look-inside view's)."""
    if any(module._forward_hooks or module._forward_pre_hooks for module in model.modules()):
        return model
    # In-place updates (an optimizer step, load_state_dict) bump a tensor's version; replacing it moves its data.
    stamp = tuple((tensor.data_ptr(), tensor._version) for tensor in (*model.parameters(), *model.buffers()))
    with _inference_copies_lock:
        cached = _inference_copies.get(model)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    # Made outside inference mode (torch_logits runs in it), so the copy can also take gradients (a saliency).
    with torch.inference_mode(False):
        folded = fold_batchnorm(model)
    with _inference_copies_lock:
        _inference_copies[model] = (stamp, folded)
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` in which every BatchNorm2d that follows a Conv2d in a Sequential is folded
    into that convolution's weights and bias, and activations work in place (nothing needs their inputs without
    gradients)."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, nn.ReLU | nn.LeakyReLU):
            module.inplace = True
    for sequence in [module for module in folded.modules() if isinstance(module, nn.Sequential)]:
        layers: list[nn.Module] = []
        for layer in sequence:
            if isinstance(layer, nn.BatchNorm2d) and layers and isinstance(layers[-1], nn.Conv2d):
                layers[-1] = fuse_conv_bn_eval(layers[-1], layer)
            else:
                layers.append(layer)
        sequence._modules = {str(index): layer for index, layer in enumerate(layers)}
    return folded.to(memory_format=torch.channels_last)


@torch.inference_mode()
def torch_logits(model: nn.Module, images, batch_size: int = 1024) -> np.ndarray:
    """A PyTorch model's raw logits (N, classes) as float32, computed in eval mode (by its BatchNorm-folded copy,
    unless its layers are watched), with the model's own mode left as it was.

    `inference.predict_logits` is the one entry point (it runs exported models too); this is its PyTorch half,
    which ONNX validation compares against onnxruntime's."""
    pixels = as_pixels(images)
    network = inference_network(model)
    # Switching modes walks every submodule, a noticeable share of one served image's model time: only when needed.
    was_training = network.training
    if was_training:
        network.eval()
    try:
        device = next(network.parameters()).device
        step = min(batch_size, INFERENCE_CHUNK)
        batches = (pixels[start : start + step].to(device) for start in range(0, len(pixels), step))
        outputs = [network(batch).cpu() for batch in batches]
    finally:
        if was_training:
            network.train()
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, model.config.num_classes), np.float32)
