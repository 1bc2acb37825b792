"""Look inside a network: what each convolution block and each pooling step makes of one digit, as small greyscale
tiles, with the class scores and the integrated-gradients saliency over the input. The page's "look inside" view
(POST /api/inside) and `digitcnn explain --layers` both draw what `look_inside` returns."""

import base64
import dataclasses
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import InsideConfig
from .errors import NoLayersError
from .explain import integrated_gradients
from .metrics import softmax
from .model_config import is_torch_model
from .models import ByteDropout, Classifier, Ensemble, Gated, inference_network, torch_logits
from .pixels import SIDE, as_pixels

# Modules that belong to the convolution block they follow: a block's tiles are its last one's output, what the
# next layer sees. Dropout is the identity at inference, so it neither ends a block nor is shown.
BLOCK_PARTS = (nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU)
DROPOUTS = (nn.Dropout, nn.Dropout2d, ByteDropout)
POOLINGS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)
# The tutorial's network, trained by its recipe (scripts/ship_seed_model.sh), so the page can show it at work.
TUTORIAL_MODEL = Path(__file__).parent / "weights" / "seed.safetensors"
TILE_SCALING = "per layer: 0 is the lower of 0 and the layer's lowest shown value (low), 255 its highest (high)"


@dataclasses.dataclass
class Step:
    """One row of the view: a convolution block (its Conv2d and the modules after it) or a pooling step."""

    name: str  # the first module's name in the model's body, e.g. "4"
    kind: str  # "convolution" or "pooling"
    first: nn.Module  # the Conv2d or the pooling module, which the label describes
    last: nn.Module  # whose output the tiles show
    parts: list[str]  # the block's module types in order, e.g. ["Conv2d", "BatchNorm2d", "ReLU"]


@dataclasses.dataclass
class LayerView:
    """One row as the page draws it."""

    name: str
    kind: str
    label: str  # as "Conv2d 3×3, 32 → 64, 14×14"
    parts: list[str]
    shape: tuple[int, int, int]  # the whole output: channels, height, width
    channels: list[int]  # the channels shown, in channel order
    tiles: np.ndarray  # uint8 (len(channels), height, width)
    low: float  # the activations that tile values 0 and 255 stand for (TILE_SCALING)
    high: float

    def as_dict(self) -> dict:
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {**fields, "shape": list(self.shape), "tiles": base64.b64encode(self.tiles.tobytes()).decode("ascii")}


@dataclasses.dataclass
class InsideView:
    """What `look_inside` returns: the whole view for one digit."""

    arch: str
    input: np.ndarray  # (28, 28) float32 in [0, 1]: what the model saw
    layers: list[LayerView]
    class_names: list[str]
    logits: np.ndarray  # (classes,)
    probabilities: np.ndarray  # (classes,), softmax at the model's fitted temperature, as `predict` gives
    target: int  # the class the saliency explains: the predicted one unless asked otherwise
    saliency: np.ndarray  # (28, 28) float32: integrated gradients of logit[target]

    def as_dict(self) -> dict:
        """JSON-ready: tiles as base64 of their raw bytes; the scores are the caller's (the page's /api/inside
        answers with the same reading as /api/predict beside this)."""
        return {
            "arch": self.arch,
            "class_names": self.class_names,
            "logits": [round(float(value), 4) for value in self.logits],
            "saliency_target": self.target,
            "saliency": [[round(float(value), 5) for value in row] for row in self.saliency],
            "input": [[round(float(value), 3) for value in row] for row in self.input],
            "tile_scaling": TILE_SCALING,
            "layers": [layer.as_dict() for layer in self.layers],
        }


def network_shown(model):
    """The network whose layers the view shows: the model, or a gated model's reader (its detector only judges
    whether the image is a digit at all)."""
    return model.members[0] if isinstance(model, Gated) else model


def layers_to_show(model) -> list[Step]:
    """The convolution blocks and pooling steps of a model's body (`network_shown`'s), in the order they run."""
    if not is_torch_model(model):
        raise NoLayersError(
            "an exported ONNX model runs in onnxruntime and has no layers to show: "
            "look inside its run folder or .safetensors file instead"
        )
    model = network_shown(model)
    if isinstance(model, Ensemble):
        raise NoLayersError(
            f"an ensemble of {len(model.members)} networks has no one set of layers to show: "
            "look inside one of its members instead"
        )
    if not isinstance(model, Classifier) or not isinstance(model.body, nn.Sequential):
        raise NoLayersError(f"a {type(model).__name__} has no sequential body of layers to show")
    steps: list[Step] = []
    block = None
    for name, module in model.body.named_children():
        if isinstance(module, nn.Conv2d):
            block = Step(name, "convolution", module, module, [type(module).__name__])
            steps.append(block)
        elif block is not None and isinstance(module, BLOCK_PARTS):
            block.last = module
            block.parts.append(type(module).__name__)
        elif isinstance(module, DROPOUTS):
            continue
        elif isinstance(module, POOLINGS):
            # A BatchNorm or activation right after a pooling step (`lean` pools its first convolution before
            # them) belongs to that step: its view is what the next convolution reads.
            block = Step(name, "pooling", module, module, [type(module).__name__])
            steps.append(block)
        else:
            block = None
    if not steps:
        raise NoLayersError(f"the {model.config.arch} network has no convolution or pooling layers to show")
    return steps


def label(step: Step, shape: tuple[int, int, int]) -> str:
    """ "Conv2d 3×3, 32 → 64, 14×14", "MaxPool2d 2×2, 64 channels, 7×7": the type and the output's shape."""
    channels, height, width = shape
    module = step.first
    if isinstance(module, nn.Conv2d):
        kernel = "×".join(map(str, module.kernel_size))
        return f"Conv2d {kernel}, {module.in_channels} → {module.out_channels}, {height}×{width}"
    kernel = getattr(module, "kernel_size", None)  # adaptive pooling has none: it fixes its output's size instead
    window = ""
    if kernel is not None:
        window = " " + "×".join(map(str, kernel if isinstance(kernel, tuple) else (kernel, kernel)))
    return f"{type(module).__name__}{window}, {channels} channels, {height}×{width}"


def tiles_of(activations: torch.Tensor, most: int) -> tuple[list[int], np.ndarray, float, float]:
    """(channels, height, width) floats -> the channels shown (all, or the `most` most active by mean activation,
    in channel order), their maps as uint8 scaled per layer, and the activations 0 and 255 stand for."""
    count = activations.shape[0]
    if count > most:
        chosen = torch.argsort(activations.mean(dim=(1, 2)), descending=True, stable=True)[:most]
        chosen = chosen.sort().values
    else:
        chosen = torch.arange(count)
    shown = activations[chosen].float()
    # One scale for the whole layer, so a weakly responding channel looks weak beside a strong one.
    low, high = min(0.0, float(shown.min())), float(shown.max())
    if high <= low:
        tiles = torch.zeros(shown.shape, dtype=torch.uint8)
    else:
        tiles = ((shown - low) * (255 / (high - low))).round_().clamp_(0, 255).to(torch.uint8)
    return chosen.tolist(), tiles.numpy(), low, high


def look_inside(model, image, target: int | None = None, config: InsideConfig | None = None) -> InsideView:
    """What `model` (a PyTorch Classifier, or a reader behind a detector) makes of one preprocessed 28×28 digit
    (floats in [0, 1]): each convolution block's and pooling step's output as tiles (a gated model's reader's),
    the scores, and the saliency of class `target` (default: the predicted class), both of the whole model.
    Raises NoLayersError for an ONNX model or an ensemble."""
    config = config or InsideConfig()
    steps = layers_to_show(model)
    pixels = as_pixels(image)
    if pixels.shape[0] != 1:
        raise ValueError(f"look_inside takes one {SIDE}×{SIDE} image, not {tuple(np.shape(image))}")
    outputs: dict[int, torch.Tensor] = {}
    # The server reads other images with the same model in other threads: keep only this thread's outputs.
    owner = threading.get_ident()

    def keeper(index: int):
        def keep(module, inputs, output):
            if threading.get_ident() == owner:
                outputs[index] = output[0].detach()  # the batch's one image: (channels, height, width)

        return keep

    handles = [step.last.register_forward_hook(keeper(index)) for index, step in enumerate(steps)]
    try:
        logits = torch_logits(model, pixels)[0]
    finally:
        for handle in handles:
            handle.remove()
    layers = []
    for index, step in enumerate(steps):
        activations = outputs[index]
        shape = tuple(activations.shape)
        channels, tiles, low, high = tiles_of(activations, config.tiles_per_layer)
        layers.append(
            LayerView(step.name, step.kind, label(step, shape), step.parts, shape, channels, tiles, low, high)
        )
    target = int(logits.argmax()) if target is None else int(target)
    # On the BatchNorm-folded copy predict runs: the same function, without BatchNorm's passes forward and back.
    saliency = integrated_gradients(inference_network(model), pixels[0, 0], target=target, steps=config.saliency_steps)
    probabilities = softmax(logits, model.config.temperature).astype(np.float32)
    return InsideView(
        network_shown(model).config.arch,
        pixels[0, 0].numpy(),
        layers,
        list(model.config.class_names),
        logits,
        probabilities,
        target,
        saliency,
    )
