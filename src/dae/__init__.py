"""dae: denoising autoencoders and stacked denoising autoencoders in PyTorch.

Faithful to the deeplearning.net tutorial (dA.py) and to Vincent et al. (2008, 2010).
"""

from .autoencoder import DenoisingAutoencoder
from .corruption import mask
from .data import DataError, Dataset, Split, load_data, load_mnist, read_idx
from .saving import ModelFileError, load_model, save_model
from .train import EpochResult, TrainingDiverged, train

__version__ = "0.1.0"

__all__ = [
    "DataError", "Dataset", "DenoisingAutoencoder", "EpochResult", "ModelFileError", "Split",
    "TrainingDiverged", "load_data", "load_mnist", "load_model", "mask", "read_idx", "save_model", "train",
]
