"""digitcnn: handwritten-digit recognition on PyTorch, with the words a Keras user knows.

from digitcnn import load_data, to_categorical, build_model, fit, evaluate, predict
digitcnn.read("number.png")["text"]  # every digit in an image, left to right
"""

import importlib

__version__ = "0.1.0"
# Each name and the module it comes from, imported when first asked for (PEP 562): `digitcnn --help` and reading
# an ONNX model never wait for PyTorch's import.
_SOURCES = {
    "DataConfig": "config",
    "RunConfig": "config",
    "TrainConfig": "config",
    "class_names": "data",
    "load_data": "data",
    "to_categorical": "data",
    "DataError": "errors",
    "DigitcnnError": "errors",
    "ImageError": "errors",
    "ModelError": "errors",
    "NoDigitError": "errors",
    "evaluate": "inference",
    "load_model": "inference",
    "predict": "inference",
    "build_model": "models",
    "count_parameters": "models",
    "read": "recognize",
    "save_model": "runs",
    "fit": "train",
}
__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'digitcnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
    globals()[name] = value  # asked once: later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES])
