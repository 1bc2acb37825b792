"""What a model is, without PyTorch: its config (saved as config.json["model"] and in every model file) and the
names the command line offers. A leaf, so the command's help and an ONNX model's reading never import torch."""

import dataclasses
import sys

# Mean and standard deviation of the training pixels (in [0, 1]) of each data set; user data uses MNIST's.
INPUT_STATISTICS = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
ACTIVATIONS = ("relu", "leaky_relu")
# The architectures models.py registers, by name (models.register refuses a name not listed here).
ARCHITECTURE_NAMES = ("seed", "fast", "strided", "lean", "best", "deep", "unpooled")


@dataclasses.dataclass
class ModelConfig:
    """Everything needed to rebuild a model from its weights; saved as config.json["model"]."""

    arch: str = "fast"
    activation: str = "relu"
    num_classes: int = 10
    class_names: list[str] = dataclasses.field(default_factory=lambda: [str(digit) for digit in range(10)])
    dataset: str = "mnist"
    input_mean: float = INPUT_STATISTICS["mnist"][0]
    input_std: float = INPUT_STATISTICS["mnist"][1]
    # Softmax temperature fitted on the validation split (`digitcnn evaluate --report`); 1.0 means not fitted.
    temperature: float = 1.0
    # With a last "not a digit" class (rejection.py): the probability of it from which a reading says so, chosen
    # on the validation split. None: a model without that class (the default, and every model before it).
    not_a_digit_threshold: float | None = None
    # For arch "ensemble": each member's ModelConfig as a dict.
    members: list[dict] | None = None
    # A writer's hand undone before each digit is framed (writer.py): the slant (x per y) and the width factor
    # that `finetune` estimated from a person's samples. 0 and 1: digits are read as they come.
    writer_slant: float = 0.0
    writer_width: float = 1.0


def model_config_from_dict(values: dict) -> ModelConfig:
    known = {field.name for field in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{key: value for key, value in values.items() if key in known})


def is_torch_model(model) -> bool:
    """A PyTorch model trains, explains and joins an ensemble; an exported OnnxModel only predicts. Answered
    without importing PyTorch: nothing is a PyTorch model before PyTorch is imported."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)
