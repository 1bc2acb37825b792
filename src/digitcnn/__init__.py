"""digitcnn: handwritten-digit recognition on PyTorch, with the words a Keras user knows.

from digitcnn import load_data, to_categorical, build_model, fit, evaluate, predict
digitcnn.read("number.png")["text"]  # every digit in an image, left to right
"""

from .config import DataConfig, RunConfig, TrainConfig
from .data import class_names, load_data, to_categorical
from .errors import DataError, DigitcnnError, ImageError, ModelError, NoDigitError
from .inference import evaluate, load_model, predict
from .models import build_model, count_parameters
from .recognize import read
from .runs import save_model
from .train import fit

__version__ = "0.1.0"
__all__ = [
    "DataConfig",
    "DataError",
    "DigitcnnError",
    "ImageError",
    "ModelError",
    "NoDigitError",
    "RunConfig",
    "TrainConfig",
    "build_model",
    "class_names",
    "count_parameters",
    "evaluate",
    "fit",
    "load_data",
    "load_model",
    "predict",
    "read",
    "save_model",
    "to_categorical",
]
