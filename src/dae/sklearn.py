"""scikit-learn estimators: a denoising autoencoder and a deep autoencoder as transformers; an SdA
and a ladder network as classifiers that learn from unlabelled rows too; an outlier detector that
scores rows by how badly an autoencoder reconstructs them.

They follow scikit-learn's conventions (``BernoulliRBM`` is the closest relative): the
constructor stores its parameters untouched; ``fit`` validates its input and sets the learned
attributes, which end in an underscore; ``random_state`` makes every fit repeatable.  All
pass ``sklearn.utils.estimator_checks.check_estimator`` (the classifiers but for one case, below)
and work in ``Pipeline`` and ``GridSearchCV``.

Unlabelled rows.  The classifiers take scikit-learn's semi-supervised convention
(``SelfTrainingClassifier``, ``LabelSpreading``): in an integer or float ``y``, -1
(:data:`dae.data.UNLABELLED`) marks a row without a label.  Every row of X is unlabelled data
(the SdA pre-trains on it, the ladder denoises it); only the labelled rows are learned as
classes, so ``classes_`` never holds -1.  The rules are the command line's, from the same
functions (:func:`dae.data.semi_supervised_splits`, :func:`dae.data.hold_out_labelled`).  So -1
is never a class: ``y`` in {-1, 1} holds one labelled class, an error (scikit-learn's
``check_classifiers_classes`` fits such a ``y`` as two classes, and exempts its own
semi-supervised classifiers from that case by name).  String labels have no unlabelled marker.

Inputs outside [0, 1].  The cross-entropy loss treats each input as the probability of a
pixel being on, so it needs values in [0, 1].  Data already in [0, 1] (pixels / 255, say)
are used as they are.  Other data are mapped into [0, 1] by one affine map learned in
``fit`` from the training data's overall minimum and maximum (one map for all features, so
images keep their relative intensities); ``transform`` and friends apply the same map and
clip what falls outside.  With ``loss="squared-error"`` (a linear decoder) inputs are used as
they are.  ``input_range_`` records the (minimum, maximum) that maps to [0, 1].

Requires scikit-learn (``pip install scikit-learn``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.base import (BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin, OutlierMixin,
                          TransformerMixin, clone)
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .anomaly import (NeighbourScore, check_code_weight, check_contamination, check_n_neighbors, check_score, codes,
                      reconstruction_errors, threshold_from_contamination)
from .autoencoder import DenoisingAutoencoder
from .config import (ANOMALY_CODE_WEIGHT, ANOMALY_NEIGHBORS, ANOMALY_SCORE, SDA_PRESETS, VALIDATION_FRACTION,
                     DeepRunConfig, LadderRunConfig, TrainRunConfig, merge)
from .deep import DeepAutoencoder
from .distributed import resolve_device
from .data import UNLABELLED, Dataset, Split, hold_out_labelled, semi_supervised_splits, split_validation
from .ladder import LadderNetwork
from .stacked import StackedDenoisingAutoencoder
from .train import finetune, pretrain, train, train_deep, train_ladder

# The estimators' defaults are those of `dae train`, of `dae sda`'s default preset, of
# `dae ladder` and of `dae deep`, read from dae.config (scikit-learn needs them written out in each __init__; a
# test checks they agree).
DA, SDA, LADDER, DEEP = TrainRunConfig(), SDA_PRESETS["default"], LadderRunConfig(), DeepRunConfig()

__all__ = ["AutoencoderOutlierDetector", "DAETransformer", "DeepAutoencoderTransformer", "LadderClassifier",
           "SdAClassifier"]


class _UnitInterval:
    """The affine map of the training data into [0, 1] used with cross-entropy (see above)."""

    def fit_range(self, X: np.ndarray, needed: bool) -> None:
        lo, hi = (float(X.min()), float(X.max())) if needed else (0.0, 1.0)
        self.input_range_ = (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi)

    def to_tensor(self, X: np.ndarray, clip: bool = True) -> torch.Tensor:
        """X through the map; ``clip=False`` keeps what falls outside [0, 1] (for anomaly scores)."""
        lo, hi = self.input_range_
        x = torch.tensor(np.asarray(X, dtype=np.float32))
        if (lo, hi) != (0.0, 1.0):
            x = (x - lo) / max(hi - lo, np.finfo(np.float32).tiny)
            x = x.clamp_(0.0, 1.0) if clip else x
        return x


def _ints(values) -> list:
    """A list of sizes, NumPy integers (e.g. from a parameter grid) as Python ints; anything else
    as it is, for the config to accept or refuse."""
    return [int(v) if isinstance(v, np.integer) else v for v in values]


def _seed(random_state) -> int:
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _labels(estimator, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes_, codes): the classes of the labelled rows, and each row's index into them, or
    :data:`~dae.data.UNLABELLED` for a row that integer or float ``y`` marks unlabelled (-1)."""
    check_classification_targets(y)
    name = type(estimator).__name__
    unlabelled = y == UNLABELLED if y.dtype.kind in "iuf" else np.zeros(len(y), dtype=bool)
    if unlabelled.all():
        raise ValueError(f"{name}: every row of y is {UNLABELLED} (unlabelled); it needs labelled samples of at "
                         f"least 2 classes")
    if unlabelled.any() and (y[~unlabelled] < 0).any():
        raise ValueError(f"{name}: y marks unlabelled rows with {UNLABELLED}, and then the other labels must be >= 0; "
                         f"got {y[~unlabelled].min().item()!r}")
    encoder = LabelEncoder().fit(y[~unlabelled])
    if len(encoder.classes_) < 2:
        among = f" among the labelled rows ({UNLABELLED} marks an unlabelled row)" if unlabelled.any() else ""
        raise ValueError(f"{name} needs samples of at least 2 classes; got 1 class{among}: "
                         f"{encoder.classes_[0].item()!r}")
    codes = np.full(len(y), UNLABELLED, dtype=np.int64)
    codes[~unlabelled] = encoder.transform(y[~unlabelled])
    return encoder.classes_, codes


def _semi_supervised(x: torch.Tensor, codes: np.ndarray):
    """The command line's split of data with unlabelled rows (:func:`dae.data.semi_supervised_splits`):
    every row is unlabelled data, the rows not marked unlabelled are the labelled set."""
    return semi_supervised_splits(Dataset(Split(x, torch.from_numpy(codes)), None, None, None, "y"), None, 0, "y")


def _noise_generator(seed_generator: torch.Generator, seed: int, device: torch.device) -> torch.Generator:
    """The training noise's generator: on the CPU, the generator that drew the weights; on a GPU, one there."""
    return seed_generator if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)


class _Autoencoding:
    """What the autoencoder transformers share once fitted: inference in float64 on the CPU on a
    copy of ``model_``, so that a row's result does not depend on the rows computed with it
    (float32 matrix products round differently for different batch shapes); codes of width
    ``_n_features_out``."""

    def _keep_for_inference(self, n_code: int) -> None:
        self._n_features_out = n_code
        self._inference_model = copy.deepcopy(self.model_).cpu().double()

    def _input(self, X) -> torch.Tensor:
        check_is_fitted(self)
        return self.to_tensor(validate_data(self, X, dtype=[np.float64, np.float32], reset=False)).double()

    def transform(self, X):
        """The code of each row (a dA's: y = s(x W + b))."""
        dtype = np.asarray(X).dtype if hasattr(X, "dtype") else np.float64
        with torch.no_grad():
            codes = self._inference_model.encode(self._input(X)).numpy()
        return codes.astype(dtype if dtype in (np.float32, np.float64) else np.float64)

    def inverse_transform(self, X):
        """The reconstruction decoded from codes X, in the units of the input."""
        check_is_fitted(self)
        codes = check_array(X, dtype=[np.float64, np.float32])
        if codes.shape[1] != self._n_features_out:
            raise ValueError(f"X must have shape (n_samples, {self._n_features_out}), got {codes.shape}")
        with torch.no_grad():
            z = self._inference_model.decode(torch.tensor(codes, dtype=torch.float64)).numpy()
        lo, hi = self.input_range_
        return z * (hi - lo) + lo

    def score_samples(self, X):
        """Minus the reconstruction error of each row: higher is more typical of the training data."""
        with torch.no_grad():
            return -self._inference_model.reconstruction_error(self._input(X)).numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.non_deterministic = False
        return tags


class DAETransformer(_Autoencoding, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _UnitInterval,
                     BaseEstimator):
    """A denoising autoencoder [Vincent08] as a scikit-learn transformer: X -> its code.

    Parameters
    ----------
    n_hidden : int, default=500
        Size of the code (tutorial: 500).
    n_epochs : int, default=15
        Passes over the data in ``fit`` (tutorial: 15).
    learning_rate : float, default=0.1
        SGD step size (tutorial: 0.1).
    batch_size : int, default=20
        Minibatch size (tutorial: 20); at most the number of samples.
    corruption_level : float, default=0.3
        Noise level (tutorial: 0.3 with masking).
    noise : {"masking", "gaussian", "salt-and-pepper"}, default="masking"
    loss : {"cross-entropy", "squared-error"}, default="cross-entropy"
    activation : {"sigmoid", "tanh", "relu", "linear"}, default="sigmoid"
    tied : bool, default=True
    random_state : int, RandomState instance or None, default=None
    device : str, default="auto"
        Where to train: "auto" (a GPU if there is one), "cpu", "cuda" or "cuda:N".  Inference
        (transform, score_samples) runs on the CPU in float64.
    The defaults are those of ``dae train`` (:class:`dae.config.TrainRunConfig`), the tutorial's.

    Attributes
    ----------
    model_ : DenoisingAutoencoder
    components_ : ndarray of shape (n_hidden, n_features_in_), the filters (rows of W^T)
    n_features_in_, feature_names_in_, input_range_, history_ (one EpochResult per epoch)

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import LogisticRegression
    >>> clf = make_pipeline(DAETransformer(n_hidden=100, random_state=0), LogisticRegression())
    """

    def __init__(self, n_hidden=DA.model.n_hidden, n_epochs=DA.training.epochs,
                 learning_rate=DA.training.learning_rate, batch_size=DA.training.batch_size,
                 corruption_level=DA.model.corruption_level, noise=DA.model.noise, loss=DA.model.loss,
                 activation=DA.model.activation, tied=DA.model.tied, random_state=None, device=DA.device):
        self.n_hidden = n_hidden
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.corruption_level = corruption_level
        self.noise = noise
        self.loss = loss
        self.activation = activation
        self.tied = tied
        self.random_state = random_state
        self.device = device

    def fit(self, X, y=None):
        """Train a new dA on X for ``n_epochs``."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        self._build(X)
        return self._train(X, self.n_epochs)

    def partial_fit(self, X, y=None):
        """One epoch of SGD on X; the first call creates the model (and its input range) as ``fit`` does."""
        first = not hasattr(self, "model_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=first)
        if first:
            self._build(X)
        return self._train(X, 1)

    def _config(self, n_rows: int) -> TrainRunConfig:
        """The settings as a checked config (a bad one raises ValueError)."""
        return merge(DA, {"device": self.device,
                          "model": {"n_hidden": self.n_hidden, "corruption_level": self.corruption_level,
                                    "noise": self.noise, "loss": self.loss, "activation": self.activation,
                                    "tied": self.tied},
                          "training": {"epochs": self.n_epochs, "learning_rate": self.learning_rate,
                                       "batch_size": min(self.batch_size, n_rows), "shuffle": False}})

    def _build(self, X: np.ndarray) -> None:
        config = self._config(len(X))
        self.fit_range(X, config.model.loss == "cross-entropy")
        seed, device = _seed(self.random_state), resolve_device(config.device)
        init = torch.Generator().manual_seed(seed)
        self.model_ = DenoisingAutoencoder.from_config(X.shape[1], config.model, generator=init).to(device)
        self._generator = _noise_generator(init, seed, device)
        self.history_ = []

    def _train(self, X: np.ndarray, epochs: int):
        x = self.to_tensor(X)
        config = self._config(len(x)).training
        self.history_ += train(self.model_, x, config, epochs=epochs, generator=self._generator)
        self.components_ = self.model_.W.detach().cpu().numpy().T.copy()
        self._keep_for_inference(self.n_hidden)
        return self


class DeepAutoencoderTransformer(_Autoencoding, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _UnitInterval,
                                 BaseEstimator):
    """A deep autoencoder [Hinton06] as a scikit-learn transformer: X -> its low-dimensional code.

    ``fit`` pre-trains a stack of dAs layer by layer (unless ``pretrain=False``), unrolls it into
    an encoder and a decoder (:class:`dae.deep.DeepAutoencoder`) and fine-tunes the whole network
    on reconstruction, as ``dae deep`` does (without its validation split: nothing is selected).
    Inputs are mapped into [0, 1] for the cross-entropy as for :class:`DAETransformer`.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(1000, 500, 250, 30)
        The encoder's widths, the last the code ([Hinton06]'s MNIST autoencoder).
    code_activation : {"linear", "sigmoid"}, default="linear"
    tied : bool, default=False
        Keep the decoder on the encoder's W^T after unrolling (False: its own copies, [Hinton06]).
    loss : {"cross-entropy", "squared-error"}, default="cross-entropy"
    corruption_levels : tuple of float or None, default=None
        Each dA's masking level in pre-training; None: the tutorial's 0.1, 0.2, 0.3, the last repeated.
    pretrain : bool, default=True
    pretrain_epochs : int or tuple of int, default=10
    pretrain_learning_rate : float or tuple of float, default=0.05
        One rate for every layer (a linear code layer's dA then learns at a fifth of it,
        :data:`dae.config.LINEAR_CODE_RATE_FACTOR`), or one per layer, used as given.
    pretrain_batch_size : int, default=20
    n_epochs : int, default=80
        Fine-tuning epochs.
    learning_rate : float, default=0.001
    batch_size : int, default=100
        Fine-tuning minibatches (at most the number of samples), in a new order each epoch.
    optimizer : {"adam", "sgd"}, default="adam"
    schedule : {"cosine", "constant", "anneal"}, default="cosine"
    random_state : int, RandomState instance or None, default=None
    device : str, default="auto"
        Where to train: "auto" (a GPU if there is one), "cpu", "cuda" or "cuda:N".  Inference
        (transform, inverse_transform, score_samples) runs on the CPU in float64.
    The defaults are those of ``dae deep`` (:class:`dae.config.DeepRunConfig`).

    Attributes
    ----------
    model_ : DeepAutoencoder
    n_features_in_, feature_names_in_, input_range_, history_ (one DeepEpoch per fine-tuning epoch)

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X = load_digits().data / 16
    >>> deep = DeepAutoencoderTransformer(hidden_layer_sizes=(32, 2), n_epochs=20, random_state=0)
    >>> deep.fit_transform(X).shape
    (1797, 2)

    References
    ----------
    [Hinton06] G. E. Hinton, R. R. Salakhutdinov. Reducing the dimensionality of data with neural
        networks. Science 313 (2006).
    """

    def __init__(self, hidden_layer_sizes=DEEP.model.hidden_layer_sizes, code_activation=DEEP.model.code_activation,
                 tied=DEEP.model.tied, loss=DEEP.model.loss, corruption_levels=None, pretrain=DEEP.pretrain,
                 pretrain_epochs=DEEP.pretraining.epochs, pretrain_learning_rate=DEEP.pretraining.learning_rate,
                 pretrain_batch_size=DEEP.pretraining.batch_size, n_epochs=DEEP.training.epochs,
                 learning_rate=DEEP.training.learning_rate, batch_size=DEEP.training.batch_size,
                 optimizer=DEEP.training.optimizer, schedule=DEEP.training.schedule, random_state=None,
                 device=DEEP.device):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.code_activation = code_activation
        self.tied = tied
        self.loss = loss
        self.corruption_levels = corruption_levels
        self.pretrain = pretrain
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_learning_rate = pretrain_learning_rate
        self.pretrain_batch_size = pretrain_batch_size
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.schedule = schedule
        self.random_state = random_state
        self.device = device

    def _config(self, n_rows: int) -> DeepRunConfig:
        """The settings as a checked config (a bad one raises ValueError); minibatches of at most ``n_rows``."""
        levels = None if self.corruption_levels is None else list(self.corruption_levels)
        return merge(DEEP, {"device": self.device, "pretrain": self.pretrain,
                            "model": {"hidden_layer_sizes": _ints(self.hidden_layer_sizes),
                                      "code_activation": self.code_activation, "tied": self.tied, "loss": self.loss,
                                      "corruption_levels": levels},
                            "pretraining": {"epochs": self.pretrain_epochs,
                                            "learning_rate": self.pretrain_learning_rate,
                                            "batch_size": min(self.pretrain_batch_size, n_rows)},
                            "training": {"epochs": self.n_epochs, "learning_rate": self.learning_rate,
                                         "batch_size": min(self.batch_size, n_rows), "optimizer": self.optimizer,
                                         "schedule": self.schedule}})

    def fit(self, X, y=None):
        """Pre-train, unroll and fine-tune a new deep autoencoder on X."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        config = self._config(len(X))
        self.fit_range(X, config.model.loss == "cross-entropy")
        x = self.to_tensor(X)
        seed, device = _seed(self.random_state), resolve_device(config.device)
        init = torch.Generator().manual_seed(seed)
        self.model_ = DeepAutoencoder.from_config(X.shape[1], config.model, generator=init).to(device)
        noise = _noise_generator(init, seed, device)
        if config.pretrain:
            pretrain(self.model_, x, config.layer_pretraining, generator=noise, order_seed=seed)
        self.history_ = train_deep(self.model_, x, config.training, generator=noise, order_seed=seed)
        self._keep_for_inference(self.model_.n_code)
        return self

class SdAClassifier(ClassifierMixin, _UnitInterval, BaseEstimator):
    """A stacked denoising autoencoder [Vincent10] as a scikit-learn classifier.

    Greedy layer-wise pre-training of a dA per hidden layer, then fine-tuning of the whole
    network by SGD with momentum on the labels.  A ``validation_fraction`` of the training set
    is held out for the tutorial's early stopping (0 turns it off).

    Semi-supervised: rows of ``y`` marked -1 are unlabelled (see the module's docstring).  Then,
    as ``dae sda --labels`` does, every row of X is pre-trained on, and the network is fine-tuned
    on the labelled rows only; the early-stopping set is a ``validation_fraction`` of the
    labelled rows, drawn balanced over the classes (:func:`dae.data.hold_out_labelled`), and
    the fine-tuning minibatches are at most the labelled rows kept to train on.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(1000, 1000, 1000)  (tutorial)
    corruption_levels : tuple of float or None, default=None (the tutorial's 0.1, 0.2, 0.3, the
        last repeated for deeper stacks: :func:`dae.config.default_corruption_levels`)
    pretrain_epochs : int, default=10
    pretrain_learning_rate : float, default=0.05
    pretrain_batch_size : int, default=20
    finetune_epochs : int, default=80
    learning_rate : float, default=0.1
    batch_size : int, default=100
    momentum : float, default=0.9
    schedule : {"constant", "cosine"}, default="cosine"
    dropout : float, default=0.2
    input_corruption : float, default=0.1
    validation_fraction : float, default=1/6 (MNIST's 10,000 of 60,000), drawn at random (of
        the labelled rows, balanced over the classes, where some rows are unlabelled)
    pseudo_labels : float, default=0.0
        With unlabelled rows: the weight alpha_f of the pseudo-label cost on every row while
        fine-tuning (Lee 2013: 3; :class:`dae.steps.PseudoLabelStep`); an epoch is then a pass
        over all rows.  0: fine-tune on the labelled rows alone.
    random_state : int, RandomState instance or None, default=None
    device : str, default="auto"
        Where to train and predict: "auto" (a GPU if there is one), "cpu", "cuda" or "cuda:N".
    The defaults are those of ``dae sda``'s default preset (``dae.config.SDA_PRESETS["default"]``).

    Attributes
    ----------
    model_ : StackedDenoisingAutoencoder
    classes_ : ndarray of the class labels (of the labelled rows: never -1)
    n_features_in_, feature_names_in_, input_range_, result_ (a FinetuneResult)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> y_few = np.where(np.arange(len(y)) % 10 == 0, y, -1)  # a tenth of the labels
    >>> clf = SdAClassifier(hidden_layer_sizes=(64,), random_state=0).fit(X / 16, y_few)

    References
    ----------
    [Vincent10] P. Vincent, H. Larochelle, I. Lajoie, Y. Bengio, P.-A. Manzagol. Stacked denoising
        autoencoders. JMLR 11 (2010).
    """

    def __init__(self, hidden_layer_sizes=SDA.model.hidden_layer_sizes, corruption_levels=None,
                 pretrain_epochs=SDA.pretraining.epochs, pretrain_learning_rate=SDA.pretraining.learning_rate,
                 pretrain_batch_size=SDA.pretraining.batch_size, finetune_epochs=SDA.finetuning.epochs,
                 learning_rate=SDA.finetuning.learning_rate, batch_size=SDA.finetuning.batch_size,
                 momentum=SDA.finetuning.momentum, schedule=SDA.finetuning.schedule, dropout=SDA.model.dropout,
                 input_corruption=SDA.model.input_corruption, validation_fraction=VALIDATION_FRACTION,
                 pseudo_labels=SDA.finetuning.pseudo_labels, random_state=None, device=SDA.device):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.corruption_levels = corruption_levels
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_learning_rate = pretrain_learning_rate
        self.pretrain_batch_size = pretrain_batch_size
        self.finetune_epochs = finetune_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.momentum = momentum
        self.schedule = schedule
        self.dropout = dropout
        self.input_corruption = input_corruption
        self.validation_fraction = validation_fraction
        self.pseudo_labels = pseudo_labels
        self.random_state = random_state
        self.device = device

    def _config(self, n_pretrain: int, n_finetune: int):
        """The settings as a checked config (a bad one raises ValueError); the minibatches at most
        the rows pre-trained on and the rows fine-tuned on."""
        levels = None if self.corruption_levels is None else list(self.corruption_levels)
        return merge(SDA, {"device": self.device,
                           "model": {"hidden_layer_sizes": _ints(self.hidden_layer_sizes), "corruption_levels": levels,
                                     "dropout": self.dropout, "input_corruption": self.input_corruption},
                           "pretraining": {"epochs": self.pretrain_epochs, "learning_rate": self.pretrain_learning_rate,
                                           "batch_size": min(self.pretrain_batch_size, n_pretrain)},
                           "finetuning": {"epochs": self.finetune_epochs, "learning_rate": self.learning_rate,
                                          "batch_size": min(self.batch_size, n_finetune), "momentum": self.momentum,
                                          "schedule": self.schedule, "pseudo_labels": self.pseudo_labels}})

    def fit(self, X, y):
        """Pre-train on X, then fine-tune on the labelled rows of (X, y); -1 in y marks an unlabelled row."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        self.classes_, codes = _labels(self, y)
        self.fit_range(X, True)
        x, labels = self.to_tensor(X), torch.from_numpy(codes)
        seed = _seed(self.random_state)
        semi_supervised = bool((codes == UNLABELLED).any())
        if semi_supervised:  # `dae sda --labels`: pre-training on every row, fine-tuning on the labels
            part = _semi_supervised(x, codes)
            x_pretrain, labelled = part.x, part.labelled
            kept, held = hold_out_labelled(labelled, labels, self.validation_fraction, seed)
            (xt, yt), valid = (x[kept], labels[kept]), ((x[held], labels[held]) if len(held) else None)
        else:
            (xt, yt), valid = split_validation(x, labels, self.validation_fraction, seed)
            x_pretrain = xt
        config = self._config(len(x_pretrain), len(xt))
        if config.finetuning.pseudo_labels and not semi_supervised:
            raise ValueError(f"pseudo_labels needs unlabelled rows: mark them with {UNLABELLED} in y")
        device = resolve_device(config.device)
        g = torch.Generator().manual_seed(seed)
        self.model_ = StackedDenoisingAutoencoder.from_config(X.shape[1], len(self.classes_), config.model,
                                                              generator=g).to(device)
        g = _noise_generator(g, seed, device)
        pretrain(self.model_, x_pretrain, config.pretraining, generator=g)
        self.result_ = finetune(self.model_, (xt, yt), valid, None, config.finetuning, generator=g,
                                unlabelled=x_pretrain if config.finetuning.pseudo_labels else None)
        return self

    def predict_proba(self, X):
        """p(class | x) for each row; columns in the order of ``classes_``."""
        check_is_fitted(self)
        x = self.to_tensor(validate_data(self, X, dtype=[np.float64, np.float32], reset=False))
        with torch.no_grad():
            return self.model_.predict_proba(x.to(self.model_.classifier.W.device)).cpu().numpy().astype(np.float64)

    def predict(self, X):
        """The most probable class of each row."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


class LadderClassifier(ClassifierMixin, _UnitInterval, BaseEstimator):
    """A ladder network [Rasmus15] as a scikit-learn classifier that learns from unlabelled rows.

    Every layer of an MLP encoder is corrupted with Gaussian noise and a decoder with lateral
    connections denoises every layer; the denoising costs on every row of X and the supervised
    cost on the labelled rows are minimised together by Adam, for a fixed number of epochs (no
    validation set, nothing selected on any label), as ``dae ladder`` does
    (:func:`dae.train.train_ladder`).  Rows of ``y`` marked -1 are unlabelled (see the module's
    docstring); with every row labelled it is a supervised classifier with a denoising
    regulariser.  Each minibatch of ``batch_size`` rows of X goes with one of as many labelled
    rows (at most all of them), drawn afresh.  Inputs are mapped into [0, 1] as for the SdA.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(1000, 500, 250, 250, 250)  ([Rasmus15]'s MNIST model)
    noise_std : float, default=0.3
        Standard deviation of the Gaussian noise on every layer of the corrupted path.
    input_noise_std : float or None, default=None
        That of the noise on its input; None: ``noise_std``.
    denoising_weights : tuple of float or None, default=None
        lambda_l for the input, each hidden layer and the top (``len(hidden_layer_sizes) + 2``
        values); None: [Rasmus15]'s 1000, 10, then 0.1 for every layer above
        (:func:`dae.config.default_denoising_weights`).
    target_gradient : bool, default=True
        Whether the denoising costs' gradient also flows into the clean path (its targets and
        their statistics), as in [Rasmus15]'s code; False: the targets are constants.
    n_epochs : int, default=150
        Passes over the rows of X.
    learning_rate : float, default=0.002
        Adam's step size ([Rasmus15]).
    batch_size : int, default=100
        Rows of X per minibatch (at most the number of rows), with as many labelled rows.
    schedule : {"anneal", "constant", "cosine"}, default="anneal"
        The learning rate's schedule ("anneal": constant, then down to zero over the last third).
    random_state : int, RandomState instance or None, default=None
    device : str, default="auto"
        Where to train: "auto" (a GPU if there is one), "cpu", "cuda" or "cuda:N".  Inference
        (predict, predict_proba) runs on the CPU in float64.
    The defaults are those of ``dae ladder`` (:class:`dae.config.LadderRunConfig`).

    Attributes
    ----------
    model_ : LadderNetwork
    classes_ : ndarray of the class labels (of the labelled rows: never -1)
    n_features_in_, feature_names_in_, input_range_, history_ (one LadderEpoch per epoch)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> y_few = np.where(np.arange(len(y)) % 20 == 0, y, -1)  # one label in twenty
    >>> clf = LadderClassifier(hidden_layer_sizes=(100, 50), n_epochs=30, random_state=0).fit(X / 16, y_few)
    >>> clf.predict(X[:3] / 16).shape
    (3,)

    References
    ----------
    [Rasmus15] A. Rasmus, H. Valpola, M. Honkala, M. Berglund, T. Raiko. Semi-supervised learning
        with ladder networks. NIPS 2015 (arXiv:1507.02672).
    """

    def __init__(self, hidden_layer_sizes=LADDER.model.hidden_layer_sizes, noise_std=LADDER.model.noise_std,
                 input_noise_std=LADDER.model.input_noise_std, denoising_weights=None,
                 target_gradient=LADDER.model.target_gradient, n_epochs=LADDER.training.epochs,
                 learning_rate=LADDER.training.learning_rate, batch_size=LADDER.training.batch_size,
                 schedule=LADDER.training.schedule, random_state=None, device=LADDER.device):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.noise_std = noise_std
        self.input_noise_std = input_noise_std
        self.target_gradient = target_gradient
        self.denoising_weights = denoising_weights
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.schedule = schedule
        self.random_state = random_state
        self.device = device

    def _config(self, n_rows: int) -> LadderRunConfig:
        """The settings as a checked config (a bad one raises ValueError); minibatches of at most ``n_rows``."""
        weights = None if self.denoising_weights is None else list(self.denoising_weights)
        return merge(LADDER, {"device": self.device,
                              "model": {"hidden_layer_sizes": _ints(self.hidden_layer_sizes),
                                        "noise_std": self.noise_std, "input_noise_std": self.input_noise_std,
                                        "denoising_weights": weights, "target_gradient": self.target_gradient},
                              "training": {"epochs": self.n_epochs, "learning_rate": self.learning_rate,
                                           "batch_size": min(self.batch_size, n_rows), "schedule": self.schedule}})

    def fit(self, X, y):
        """Train on every row of X and the labelled rows of (X, y); -1 in y marks an unlabelled row."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        self.classes_, codes = _labels(self, y)
        config = self._config(len(X))
        self.fit_range(X, True)
        part = _semi_supervised(self.to_tensor(X), codes)  # `dae ladder`'s split: x is every row
        seed, device = _seed(self.random_state), resolve_device(config.device)
        init = torch.Generator().manual_seed(seed)
        self.model_ = LadderNetwork.from_config(X.shape[1], len(self.classes_), config.model,
                                                generator=init).to(device)
        self.history_ = train_ladder(self.model_, part.x, (part.x_labelled, part.y_labelled), config.training,
                                     generator=_noise_generator(init, seed, device), order_seed=seed)
        # Inference in float64, so that a row's result does not depend on the rows computed with it.
        self._inference_model = copy.deepcopy(self.model_).cpu().double()
        return self

    def predict_proba(self, X):
        """p(class | x) for each row, from the clean path; columns in the order of ``classes_``."""
        check_is_fitted(self)
        x = self.to_tensor(validate_data(self, X, dtype=[np.float64, np.float32], reset=False)).double()
        return self._inference_model.predict_proba(x).numpy()

    def predict(self, X):
        """The most probable class of each row."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


class AutoencoderOutlierDetector(OutlierMixin, BaseEstimator):
    """Outliers by reconstruction error, and by distance to the typical codes: the rows that an
    autoencoder trained on X reconstructs badly, or encodes far from the codes of X.

    ``fit`` trains a clone of ``autoencoder`` on X and scores each training row.  The score
    (:mod:`dae.anomaly`): with ``code_weight=0``, the row's reconstruction error under
    ``anomaly_score`` (:func:`dae.anomaly.reconstruction_errors`); with a weight w > 0, the error
    standardised by the training rows' errors plus w times the mean distance from the row's code
    to its ``n_neighbors`` nearest training codes, standardised likewise
    (:class:`dae.anomaly.NeighbourScore`; the k-nearest-neighbour weight of [Angiulli02] in the
    code space; a training row is not its own neighbour).  A row whose score is above
    ``threshold_`` is an outlier.  The threshold comes from ``contamination``
    (:func:`dae.anomaly.threshold_from_contamination`): a fraction q flags the q n worst of the n
    training rows (within one, fewer where scores tie), as ``IsolationForest`` does; "auto" is
    Tukey's upper fence, Q3 + 1.5 IQR of the training scores [Tukey77].

    **Two conventions, in opposite directions.**

    * scikit-learn's, as ``IsolationForest`` has them: ``score_samples(X)`` is minus the score,
      so *higher is more normal*; ``decision_function(X)`` is ``score_samples(X) - offset_``,
      *negative for an outlier*; ``predict(X)`` is +1 for an inlier and -1 for an outlier;
      ``offset_ = -threshold_``.
    * PyOD's names, for users coming from PyOD: ``decision_scores_`` holds the score of each
      training row, so *higher is more abnormal*; ``threshold_`` is in the same units;
      ``labels_`` is 0 for an inlier and 1 for an outlier.  PyOD's score of new rows (its
      ``decision_function``) is ``-score_samples(X)`` here; this ``decision_function`` is
      scikit-learn's (its opposite, shifted by the threshold).

    Per-feature errors, as H2O's ``anomaly(per_feature=True)``: ``reconstruction_error(X,
    per_feature=True)`` has shape (n_samples, n_features), and its rows sum to the rows'
    reconstruction errors (with ``code_weight=0``, the scores).

    Units and input scaling: the errors are those of the rows as the autoencoder sees them.  A
    ``DAETransformer`` with the cross-entropy loss maps data outside [0, 1] into [0, 1] by one
    affine map of its training data's range, ``autoencoder_.input_range_ = (lo, hi)``; a squared
    error in the units of the input is (hi - lo)^2 times the one reported.  Rows are encoded as
    the transformer clips them to [0, 1], but the squared error compares the reconstruction with
    the mapped row *unclipped*, so that a value beyond the training range counts in full; the
    cross-entropy score needs targets in [0, 1] and compares with the clipped row, so it does not
    see how far beyond the range a value lies.  With ``loss="squared-error"`` rows are used as
    they are.  With ``code_weight > 0`` the score has no units (standard deviations).

    Parameters
    ----------
    autoencoder : estimator or None, default=None
        An unfitted dae autoencoder transformer (``DAETransformer``, ``DeepAutoencoderTransformer``,
        or one like them: ``get_params()`` with a ``loss``, and once fitted ``model_``,
        ``to_tensor(X, clip=...)`` and ``input_range_``), cloned in ``fit``; None means
        ``DAETransformer()`` with its defaults (the tutorial's dA).  Its ``random_state`` makes
        ``fit`` repeatable.
    anomaly_score : {"squared-error", "cross-entropy"}, default="squared-error"
        Which reconstruction error is scored; the default is ``dae score``'s,
        :data:`dae.config.ANOMALY_SCORE`.  "cross-entropy" needs an autoencoder with
        ``loss="cross-entropy"`` (a sigmoid decoder).
    code_weight : float >= 0, default=dae.config.ANOMALY_CODE_WEIGHT
        The weight w of the distance to the training codes (0: the reconstruction error alone);
        the default is ``dae score``'s, chosen by ``benchmarks/one_class.py``.
    n_neighbors : int, default=dae.config.ANOMALY_NEIGHBORS
        k, the training codes a row's distance is measured to; 1 to n_samples - 1 (a training row
        is not its own neighbour).
    contamination : "auto" or float in (0, 0.5], default="auto"
        The expected fraction of outliers among the training rows, or "auto" (Tukey's fence).

    Attributes
    ----------
    autoencoder_ : the fitted clone of ``autoencoder``
    offset_ : float
        ``-threshold_``: ``decision_function`` is ``score_samples - offset_`` (scikit-learn).
    threshold_ : float
        The score above which a row is an outlier (PyOD).
    decision_scores_ : ndarray of shape (n_samples,)
        The score of each training row, higher = more abnormal (PyOD); ``-score_samples(X)``
        (a training row is not its own neighbour, in ``fit`` or later).
    labels_ : ndarray of shape (n_samples,)
        1 for a training row above the threshold, else 0 (PyOD).
    neighbour_score_ : dae.anomaly.NeighbourScore or None
        With ``code_weight > 0``: the training codes and the means and deviations that standardise.
    n_features_in_, feature_names_in_

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> X = load_digits().data / 16
    >>> detector = AutoencoderOutlierDetector(DAETransformer(n_hidden=32, random_state=0), contamination=0.05)
    >>> labels = detector.fit(X).predict(X)                       # +1 inlier, -1 outlier
    >>> errors = detector.reconstruction_error(X, per_feature=True)  # (1797, 64), rows sum to the errors

    References
    ----------
    [Tukey77] J. W. Tukey. Exploratory Data Analysis. Addison-Wesley (1977).
    [Angiulli02] F. Angiulli, C. Pizzuti. Fast outlier detection in high dimensional spaces. PKDD (2002).
    """

    def __init__(self, autoencoder=None, anomaly_score=ANOMALY_SCORE, code_weight=ANOMALY_CODE_WEIGHT,
                 n_neighbors=ANOMALY_NEIGHBORS, contamination="auto"):
        self.autoencoder = autoencoder
        self.anomaly_score = anomaly_score
        self.code_weight = code_weight
        self.n_neighbors = n_neighbors
        self.contamination = contamination

    def fit(self, X, y=None):
        """Train the autoencoder on X (``y`` is ignored) and set the threshold from the training rows' scores."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        check_score(self.anomaly_score)
        check_code_weight(self.code_weight)
        check_contamination(self.contamination)
        check_n_neighbors(self.n_neighbors, len(X) if self.code_weight > 0 else None)
        autoencoder = DAETransformer() if self.autoencoder is None else clone(self.autoencoder)
        loss = autoencoder.get_params().get("loss", "cross-entropy")
        if self.anomaly_score == "cross-entropy" and loss != "cross-entropy":
            raise ValueError(f"anomaly_score='cross-entropy' needs an autoencoder with loss='cross-entropy' (a sigmoid "
                             f"decoder), not loss={loss!r}")
        self.autoencoder_ = autoencoder.fit(X)
        # Inference in float64 on the CPU, so that a row's score does not depend on the rows computed with it.
        self._model = copy.deepcopy(self.autoencoder_.model_).cpu().double()
        errors = torch.from_numpy(self._errors(X))
        self.neighbour_score_ = None
        if self.code_weight > 0:
            self.neighbour_score_ = NeighbourScore(errors, self._codes(X), self.code_weight, int(self.n_neighbors))
            errors = self.neighbour_score_.reference_scores
        self.decision_scores_ = errors.numpy()
        self.threshold_ = threshold_from_contamination(self.decision_scores_, self.contamination)
        self.offset_ = -self.threshold_
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)
        return self

    def _errors(self, X: np.ndarray, per_feature: bool = False) -> np.ndarray:
        x = self.autoencoder_.to_tensor(X).double()
        target = self.autoencoder_.to_tensor(X, clip=False).double() if self.anomaly_score == "squared-error" else None
        return reconstruction_errors(self._model, x, self.anomaly_score, per_feature, target=target).numpy()

    def _codes(self, X: np.ndarray) -> torch.Tensor:
        return codes(self._model, self.autoencoder_.to_tensor(X).double())

    def _checked(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)

    def reconstruction_error(self, X, per_feature=False):
        """The reconstruction error of each row (n_samples,), higher = more abnormal; with
        ``per_feature``, each feature's (n_samples, n_features), whose rows sum to it."""
        return self._errors(self._checked(X), per_feature)

    def code_distance(self, X):
        """The mean distance from each row's code to its ``n_neighbors`` nearest training codes
        (n_samples,); needs ``code_weight > 0``."""
        X = self._checked(X)
        if self.neighbour_score_ is None:
            raise ValueError("code_distance needs a detector fitted with code_weight > 0")
        return self.neighbour_score_.distances(self._codes(X)).numpy()

    def score_samples(self, X):
        """Minus the score of each row: higher is more normal (scikit-learn's direction)."""
        X = self._checked(X)
        errors = self._errors(X)
        if self.neighbour_score_ is None:
            return -errors
        nearest = self.neighbour_score_.distances(self._codes(X))
        return -self.neighbour_score_(torch.from_numpy(errors), nearest).numpy()

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for an outlier, positive for an inlier."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for an inlier, -1 for an outlier (a row whose score is above ``threshold_``)."""
        return np.where(self.decision_function(X) < 0, -1, 1)
