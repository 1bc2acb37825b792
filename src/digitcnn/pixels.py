"""MNIST's frame and the one input every model takes: float32 pixels in [0, 1] shaped (N, 1, 28, 28).
A leaf: it imports nothing of ours, so every module that holds images can use it without a circle. PyTorch is
imported only for a tensor's sake: `pixel_array` serves onnxruntime, which needs none."""

import numpy as np

SIDE = 28  # MNIST's frame, in pixels
IMAGE_SHAPE = (SIDE, SIDE)


def pixel_array(images, keep_uint8: bool = False) -> np.ndarray:
    """Any image batch a user may hold -> (N, 1, 28, 28) float32 in [0, 1], as a contiguous numpy array.

    Accepts uint8 (scaled by 1/255) or float in [0, 1]; (28, 28), (N, 28, 28), Keras' (N, 28, 28, 1) or
    PyTorch's (N, 1, 28, 28); an array or nested lists. With `keep_uint8`, uint8 stays uint8."""
    shape_given = tuple(np.shape(images))
    array = np.asarray(images)
    if array.dtype == np.uint8:
        array = array if keep_uint8 else array.astype(np.float32) / np.float32(255)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    else:
        raise ValueError(f"images must be uint8 or float, not {array.dtype}")
    return np.ascontiguousarray(batch_shaped(array, shape_given))


def as_pixels(images, keep_uint8: bool = False):
    """`pixel_array` as a torch.Tensor, and a tensor (on the device it came on) likewise. With `keep_uint8`,
    training holds its data four times smaller and converts each batch as it is drawn."""
    import torch

    if not isinstance(images, torch.Tensor):
        return torch.from_numpy(pixel_array(images, keep_uint8))
    shape_given, tensor = tuple(images.shape), images
    if tensor.dtype == torch.uint8:
        tensor = tensor if keep_uint8 else tensor.float().div_(255)
    elif tensor.is_floating_point():
        tensor = tensor.float()
    else:
        raise ValueError(f"images must be uint8 or float, not {tensor.dtype}")
    # Contiguous, so a training set is indexed without strides.
    return batch_shaped(tensor, shape_given).contiguous()


def batch_shaped(pixels, shape_given: tuple):
    """A numpy array or tensor of one image or a batch, in any of the layouts above -> (N, 1, 28, 28)."""
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim == 4 and pixels.shape[-1] == 1 and pixels.shape[1] != 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    if pixels.ndim != 4 or pixels.shape[1] != 1 or tuple(pixels.shape[2:]) != IMAGE_SHAPE:
        raise ValueError(
            f"images must be {SIDE}×{SIDE}, shaped (N, {SIDE}, {SIDE}) or (N, {SIDE}, {SIDE}, 1), not {shape_given}"
        )
    return pixels
