"""The errors a user can act on. The CLI prints them in one line and exits non-zero; the server maps them to 4xx."""


class DigitcnnError(Exception):
    """Base class: the message alone must tell the user what is wrong and, where possible, what to do."""


class DataError(DigitcnnError):
    """A data set or data file is missing, truncated, corrupt or of the wrong shape."""


class ImageError(DigitcnnError):
    """An image file cannot be read: not an image, truncated, unsupported format, or too many pixels."""


class ImageTooLargeError(ImageError):
    """An image whose pixel count (or byte size) exceeds the cap; refused before it is decoded."""


class UnsupportedImageError(ImageError):
    """Not an image at all, or an image in a format we do not read (the server answers 415)."""


class NoDigitError(ImageError):
    """The image was read but holds no ink that could be a digit (blank page, uniform colour)."""


class ModelError(DigitcnnError):
    """A model folder or file is missing, incomplete, or does not match its config."""


class NoLayersError(ModelError):
    """A model with no PyTorch layers to look inside: an exported ONNX file, or an ensemble of several networks."""


class TooManyDigitsError(ImageError):
    """More digits in one image than a reading takes (SegmentConfig.max_digits): refused, not truncated."""
