"""MNIST's frame and the one input every model takes: float32 pixels in [0, 1] shaped (N, 1, 28, 28).
A leaf: it imports nothing of ours, so every module that holds images can use it without a circle."""

import numpy as np
import torch

SIDE = 28  # MNIST's frame, in pixels
IMAGE_SHAPE = (SIDE, SIDE)


def as_pixels(images, keep_uint8: bool = False) -> torch.Tensor:
    """Any image batch a user may hold -> (N, 1, 28, 28) float32 in [0, 1], on the device it came on.

    Accepts uint8 (scaled by 1/255) or float in [0, 1]; (28, 28), (N, 28, 28), Keras' (N, 28, 28, 1) or
    PyTorch's (N, 1, 28, 28); an array, a tensor or nested lists. With `keep_uint8`, uint8 stays uint8: training
    holds its data four times smaller and converts each batch as it is drawn."""
    shape_given = tuple(np.shape(images))
    tensor = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if tensor.dtype == torch.uint8:
        tensor = tensor if keep_uint8 else tensor.float().div_(255)
    elif tensor.is_floating_point():
        tensor = tensor.float()
    else:
        raise ValueError(f"images must be uint8 or float, not {tensor.dtype}")
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim == 4 and tensor.shape[-1] == 1 and tensor.shape[1] != 1:
        tensor = tensor[..., 0]
    if tensor.ndim == 3:
        tensor = tensor[:, None]
    if tensor.ndim != 4 or tensor.shape[1] != 1 or tuple(tensor.shape[2:]) != IMAGE_SHAPE:
        raise ValueError(
            f"images must be {SIDE}×{SIDE}, shaped (N, {SIDE}, {SIDE}) or (N, {SIDE}, {SIDE}, 1), not {shape_given}"
        )
    # Contiguous, so onnxruntime can take it as it is and a training set is indexed without strides.
    return tensor.contiguous()
