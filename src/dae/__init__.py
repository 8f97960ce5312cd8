"""dae: denoising autoencoders and stacked denoising autoencoders in PyTorch.

Faithful to the deeplearning.net tutorial (dA.py, SdA.py) and to Vincent et al. (2008, 2010).
"""

from .autoencoder import DenoisingAutoencoder
from .config import (SDA_PRESETS, ConfigError, DAConfig, DeepConfig, DeepRunConfig, FinetuneConfig, LadderConfig,
                     LadderRunConfig, SdAConfig, SdARunConfig, TrainingConfig, TrainRunConfig)
from .corruption import mask
from .data import DataError, Dataset, Split, load_data, load_mnist, read_idx
from .deep import DeepAutoencoder
from .experiments import run_deep, run_ladder, run_sda, run_train, run_tutorial
from .ladder import LadderNetwork
from .saving import ModelFileError, load_model, save_model
from .stacked import StackedDenoisingAutoencoder
from .train import (DeepEpoch, EpochResult, FinetuneEpoch, FinetuneResult, LadderEpoch, TrainingDiverged, TrainState,
                    error_rate, finetune, pretrain, train, train_deep, train_ladder)

__version__ = "0.2.0"

__all__ = [
    "SDA_PRESETS", "ConfigError", "DAConfig", "DataError", "Dataset", "DeepAutoencoder", "DeepConfig", "DeepEpoch",
    "DeepRunConfig", "DenoisingAutoencoder", "EpochResult",
    "FinetuneConfig", "FinetuneEpoch", "FinetuneResult", "LadderConfig", "LadderEpoch", "LadderNetwork",
    "LadderRunConfig", "ModelFileError", "SdAConfig", "SdARunConfig", "Split",
    "StackedDenoisingAutoencoder", "TrainRunConfig", "TrainState", "TrainingConfig", "TrainingDiverged",
    "error_rate", "finetune", "load_data", "load_mnist", "load_model", "mask", "pretrain", "read_idx", "run_ladder",
    "run_deep", "run_sda", "run_train", "run_tutorial", "save_model", "train", "train_deep", "train_ladder",
]
