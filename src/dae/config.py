"""Every setting of a run: its default, where the default comes from, and the rules between settings.

The one source of truth for hyper-parameters.  The command line, the Python API
(:func:`dae.train`, :func:`dae.pretrain`, :func:`dae.finetune`, :mod:`dae.experiments`) and the
scikit-learn estimators all read their defaults here, and :meth:`check` is the only place
where cross-setting rules live.

* :class:`DAConfig`, :class:`TrainingConfig`: one denoising autoencoder and its SGD
  (the tutorial's ``dA.py``, ``test_dA``); :class:`TrainRunConfig` adds the data, the seed, ...
* :class:`SdAConfig`, :class:`FinetuneConfig`: a stack and its supervised fine-tuning
  (the tutorial's ``SdA.py``, ``test_SdA``); :class:`SdARunConfig` puts them together.
* :data:`SDA_PRESETS`: the tutorial's SdA and our faster recipes.
* :class:`LadderConfig`, :class:`LadderRunConfig`: the ladder network of Rasmus et al. (2015).
* :class:`DeepConfig`, :class:`DeepRunConfig`: the deep autoencoder of Hinton & Salakhutdinov (2006).

Configs are frozen dataclasses, checked whenever one is made, so none holds a bad value.  :func:`to_dict` writes one with a ``version``;
:func:`from_dict` reads it back, filling any setting the dict lacks with its default (so a
checkpoint written before a setting existed still loads) and refusing unknown ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .autoencoder import ACTIVATIONS, LOSSES
from .corruption import NOISES
from .deep import CODE_ACTIVATIONS

CONFIG_VERSION = 1
OPTIMIZERS = ("sgd", "adam")

# Learning-rate schedules: the factor applied to the base rate at fraction t in [0, 1) of the run.
SCHEDULES = {
    "constant": lambda t: 1.0,  # the tutorial's
    "cosine": lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),  # Loshchilov & Hutter (2017), without restarts
    # Constant, then down linearly to zero over the last third: Rasmus et al. (2015), section 4.1
    # (100 epochs at 0.002, then 50 of "a final annealing phase").
    "anneal": lambda t: min(1.0, 3.0 * (1.0 - t)),
}

# Data without a validation split give this fraction of their training rows to it, drawn at random:
# MNIST's 10,000 of 60,000 (the tutorial's split).
VALIDATION_FRACTION = 1 / 6

# With --labels N, the fraction of the N held out for early stopping (the only labels it may
# look at): a fifth, drawn balanced over the classes like the N.
LABELLED_VALIDATION_FRACTION = 1 / 5

# Rows per chunk of an evaluation pass (errors, codes, scores, statistics): bounds its memory
# (4096 x 784 floats is 13 MB); training steps go by their own blocks (train.CHUNK_ROWS).
EVAL_ROWS = 4096

# A .npy file larger than this is streamed from disk in chunks rather than loaded (stream=None).
STREAM_BYTES = 2**30

# The reconstruction error that ranks rows as anomalies (one of dae.anomaly.SCORES), by default in
# `dae score` and dae.sklearn.AutoencoderOutlierDetector: chosen by benchmarks/one_class.py on
# validation data only, where on every autoencoder it ranked the anomalies better than the
# cross-entropy of the same reconstructions (mean validation AUROC 93.75% against 82.23%, 3 seeds; the
# cross-entropy mostly measures ink).
ANOMALY_SCORE = "squared-error"
# The weight w of the distance to the typical codes beside the reconstruction error
# (dae.anomaly.NeighbourScore; 0: the reconstruction error alone), chosen by the same benchmark on
# validation data only: of w = 0, 0.5, 1, 2, 4, w = 2 had the highest mean validation AUROC over
# the autoencoders (96.72% against 93.75% for the error alone, 3 seeds; the README's table); and the
# number of neighbours k: PyOD's KNN default, n_neighbors=5 (its method "mean", used here, is the
# weight of Angiulli & Pizzuti 2002 divided by k: the mean distance to the k nearest).
ANOMALY_CODE_WEIGHT = 2.0
ANOMALY_NEIGHBORS = 5


class ConfigError(ValueError):
    """A setting out of its range, two settings that contradict each other, or a bad config file."""


def learning_rate_at(config, epoch: int) -> float:
    """The learning rate of ``epoch`` (1-based) under the config's schedule."""
    return config.learning_rate * SCHEDULES[config.schedule]((epoch - 1) / config.epochs)


def refit_epochs(epochs: int, n_train: int, n_valid: int) -> int:
    """The fine-tuning epochs of a refit (:attr:`SdARunConfig.refit`) on ``n_train + n_valid`` rows:
    as many weight updates as ``epochs`` make on the ``n_train`` alone.  The protocol of Srivastava
    et al. (JMLR 2014), appendix B.1: the hyper-parameters chosen on the validation set, the net
    trained again on training and validation sets together for the same number of updates."""
    return max(1, round(epochs * n_train / (n_train + n_valid)))


# Pseudo-labels (Lee 2013, eq. 16): the weight of the unlabelled cost is 0 up to T1, rises linearly
# to alpha_f at T2, then stays.  Lee's T1 = 100 and T2 = 600 epochs (of far longer runs than ours)
# are here fractions of the fine-tuning run: it starts at a tenth of it, full weight from six tenths.
PSEUDO_LABEL_RAMP = (0.1, 0.6)


def pseudo_label_weight(config, epoch: int) -> float:
    """alpha(t) of ``epoch`` (1-based): the weight of the pseudo-label cost (Lee 2013, eq. 16)."""
    t, (t1, t2) = (epoch - 1) / config.epochs, PSEUDO_LABEL_RAMP
    return config.pseudo_labels * min(1.0, max(0.0, (t - t1) / (t2 - t1)))


def default_denoising_weights(n_hidden: int) -> tuple[float, ...]:
    """A ladder's lambda_l for the input, each of ``n_hidden`` hidden layers and the top: Rasmus
    et al. (2015)'s values for MNIST with few labels, 1000 and 10, then 0.1 for every layer above."""
    return (1000.0, 10.0, *(0.1,) * n_hidden)[: n_hidden + 2]


def default_corruption_levels(n_layers: int) -> tuple[float, ...]:
    """The tutorial's masking levels 0.1, 0.2, 0.3 (``SdA.py``), the last repeated for deeper stacks."""
    return tuple((0.1, 0.2, 0.3)[min(k, 2)] for k in range(n_layers))


class _Checked:
    """A config that cannot hold a bad value: every instance is checked when it is made."""

    def __post_init__(self) -> None:
        try:
            self.check()
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:  # a value of the wrong type, e.g. a string for a number
            raise ConfigError(f"bad setting in {type(self).__name__}: {e}") from None

    def check(self) -> None:
        raise NotImplementedError


class _Stack(_Checked):
    """A stack of dAs: ``hidden_layer_sizes`` and one masking level per layer for pre-training,
    ``corruption_levels``; None stands for the tutorial's (:func:`default_corruption_levels`)."""

    def __post_init__(self) -> None:
        if self.corruption_levels is None:
            object.__setattr__(self, "corruption_levels", default_corruption_levels(len(self.hidden_layer_sizes)))
        super().__post_init__()

    def check_layers(self) -> None:
        sizes, levels = self.hidden_layer_sizes, self.corruption_levels
        _require(len(sizes) >= 1 and all(_is_int(n) and n >= 1 for n in sizes),
                 "hidden_layer_sizes must be one or more positive integers")
        _require(len(levels) == len(sizes),
                 f"corruption_levels gives {len(levels)} levels for {len(sizes)} layers")
        _require(all(_in(p, 0, 1) for p in levels), "corruption_levels must be in [0, 1)")


# --- one denoising autoencoder -----------------------------------------------------------------


@dataclass(frozen=True)
class DAConfig(_Checked):
    """A denoising autoencoder (``dae.DenoisingAutoencoder``)."""

    n_hidden: int = 500  # tutorial, test_dA
    corruption_level: float = 0.3  # tutorial: 0.0 and 0.3
    noise: str = "masking"  # tutorial; Vincent et al. (2010) sec. 4.2 add gaussian, salt-and-pepper
    loss: str = "cross-entropy"  # tutorial, for inputs in [0, 1]
    activation: str = "sigmoid"  # tutorial
    tied: bool = True  # tutorial: W' = W^T
    sparsity_target: float = 0.05  # rho of Ng's sparse autoencoder notes (CS294A); used when weight > 0
    sparsity_weight: float = 0.0  # off, as in the tutorial
    contraction: float = 0.0  # off; Rifai et al. (2011), the tutorial's cA.py

    def check(self) -> None:
        _require(_is_int(self.n_hidden) and self.n_hidden >= 1, "n_hidden must be a positive integer")
        _require(_in(self.corruption_level, 0, 1), "corruption_level must be in [0, 1)")
        _require(self.noise in NOISES, f"noise must be one of {', '.join(NOISES)}")
        _require(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}")
        _require(self.activation in ACTIVATIONS, f"activation must be one of {', '.join(ACTIVATIONS)}")
        _require(0 < self.sparsity_target < 1, "sparsity_target must be in (0, 1)")
        _require(self.sparsity_weight >= 0 and self.contraction >= 0, "sparsity_weight and contraction must be >= 0")
        _require(not (self.sparsity_weight and self.activation != "sigmoid"),
                 "the sparsity penalty needs sigmoid codes (activation sigmoid)")


@dataclass(frozen=True)
class TrainingConfig(_Checked):
    """Minibatch SGD of one dA (``dae.train``), or of each dA of a stack (``dae.pretrain``).

    ``epochs`` and ``learning_rate`` may hold one value per layer for pre-training.
    """

    epochs: int | tuple[int, ...] = 15  # tutorial, test_dA (training_epochs)
    learning_rate: float | tuple[float, ...] = 0.1  # tutorial, test_dA
    batch_size: int = 20  # tutorial, test_dA
    optimizer: str = "sgd"  # tutorial; "adam": Kingma & Ba (2015)
    momentum: float = 0.0  # tutorial: plain SGD
    nesterov: bool = False
    weight_decay: float = 0.0  # L2 on the weights, not the biases, as torch.optim applies it
    schedule: str = "constant"  # tutorial
    shuffle: bool | None = False  # tutorial: minibatches in order; None: shuffled when streaming

    def check(self) -> None:
        for epochs in _values(self.epochs):
            _require(_is_int(epochs) and epochs >= 1, "epochs must be positive integers")
        for lr in _values(self.learning_rate):
            _require(_finite(lr) and lr > 0, "learning_rate must be positive")
        _require(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size must be a positive integer")
        _require(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        _require(_in(self.momentum, 0, 1), "momentum must be in [0, 1)")
        _require(not (self.nesterov and not self.momentum), "nesterov needs momentum")
        _require(not (self.optimizer == "adam" and self.momentum), "momentum is for sgd; adam has its own")
        _require(_finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay must be >= 0")
        _require(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}")

    @property
    def plain(self) -> bool:
        """True for the tutorial's method, plain SGD at a constant rate: the hand-written step's."""
        return self.optimizer == "sgd" and not self.momentum and not self.weight_decay and self.schedule == "constant"

    def for_layer(self, k: int, n_layers: int) -> TrainingConfig:
        """This config with the epochs and learning rate of layer ``k`` (0-based) of ``n_layers``."""
        return dataclasses.replace(self, epochs=_per_layer(self.epochs, k, n_layers, "epochs"),
                                   learning_rate=_per_layer(self.learning_rate, k, n_layers, "learning_rate"))


@dataclass(frozen=True)
class TrainRunConfig(_Checked):
    """A `dae train` / `dae tutorial` run: a dA, its training, and where and on what it runs."""

    model: DAConfig = field(default_factory=DAConfig)
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(shuffle=None))
    data: str = "mnist"  # the bundled MNIST, the tutorial's data
    image_size: tuple[int, int] | None = None  # (height, width) of a folder of images; None: the first image's
    seed: int = 123  # tutorial: numpy.random.RandomState(123)
    device: str = "auto"  # a GPU if there is one, else the CPU
    stream: bool | None = None  # None: stream .npy files over STREAM_BYTES
    checkpoint_every: int = 1  # epochs between checkpoints

    def check(self) -> None:
        self.model.check()
        self.training.check()
        _require(not isinstance(self.training.epochs, tuple) and not isinstance(self.training.learning_rate, tuple),
                 "one dA takes one epochs value and one learning_rate")
        _check_run(self)
        _require(_is_int(self.checkpoint_every) and self.checkpoint_every >= 1, "checkpoint_every must be positive")


# The tutorial's experiment (dA.py, test_dA): the same dA without and with 30% masking.
TUTORIAL_CORRUPTION_LEVELS = (0.0, 0.3)


# --- stacked denoising autoencoders --------------------------------------------------------------


@dataclass(frozen=True)
class SdAConfig(_Stack):
    """A stack of sigmoid layers pre-trained as dAs, with a softmax on top (``dae.StackedDenoisingAutoencoder``)."""

    hidden_layer_sizes: tuple[int, ...] = (1000, 1000, 1000)  # tutorial, test_SdA
    corruption_levels: tuple[float, ...] | None = None  # None: default_corruption_levels (the tutorial's)
    dropout: float = 0.0  # of hidden units while fine-tuning; Srivastava et al. (2014); not in the tutorial
    input_corruption: float = 0.0  # masking of the inputs while fine-tuning; not in the tutorial

    def check(self) -> None:
        self.check_layers()
        _require(_in(self.dropout, 0, 1) and _in(self.input_corruption, 0, 1),
                 "dropout and input_corruption must be in [0, 1)")


@dataclass(frozen=True)
class FinetuneConfig(_Checked):
    """Supervised fine-tuning of a stack (``dae.finetune``) with the tutorial's early stopping."""

    epochs: int = 1000  # the most epochs; tutorial, test_SdA (training_epochs)
    learning_rate: float = 0.1  # tutorial (finetune_lr)
    batch_size: int = 1  # tutorial
    momentum: float = 0.0  # tutorial: plain SGD
    schedule: str = "constant"  # tutorial
    shuffle: bool = False  # tutorial: minibatches in order
    patience_epochs: int = 10  # tutorial: patience = 10 * n_train_batches
    improvement_threshold: float = 0.995  # tutorial: a relative improvement of 0.5% is significant
    patience_increase: float = 2.0  # tutorial: patience = max(patience, iter * 2)
    # alpha_f, the weight of the pseudo-label cost on unlabelled rows (Lee 2013: 3); 0: none, the
    # tutorial's.  With it an epoch is a pass over the unlabelled rows (see dae.steps.PseudoLabelStep).
    pseudo_labels: float = 0.0

    def check(self) -> None:
        _require(_is_int(self.epochs) and self.epochs >= 1, "epochs must be a positive integer")
        _require(_finite(self.pseudo_labels) and self.pseudo_labels >= 0, "pseudo_labels must be 0 or more")
        _require(_finite(self.learning_rate) and self.learning_rate > 0, "learning_rate must be positive")
        _require(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size must be a positive integer")
        _require(_in(self.momentum, 0, 1), "momentum must be in [0, 1)")
        _require(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}")
        # The tutorial validates every min(n_train_batches, patience // 2) minibatches: once an
        # epoch, the only frequency done here, needs patience of at least two epochs.
        _require(_is_int(self.patience_epochs) and self.patience_epochs >= 2, "patience_epochs must be at least 2")
        _require(0 < self.improvement_threshold <= 1 and self.patience_increase >= 1,
                 "improvement_threshold must be in (0, 1] and patience_increase at least 1")


@dataclass(frozen=True)
class SdARunConfig(_Checked):
    """A `dae sda` run.  The defaults are exactly the tutorial's ``SdA.py``; see also :data:`SDA_PRESETS`."""

    model: SdAConfig = field(default_factory=SdAConfig)
    pretraining: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(epochs=15, learning_rate=0.001, batch_size=1))  # tutorial, test_SdA
    finetuning: FinetuneConfig = field(default_factory=FinetuneConfig)
    data: str = "mnist"
    image_size: tuple[int, int] | None = None  # (height, width) of a folder of images; None: the first image's
    seed: int = 89677  # tutorial: numpy.random.RandomState(89677)
    device: str = "auto"
    pretrain: bool = True  # False: the baseline, the same network and recipe from random weights
    pretrained: str | None = None  # a run's pretrained/ folder to fine-tune from, instead of pre-training
    labels: int | None = None  # fine-tune on this many labels, balanced (None: every training label)
    label_seed: int = 0  # the draw of those labels
    # True: learn from the validation rows too, once the recipe was chosen on them: pre-training and
    # fine-tuning see the training and validation rows together, without early stopping, for as
    # many fine-tuning updates as the recipe makes on the training rows (refit_epochs).
    refit: bool = False

    def check(self) -> None:
        self.model.check()
        self.pretraining.check()
        self.finetuning.check()
        _require(isinstance(self.refit, bool), "refit must be true or false")
        n = len(self.model.hidden_layer_sizes)
        for k in range(n):
            self.pretraining.for_layer(k, n)
        _check_run(self)
        _check_labels(self)


def _check_labels(config) -> None:
    _require(config.labels is None or (_is_int(config.labels) and config.labels >= 1),
             "labels must be a positive integer or all")
    _require(_is_int(config.label_seed) and 0 <= config.label_seed < 2**63,
             "label_seed must be a non-negative integer")


def _check_run(config) -> None:
    _require(_is_int(config.seed) and 0 <= config.seed < 2**63, "seed must be a non-negative integer")
    device = config.device
    _require(device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()),
             f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    size = config.image_size
    _require(size is None or (isinstance(size, tuple) and len(size) == 2 and all(_is_int(n) and n >= 1 for n in size)),
             f"image_size must be two positive integers, height and width, got {size!r}")


# --- the ladder network -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LadderConfig(_Checked):
    """A fully connected ladder network (``dae.LadderNetwork``); the defaults are Rasmus et al.
    (2015)'s MNIST model, section 4.1."""

    hidden_layer_sizes: tuple[int, ...] = (1000, 500, 250, 250, 250)
    noise_std: float = 0.3  # of the Gaussian noise on every layer of the corrupted path
    # ... and on its input; None: noise_std.  Their code's "super_noise_std", 0.3 in all their runs,
    # where its layers' noise is 0.3 with 100 labels and 0.2 with 1000 (its README's commands).
    input_noise_std: float | None = None
    denoising_weights: tuple[float, ...] | None = None  # None: default_denoising_weights
    # The denoising costs' gradient also reaches the clean path (its targets and their statistics):
    # their code's Theano differentiates the whole cost.  False: constant targets (dae before 2026-12-02).
    target_gradient: bool = True

    def __post_init__(self) -> None:
        if self.denoising_weights is None:
            object.__setattr__(self, "denoising_weights", default_denoising_weights(len(self.hidden_layer_sizes)))
        super().__post_init__()

    def check(self) -> None:
        sizes = self.hidden_layer_sizes
        _require(len(sizes) >= 1 and all(_is_int(n) and n >= 1 for n in sizes),
                 "hidden_layer_sizes must be one or more positive integers")
        _require(_finite(self.noise_std) and self.noise_std >= 0, "noise_std must be >= 0")
        _require(self.input_noise_std is None or (_finite(self.input_noise_std) and self.input_noise_std >= 0),
                 "input_noise_std must be >= 0 (or None: noise_std)")
        _require(len(self.denoising_weights) == len(sizes) + 2,
                 f"denoising_weights needs {len(sizes) + 2} values (the input, {len(sizes)} hidden layers, "
                 f"the top), got {len(self.denoising_weights)}")
        _require(all(_finite(w) and w >= 0 for w in self.denoising_weights), "denoising_weights must be >= 0")
        _require(isinstance(self.target_gradient, bool), "target_gradient must be true or false")


@dataclass(frozen=True)
class LadderRunConfig(_Checked):
    """A `dae ladder` run: Rasmus et al. (2015)'s recipe (Adam at 0.002, minibatches of 100
    labelled and 100 unlabelled examples, 150 epochs of which the last third anneal the rate to
    zero: their 100 + 50), not chosen on any labels."""

    model: LadderConfig = field(default_factory=LadderConfig)
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(
        epochs=150, learning_rate=0.002, batch_size=100, optimizer="adam", schedule="anneal", shuffle=True))
    data: str = "mnist"
    image_size: tuple[int, int] | None = None  # (height, width) of a folder of images; None: the first image's
    seed: int = 1234  # arbitrary and fixed: the seed of the runs in the README
    device: str = "auto"
    labels: int | None = 100  # labelled examples, balanced over the classes (None: every training label)
    label_seed: int = 0
    checkpoint_every: int = 1

    def check(self) -> None:
        self.model.check()
        self.training.check()
        _require(not isinstance(self.training.epochs, tuple) and not isinstance(self.training.learning_rate, tuple),
                 "a ladder takes one epochs value and one learning_rate")
        _require(self.training.batch_size >= 2, "a ladder's batch_size must be at least 2 (batch normalisation)")
        _check_run(self)
        _check_labels(self)
        _require(_is_int(self.checkpoint_every) and self.checkpoint_every >= 1, "checkpoint_every must be positive")


# --- the deep autoencoder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeepConfig(_Stack):
    """A deep autoencoder unrolled from a pre-trained stack (``dae.DeepAutoencoder``)."""

    hidden_layer_sizes: tuple[int, ...] = (1000, 500, 250, 30)  # Hinton & Salakhutdinov (2006), fig. 2
    code_activation: str = "linear"  # theirs: the top RBM had linear code units
    tied: bool = False  # theirs: encoder and decoder untied after unrolling
    loss: str = "cross-entropy"  # theirs for MNIST
    corruption_levels: tuple[float, ...] | None = None  # None: default_corruption_levels (the tutorial's SdA)

    def check(self) -> None:
        self.check_layers()
        _require(self.code_activation in CODE_ACTIVATIONS,
                 f"code_activation must be one of {', '.join(CODE_ACTIVATIONS)}")
        _require(isinstance(self.tied, bool), "tied must be true or false")
        _require(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}")


# The dA of a linear code layer is pre-trained at a fifth of the others' rate (when one rate is
# given for all layers; DeepRunConfig.layer_pretraining): its codes are
# unbounded, and at the sigmoid layers' 0.05 it diverged on the 5,000 eights of
# benchmarks/one_class.py (0.01 did not).  Hinton & Salakhutdinov's top RBM with linear units
# likewise learnt at a hundredth of their other RBMs' rate (their rbmhidlinear.m, 0.001, against
# rbm.m, 0.1).
LINEAR_CODE_RATE_FACTOR = 0.2


@dataclass(frozen=True)
class DeepRunConfig(_Checked):
    """A `dae deep` run: greedy pre-training of the stack as dAs (the SdA's default preset), then
    fine-tuning of the unrolled autoencoder on reconstruction by Adam, without noise."""

    model: DeepConfig = field(default_factory=DeepConfig)
    # Pre-training: the SdA's default preset's (10 epochs per layer at 0.05, minibatches of 20).
    # Fine-tuning: Adam at its usual 0.001 (Kingma & Ba 2015), minibatches of 100, a cosine decay;
    # a shorter trial was still improving on validation at its end, so the epochs are what fits
    # the 30 minutes on 2 cores: 80 (22 to 27 minutes on one thread beside another run).
    # Nothing was chosen on test data (benchmarks/deep_reconstruction.py prints the validation error).
    pretraining: TrainingConfig = field(default_factory=lambda: SDA_PRESETS["default"].pretraining)
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(  # fine-tuning
        epochs=80, learning_rate=1e-3, batch_size=100, optimizer="adam", schedule="cosine", shuffle=True))
    data: str = "mnist"
    image_size: tuple[int, int] | None = None  # (height, width) of a folder of images; None: the first image's
    seed: int = 2006  # arbitrary and fixed (the year of Hinton & Salakhutdinov)
    device: str = "auto"
    pretrain: bool = True  # False: the baseline, the same network and recipe from random weights
    checkpoint_every: int = 1  # epochs between checkpoints, in either phase

    @property
    def layer_pretraining(self) -> TrainingConfig:
        """What pre-training uses: ``pretraining``, where one learning rate is given for every
        layer, with a linear code layer's dA at :data:`LINEAR_CODE_RATE_FACTOR` times it; rates
        given one per layer are used as they are."""
        rate = self.pretraining.learning_rate
        if isinstance(rate, tuple) or self.model.code_activation != "linear":
            return self.pretraining
        n = len(self.model.hidden_layer_sizes)
        rates = (rate,) * (n - 1) + (rate * LINEAR_CODE_RATE_FACTOR,)
        return dataclasses.replace(self.pretraining, learning_rate=rates)

    def check(self) -> None:
        self.model.check()
        self.pretraining.check()
        self.training.check()
        n = len(self.model.hidden_layer_sizes)
        for k in range(n):
            self.pretraining.for_layer(k, n)
        _require(not isinstance(self.training.epochs, tuple) and not isinstance(self.training.learning_rate, tuple),
                 "fine-tuning takes one epochs value and one learning_rate")
        _check_run(self)
        _require(_is_int(self.checkpoint_every) and self.checkpoint_every >= 1, "checkpoint_every must be positive")


# --- to and from dicts and files -----------------------------------------------------------------


def to_dict(config) -> dict:
    """The config as plain JSON types, with its version."""
    return {"version": CONFIG_VERSION, **_plain(config)}


def from_dict(cls, data: dict, *, base=None):
    """A ``cls`` config from ``data`` (as :func:`to_dict` writes it, or any part of it): settings
    that ``data`` lacks keep those of ``base`` (default: ``cls()``), unknown ones are refused."""
    if not isinstance(data, dict):
        raise ConfigError(f"a {cls.__name__} must be a table of settings, got {type(data).__name__}")
    data = dict(data)
    version = data.pop("version", CONFIG_VERSION)
    if not _is_int(version) or version > CONFIG_VERSION:
        raise ConfigError(f"config version {version!r} is newer than this dae's ({CONFIG_VERSION})")
    return _build(cls, data, base if base is not None else cls(), "")  # checked as it is made


def merge(config, changes: dict):
    """``config`` with the settings in ``changes`` (nested dicts for nested configs) replaced, checked."""
    return from_dict(type(config), changes, base=config)


def load_config_file(path: str | Path, cls, base=None):
    """A ``cls`` config from a JSON or TOML file (by its suffix), over ``base`` (default: ``cls()``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not a valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} file ({e})"
                          ) from None
    if isinstance(data, dict) and "config" in data and isinstance(data["config"], dict):
        data = data["config"]  # a run's summary.json holds its config under "config"
    try:
        return from_dict(cls, data, base=base)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _build(cls, data: dict, base, where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting {where}{unknown[0]}")
    values = {}
    for name, value in data.items():
        current = getattr(base, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{name} must be a table of settings")
            values[name] = _build(type(current), value, current, f"{where}{name}.")
        else:
            values[name] = _coerce(value, current, known[name], f"{where}{name}")
    if (isinstance(base, _Stack) and "hidden_layer_sizes" in values
            and "corruption_levels" not in values):
        values["corruption_levels"] = None  # a new depth takes the default levels for that depth
    if isinstance(base, LadderConfig) and "hidden_layer_sizes" in values and "denoising_weights" not in values:
        values["denoising_weights"] = None  # likewise the default weights
    return dataclasses.replace(base, **values)


def _coerce(value, current, f: dataclasses.Field, name: str):
    """``value`` as the type the field holds (lists become tuples, ints may stand for floats)."""
    kinds = str(f.type)
    if value is None:
        if "None" not in kinds:
            raise ConfigError(f"{name} cannot be empty")
        return None
    if isinstance(value, (list, tuple)):  # a tuple is what the config itself holds
        if "tuple" not in kinds:
            raise ConfigError(f"{name} takes one value, not a list")
        return tuple(_scalar(v, "float" if "float" in kinds else "int", name) for v in value)
    for kind in ("bool", "int", "float", "str"):
        if kind in kinds.replace("tuple[int", "").replace("tuple[float", ""):
            return _scalar(value, kind, name)
    return value


def _scalar(value, kind: str, name: str):
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: _is_int(v),
          "float": lambda v: _is_int(v) or (isinstance(v, float) and math.isfinite(v)),
          "str": lambda v: isinstance(v, str)}[kind]
    if not ok(value):
        what = {"bool": "true or false", "int": "an integer", "float": "a finite number", "str": "a string"}[kind]
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return float(value) if kind == "float" else value


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _in(v, low: float, high: float) -> bool:
    """low <= v < high."""
    return _finite(v) and low <= v < high


def _values(v) -> tuple:
    return v if isinstance(v, tuple) else (v,)


def _per_layer(value, k: int, n: int, name: str):
    if not isinstance(value, tuple):
        return value
    if len(value) == 1:
        return value[0]
    _require(len(value) == n, f"{name}: {len(value)} values for {n} layers")
    return value[k]


# --- presets ---------------------------------------------------------------------------------------

# Our recipes beside the tutorial's.  The reasons and the measurements are in the README.
SDA_PRESETS = {
    "tutorial": SdARunConfig(),
    # For 15 minutes on 2 cores: the tutorial's network, noise and seed; minibatches of 20 for
    # pre-training (the dA tutorial's) and 100 for fine-tuning, so that the work is matrix-matrix
    # products; momentum 0.9, a cosine decay, shuffling, and two regularisers that stand in for
    # the noise of batch-1 steps: 10% input masking and dropout 0.2.
    "default": SdARunConfig(
        model=SdAConfig(dropout=0.2, input_corruption=0.1),
        pretraining=TrainingConfig(epochs=10, learning_rate=0.05, batch_size=20),
        finetuning=FinetuneConfig(epochs=80, learning_rate=0.1, batch_size=100, momentum=0.9, schedule="cosine",
                                  shuffle=True)),
    # For the lowest error in an hour: 15 pre-training epochs (the tutorial's count), about three
    # times the fine-tuning, and the dropout nets' regularisation (Srivastava et al. (2014): drop
    # 50% of the hidden units and 20% of the inputs, with a larger learning rate).  The cosine
    # schedule runs to its end (patience of 250 epochs): the best validation points came late.
    # Chosen among candidates by validation error (benchmarks/sda_presets.py; the README).  Then
    # refit: the chosen recipe learns from the validation rows too, as Srivastava et al. (2014,
    # appendix B.1) did for their MNIST figures (SdARunConfig.refit); --no-refit keeps them out.
    "best": SdARunConfig(
        model=SdAConfig(dropout=0.5, input_corruption=0.2),
        pretraining=TrainingConfig(epochs=15, learning_rate=0.05, batch_size=20),
        finetuning=FinetuneConfig(epochs=250, learning_rate=0.3, batch_size=100, momentum=0.9, schedule="cosine",
                                  shuffle=True, patience_epochs=250),
        refit=True),
}
