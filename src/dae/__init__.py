"""dae: denoising autoencoders and stacked denoising autoencoders in PyTorch.

Faithful to the deeplearning.net tutorial (dA.py) and to Vincent et al. (2008, 2010).
"""

from .autoencoder import DenoisingAutoencoder
from .corruption import mask
from .data import DataError, Dataset, Split, load_data, load_mnist, read_idx
from .saving import ModelFileError, load_model, save_model
from .stacked import StackedDenoisingAutoencoder
from .training import EpochResult, FinetuneResult, TrainingDiverged, finetune, pretrain, train

__version__ = "0.1.0"

__all__ = [
    "DataError", "Dataset", "DenoisingAutoencoder", "EpochResult", "FinetuneResult", "ModelFileError", "Split",
    "StackedDenoisingAutoencoder", "TrainingDiverged", "finetune", "load_data", "load_mnist", "load_model", "mask",
    "pretrain", "read_idx", "save_model", "train",
]
