"""One training loop, and the three ways the tutorial uses it.

* :func:`train` trains one dA (the tutorial's ``dA.py``);
* :func:`pretrain` trains the dAs of a stack one layer at a time, and :func:`finetune` trains
  the whole stack on the labels with the tutorial's early stopping (``SdA.py``);
* :func:`train_ladder` trains a ladder network on unlabelled rows and a few labelled ones;
* :func:`train_deep` fine-tunes a deep autoencoder, unrolled from a stack that :func:`pretrain`
  trained, on reconstruction ([Hinton06]).

All five run :func:`run_epochs`: for each epoch, the learning rate of the schedule, the order
of the minibatches (the data's, or a new one drawn from ``(order_seed, epoch)``, the same on
every process and again in a resumed run), one step per minibatch (:mod:`dae.steps`), the
epoch's mean cost summed over the processes, the divergence check, then the caller's end of
epoch (validation, patience) and the user's callback.  Where a run stands is a
:class:`TrainState`, updated in place after each epoch before the callback, so a callback can
checkpoint it and a later call continue from it: the one resume protocol.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .autoencoder import DenoisingAutoencoder
from .batches import Batches, StreamBatches, make_batches
from .config import EVAL_ROWS, FinetuneConfig, TrainingConfig, learning_rate_at, merge, pseudo_label_weight
from .deep import DeepAutoencoder
from .distributed import SINGLE, World
from .stacked import StackedDenoisingAutoencoder
from .steps import AutogradStep, DAStep, FinetuneStep, LadderStep, PseudoLabelStep

# Rows handled per block of bulk work: big enough that the vectorised passes are cheap per
# element, small enough that the block's buffers (about 3 x 2048 x 784 floats) stay in cache.
CHUNK_ROWS = 2048

# SGD that works lowers the cost; an epoch that ends at a hundred times the cost of the initial
# weights has blown up, even where the saturated sigmoids keep the cost finite.
DIVERGENCE_FACTOR = 100.0

# Below this batch size a step's products are too small to share between threads: at batch 1,
# a dA epoch of 784-1000 took 15 s on one thread and 42 s on two (benchmarks/bench_sda_steps.py).
MIN_ROWS_FOR_THREADS = 8


class TrainingDiverged(ArithmeticError):
    """The cost became NaN, infinite or a hundredfold: the learning rate is too high for this model and data."""


@dataclass(frozen=True)
class EpochResult:
    """What one epoch of training a dA reports."""

    epoch: int  # 1-based, as the tutorial prints it
    cost: float  # mean over the epoch's minibatches of the minibatch cost
    seconds: float  # wall time of the epoch


@dataclass(frozen=True)
class FinetuneEpoch:
    """What one epoch of fine-tuning reports."""

    epoch: int
    train_loss: float  # mean negative log-likelihood over the epoch's minibatches
    valid_error: float  # fraction of the validation set misclassified after the epoch (NaN: not measured)
    test_error: float | None  # measured, as in the tutorial, only when the validation error is a new best
    learning_rate: float
    seconds: float
    complete: bool = True  # False for an epoch that patience ended before its last minibatch


@dataclass(frozen=True)
class LadderEpoch:
    """What one epoch of a ladder network's training reports."""

    epoch: int
    cost: float  # mean over the epoch's minibatches of supervised + denoising costs
    supervised: float  # mean cross-entropy of the corrupted path on the labelled minibatches
    denoising: tuple[float, ...]  # mean weighted denoising cost of each layer, the input first
    valid_error: float  # after the epoch, if a validation set was given (only shown, never selects); else NaN
    learning_rate: float
    seconds: float


@dataclass(frozen=True)
class DeepEpoch:
    """What one epoch of fine-tuning a deep autoencoder reports."""

    epoch: int
    cost: float  # mean over the epoch's minibatches of the mean reconstruction error (the model's loss)
    valid_error: float  # squared error per row on the validation set after the epoch (only shown); else NaN
    learning_rate: float
    seconds: float


@dataclass
class TrainState:
    """Where a run stands after an epoch; with the random generator's state, all that is needed
    to continue it exactly.  The loop updates it in place."""

    epoch: int = 0  # epochs done (of the current layer, in pre-training)
    iteration: int = 0  # minibatches done: the tutorial's ``iter``
    history: list = field(default_factory=list)  # one EpochResult or FinetuneEpoch per epoch
    optimizer: dict = field(default_factory=dict)  # the step's state_dict (momentum, Adam's moments)
    reference_cost: float | None = None  # the cost of the initial weights, for the divergence check
    stopped_by: str | None = None  # "patience" or "max_epochs" once finished
    layer: int = 1  # pre-training: the layer being trained (1-based)
    # Early stopping (fine-tuning): the tutorial's counters and the best model so far.
    patience: int | None = None
    best_valid_error: float = math.inf
    best_epoch: int = 0
    test_error: float | None = None
    best_params: dict[str, torch.Tensor] | None = None

    def restart(self, layer: int = 1) -> None:
        """Start afresh, in place (a new layer of pre-training, or fine-tuning after it)."""
        self.__dict__.update(vars(TrainState(layer=layer)))


def run_epochs(step, batches: Batches, *, epochs: int, learning_rate: Callable[[int], float], shuffle: bool,
               generator: torch.Generator, state: TrainState, finish_epoch: Callable, order_seed: int = 0,
               world: World = SINGLE, progress: bool = False, callback: Callable | None = None,
               steps_allowed: Callable[[int], int] | None = None) -> TrainState:
    """The loop.  ``finish_epoch(epoch, cost, lr, seconds, complete)`` returns the epoch's record
    (and may set ``state.stopped_by``); ``steps_allowed(iteration)`` caps the minibatches of an
    epoch starting at ``iteration`` (the tutorial's patience, which may stop inside an epoch)."""
    B, N = batches.batch_size, world.size
    with torch.no_grad(), threads_for(B):
        for epoch in range(state.epoch + 1, epochs + 1):
            if state.stopped_by is not None:
                break
            start = time.perf_counter()
            lr = learning_rate(epoch)
            step.set_learning_rate(lr)
            order = order_generator(order_seed, epoch) if shuffle else None
            allowed = batches.steps if steps_allowed is None else min(batches.steps, steps_allowed(state.iteration))
            total, done = 0.0, 0
            with (contextlib.closing(batches.epoch(order, step.block_steps)) as blocks,
                  tqdm(total=allowed, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress,
                       mininterval=0.5) as bar):
                for block in blocks:
                    k = min(len(block[0]) // B, allowed - done)
                    if k * B < len(block[0]):
                        block = tuple(t[: k * B] for t in block)
                    total += step(block, generator)
                    done += k
                    bar.update(k)
                    if done == allowed:
                        break
            total, = world.sum(total)
            cost = total / (done * B * N)
            if not math.isfinite(cost) or cost > DIVERGENCE_FACTOR * abs(state.reference_cost):
                raise TrainingDiverged(f"training diverged at epoch {epoch} (cost {cost:.4g}, against "
                                       f"{state.reference_cost:.4g} at the start); try a lower learning rate")
            state.epoch, state.iteration = epoch, state.iteration + done
            record = finish_epoch(epoch, cost, lr, time.perf_counter() - start, done == batches.steps)
            state.history.append(record)
            state.optimizer = step.state_dict()
            if state.stopped_by is None and epoch == epochs:
                state.stopped_by = "max_epochs"
            if callback is not None:
                callback(record)
    return state


def order_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's order: seeded with (seed, epoch), the same on every process."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)


@contextlib.contextmanager
def threads_for(batch_size: int):
    """Run tiny-batch training on one thread; leave the thread count as it was afterwards."""
    n = torch.get_num_threads()
    if batch_size >= MIN_ROWS_FOR_THREADS or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def as_generator(seed_or_generator: int | torch.Generator | None, device: torch.device | str = "cpu"
                 ) -> torch.Generator:
    """A torch.Generator: the one given, a new one seeded with the int given, or a fresh one."""
    if isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator
    g = torch.Generator(device=device)
    if seed_or_generator is None:
        g.seed()
    else:
        g.manual_seed(int(seed_or_generator))
    return g


# --- one dA ------------------------------------------------------------------------------------


def train(model: DenoisingAutoencoder, x, config: TrainingConfig | None = None, *,
          generator: int | torch.Generator | None = None, callback: Callable[[EpochResult], None] | None = None,
          progress: bool = False, state: TrainState | None = None, order_seed: int = 0, world: World | None = None,
          **settings) -> list[EpochResult]:
    """Train ``model`` on the rows of ``x`` by minibatch SGD; return one result per epoch.

    ``config`` (:class:`dae.config.TrainingConfig`; its defaults are the tutorial's: 15 epochs,
    learning rate 0.1, batch size 20, minibatches in order) may be given whole, or any of its
    settings as keywords (``train(model, x, epochs=3)``).  As in the tutorial, the last
    ``len(x) % batch_size`` rows are not used.  ``generator`` (a seed or a ``torch.Generator``)
    drives the corruption: with the same seed and initial weights, training on the CPU is bit for
    bit repeatable.  ``callback`` follows each epoch; ``progress`` shows a progress bar.  A cost
    that becomes NaN, infinite or a hundred times that of the initial weights raises
    :class:`TrainingDiverged`.  ``state`` (a :class:`TrainState`, updated in place) continues an
    earlier call from where it stood.

    Plain SGD without penalties takes the hand-written :class:`dae.steps.DAStep`; anything else
    autograd and torch.optim.  ``x`` is a tensor or array (any float or integer dtype; it is cast
    to the model's) or a :class:`dae.stream.NpyStream` (a .npy read from disk in chunks);
    ``shuffle=None`` shuffles a stream and keeps a tensor in order.  ``world``
    (:func:`dae.distributed.init_world`) trains data-parallel: each of N processes takes its
    share of every global minibatch of N x batch_size rows and the gradients are averaged at
    every step; every process calls train alike, except ``generator`` (each rank's own noise).
    """
    config = merge(config or TrainingConfig(), settings)
    if isinstance(config.epochs, tuple) or isinstance(config.learning_rate, tuple):
        raise ValueError("train takes one epochs value and one learning_rate")
    world = world or SINGLE
    device, dtype = model.W.device, model.W.dtype
    batches = make_batches(x, batch_size=config.batch_size, world=world, device=device, dtype=dtype)
    if batches.n_cols != model.n_visible:
        raise ValueError(f"x must have shape (n, {model.n_visible}), got ({batches.n_rows}, {batches.n_cols})")
    shuffle = isinstance(batches, StreamBatches) if config.shuffle is None else config.shuffle
    generator = as_generator(generator, device)
    state = state if state is not None else TrainState()
    block_steps = max(1, CHUNK_ROWS // config.batch_size)
    world.broadcast_(model.parameters())
    if config.plain and not model.regularised:
        step = DAStep(model, config.batch_size, block_steps, world)
    else:
        step = AutogradStep(model, config, block_steps, world)
    step.load_state_dict(state.optimizer)
    if state.reference_cost is None:
        with torch.no_grad():
            state.reference_cost = float(model.reconstruction_error(batches.head(CHUNK_ROWS)).mean())

    def finish_epoch(epoch: int, cost: float, lr: float, seconds: float, complete: bool) -> EpochResult:
        return EpochResult(epoch, cost, seconds)

    run_epochs(step, batches, epochs=config.epochs, learning_rate=lambda e: learning_rate_at(config, e),
               shuffle=shuffle, generator=generator, state=state, finish_epoch=finish_epoch, order_seed=order_seed,
               world=world, progress=progress, callback=callback)
    return state.history


# --- stacked denoising autoencoders ------------------------------------------------------------


def pretrain(model: StackedDenoisingAutoencoder | DeepAutoencoder, x, config: TrainingConfig | None = None, *,
             generator: int | torch.Generator | None = None,
             callback: Callable[[int, EpochResult], None] | None = None,
             after_layer: Callable[[int], None] | None = None, progress: bool = False,
             state: TrainState | None = None, order_seed: int = 0, world: World | None = None,
             **settings) -> list[list[EpochResult]]:
    """Greedy layer-wise pre-training [Bengio07]: train the dA of each layer in turn with
    :func:`train`, on the clean codes of the layers below it.  ``model`` is any model that
    holds its layers' dAs as ``model.autoencoders`` (a stack, a deep autoencoder).

    ``config`` defaults to the tutorial's SdA pre-training (``pretraining_epochs=15,
    pretrain_lr=0.001, batch_size=1``), whatever the model (a deep autoencoder's own recipe is
    :attr:`dae.config.DeepRunConfig.layer_pretraining`); ``epochs`` and ``learning_rate`` may be
    one value or one per layer.  Each dA uses its own ``corruption_level``.  ``callback(layer, result)`` follows
    each epoch (layer is 1-based) and ``after_layer(layer)`` each layer, e.g. to save the model.
    ``state`` continues from where an earlier call stood (``state.layer``, ``state.epoch``);
    the layers below are taken as trained and their histories left empty.
    """
    from .config import SdARunConfig

    config = merge(config or SdARunConfig().pretraining, settings)
    n = len(model.autoencoders)
    layers = [config.for_layer(k, n) for k in range(n)]
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    generator = as_generator(generator, device)
    state = state if state is not None else TrainState()
    histories: list[list[EpochResult]] = [[] for _ in range(n)]
    codes = _as_tensor(x, dtype).to(device)
    for k, dA in enumerate(model.autoencoders):
        if k + 1 >= state.layer:
            if k + 1 > state.layer:  # a new layer starts from a fresh state
                state.restart(layer=k + 1)
            report = None if callback is None else (lambda r, layer=k + 1: callback(layer, r))
            histories[k] = train(dA, codes, layers[k], generator=generator, callback=report, progress=progress,
                                 state=state, order_seed=order_seed, world=world)
            if after_layer is not None:
                after_layer(k + 1)
        if k + 1 < n:  # the clean codes of this layer are the next dA's data
            with torch.no_grad():
                codes = torch.cat([dA.encode(c) for c in codes.split(CHUNK_ROWS * 4)])
    return histories


@dataclass(frozen=True)
class FinetuneResult:
    history: list[FinetuneEpoch]
    best_epoch: int
    best_valid_error: float
    test_error: float | None  # at the best validation point
    stopped_by: str  # "patience" or "max_epochs"


class Patience:
    """The tutorial's early-stopping rule (``SdA.py``, ``mlp.py``), counted in minibatches.

    Patience starts at ``patience_epochs`` epochs' worth of minibatches (tutorial: 10).  A
    validation error below ``improvement_threshold`` (0.995) times the best so far sets patience
    to max(patience, ``patience_increase`` (2) x iter), iter the 0-based index of the minibatch
    just done.  Training stops after the first minibatch whose iter is at least the patience:
    inside an epoch if that comes first, else after the epoch's validation.
    """

    def __init__(self, n_batches: int, config: FinetuneConfig, patience: int | None = None,
                 best: float = math.inf) -> None:
        self.patience = config.patience_epochs * n_batches if patience is None else patience
        self.improvement_threshold, self.patience_increase = config.improvement_threshold, config.patience_increase
        self.best = best

    def steps_allowed(self, iteration: int) -> int:
        """How many minibatches may run from the 0-based ``iteration`` on: up to and including iter = patience."""
        return max(1, self.patience - iteration + 1)

    def update(self, iteration: int, valid_error: float) -> bool:
        """Record the validation error measured after minibatch ``iteration``; True if it is the best."""
        if not valid_error < self.best:
            return False
        if valid_error < self.best * self.improvement_threshold:
            self.patience = max(self.patience, int(iteration * self.patience_increase))
        self.best = valid_error
        return True

    def exhausted(self, iteration: int) -> bool:
        """True if training stops after minibatch ``iteration``."""
        return self.patience <= iteration


def error_rate(model: nn.Module, x, y, world: World | None = None) -> float:
    """Fraction of rows that ``model`` misclassifies (the tutorial's ``errors``), without dropout
    or noise.  With a ``world`` of several processes each counts the errors in every N-th row."""
    world = world or SINGLE
    param = next(model.parameters())
    x, y = _as_tensor(x, param.dtype), _as_tensor(y, torch.int64)
    x, y = x[world.rank :: world.size], y[world.rank :: world.size]
    with torch.no_grad():
        wrong = sum(int((model.predict(xc.to(param.device)) != yc.to(param.device)).sum())
                    for xc, yc in zip(x.split(EVAL_ROWS), y.split(EVAL_ROWS)))
    wrong, n = world.sum(wrong, len(y))
    return wrong / n


def finetune(model: StackedDenoisingAutoencoder, train_set, valid_set=None, test_set=None,
             config: FinetuneConfig | None = None, *, generator: int | torch.Generator | None = None,
             callback: Callable[[FinetuneEpoch], None] | None = None, progress: bool = False,
             state: TrainState | None = None, order_seed: int = 0, world: World | None = None,
             unlabelled=None, **settings) -> FinetuneResult:
    """Fine-tune the whole stack by minibatch SGD on the negative log-likelihood of the labels.

    ``config`` (:class:`dae.config.FinetuneConfig`, or its settings as keywords) defaults to the
    tutorial's: learning rate 0.1, at most 1000 epochs, batch size 1, minibatches in order, no
    momentum, early stopping by :class:`Patience`.  The model's ``input_corruption`` and
    ``dropout`` apply while training.  After each epoch the validation error is measured; the
    test error is measured at each new best, and the best model is restored at the end (and
    before :class:`TrainingDiverged` is raised).  Without a ``valid_set`` all epochs run and the
    final model is kept.  Labels must be integers 0..n_classes-1.  ``state``, ``world``: as for
    :func:`train`.

    With ``config.pseudo_labels`` > 0, ``unlabelled`` rows (x only) are learnt from too, by
    pseudo-labels (:class:`dae.steps.PseudoLabelStep`): an epoch is then a pass over them, each
    minibatch of them with one of the labelled rows, and patience is counted in those minibatches.
    """
    config = merge(config or FinetuneConfig(), settings)
    world = world or SINGLE
    classifier = model.classifier.W
    sets = {"train_set": train_set, "valid_set": valid_set, "test_set": test_set}
    for name, pair in sets.items():
        if pair is not None:
            _check_labels(pair, model, name)
    block_steps = max(1, CHUNK_ROWS // config.batch_size)
    if config.pseudo_labels:
        if unlabelled is None:
            raise ValueError("pseudo_labels needs unlabelled rows to learn from (unlabelled=x)")
        batches = make_batches(unlabelled, None, batch_size=config.batch_size, world=world,
                               device=classifier.device, dtype=classifier.dtype)
        labelled = (_as_tensor(train_set[0], classifier.dtype).to(classifier.device),
                    _as_tensor(train_set[1], torch.int64).to(classifier.device))
        if labelled[0].shape[1:] != (model.n_visible,):
            raise ValueError(f"x must have shape (n, {model.n_visible}), got {tuple(labelled[0].shape)}")
        step = PseudoLabelStep(model, labelled, config.momentum, config.batch_size, block_steps, world)
    else:
        batches = make_batches(train_set[0], train_set[1], batch_size=config.batch_size, world=world,
                               device=classifier.device, dtype=classifier.dtype)
        step = FinetuneStep(model, config.momentum, config.batch_size, block_steps, world)
    if batches.n_cols != model.n_visible:
        raise ValueError(f"x must have shape (n, {model.n_visible}), got ({batches.n_rows}, {batches.n_cols})")
    generator = as_generator(generator, classifier.device)
    state = state if state is not None else TrainState()
    state.reference_cost = math.log(model.n_classes)  # the zero-initialised softmax's NLL, ln K
    world.broadcast_(model.parameters())
    step.load_state_dict(state.optimizer)

    def schedule(epoch: int) -> float:
        if config.pseudo_labels:
            step.weight = pseudo_label_weight(config, epoch)  # alpha(t) of the pseudo-label cost
        return learning_rate_at(config, epoch)
    patience = Patience(batches.steps, config, state.patience, state.best_valid_error)

    def finish_epoch(epoch: int, cost: float, lr: float, seconds: float, complete: bool) -> FinetuneEpoch:
        last = state.iteration - 1  # the tutorial's iter of the minibatch just done
        valid_error, this_test = math.nan, None
        if not complete:
            state.stopped_by = "patience"
        elif valid_set is None:
            if epoch == config.epochs:
                state.best_epoch, state.best_params = epoch, None
                state.test_error = None if test_set is None else error_rate(model, *test_set, world=world)
                this_test = state.test_error
        else:
            valid_error = error_rate(model, *valid_set, world=world)
            if patience.update(last, valid_error):
                state.best_epoch, state.best_valid_error = epoch, valid_error
                state.best_params = {k: v.detach().clone() for k, v in model.named_parameters()}
                if test_set is not None:
                    this_test = state.test_error = error_rate(model, *test_set, world=world)
            if patience.exhausted(last):
                state.stopped_by = "patience"
        state.patience = patience.patience
        return FinetuneEpoch(epoch, cost, valid_error, this_test, lr, seconds, complete)

    try:
        run_epochs(step, batches, epochs=config.epochs, learning_rate=schedule,
                   shuffle=config.shuffle, generator=generator, state=state, finish_epoch=finish_epoch,
                   order_seed=order_seed, world=world, progress=progress, callback=callback,
                   steps_allowed=None if valid_set is None else patience.steps_allowed)
    finally:  # the best model, also when training blew up or was interrupted
        if state.best_params is not None:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(state.best_params[name])
    best_valid = math.nan if valid_set is None else state.best_valid_error
    return FinetuneResult(state.history, state.best_epoch, best_valid, state.test_error, state.stopped_by)


# --- ladder networks ----------------------------------------------------------------------------


def train_ladder(model, x, labelled, config: TrainingConfig | None = None, *, valid=None,
                 generator: int | torch.Generator | None = None,
                 callback: Callable[[LadderEpoch], None] | None = None, progress: bool = False,
                 state: TrainState | None = None, order_seed: int = 0, world: World | None = None,
                 **settings) -> list[LadderEpoch]:
    """Train a :class:`dae.ladder.LadderNetwork` on the unlabelled rows ``x`` and the labelled
    pair ``labelled = (x_l, y_l)``, for a fixed number of epochs (one epoch: one pass over ``x``).

    ``config`` defaults to :class:`dae.config.LadderRunConfig`'s training: [Rasmus15]'s Adam at
    0.002, minibatches of 100, the rate annealed to zero over the last third.  ``valid`` (an
    ``(x, y)`` pair) is evaluated after every epoch and only reported: nothing is selected on it,
    so a run with few labels need not have one.  ``x`` may hold the labelled rows too (it
    should: every image is unlabelled data).  ``generator``, ``callback``, ``progress``, ``state``,
    ``order_seed``, ``world``: as for :func:`train` (each process passes its own labelled share
    or the same labelled set; the unlabelled rows are split between the processes).
    """
    from .config import LadderRunConfig

    config = merge(config or LadderRunConfig().training, settings)
    world = world or SINGLE
    device, dtype = model.W[0].device, model.W[0].dtype
    x_l, y_l = _as_tensor(labelled[0], dtype).to(device), _as_tensor(labelled[1], torch.int64).to(device)
    _check_labels((x_l, y_l), model, "labelled")
    if valid is not None:
        _check_labels(valid, model, "valid")
    if len(y_l) < 2 or x_l.shape[1:] != (model.n_visible,):  # batch normalisation needs two rows
        raise ValueError(f"labelled: needs at least two examples of {model.n_visible} values")
    batches = make_batches(x, batch_size=config.batch_size, world=world, device=device, dtype=dtype)
    if batches.n_cols != model.n_visible:
        raise ValueError(f"x must have shape (n, {model.n_visible}), got ({batches.n_rows}, {batches.n_cols})")
    generator = as_generator(generator, device)
    state = state if state is not None else TrainState()
    world.broadcast_(model.parameters())
    world.broadcast_(model.buffers())
    step = LadderStep(model, (x_l, y_l), config, max(1, CHUNK_ROWS // config.batch_size), world)
    step.load_state_dict(state.optimizer)
    model.train()
    if state.reference_cost is None:  # the initial weights' cost, without moving the running statistics
        with torch.no_grad():
            model.eval()
            head = batches.head(config.batch_size)
            supervised, denoising = model.costs(x_l[: config.batch_size], y_l[: config.batch_size], head,
                                                as_generator(order_seed, device))
            state.reference_cost = float(supervised + sum(denoising))
            model.train()
    shuffle = isinstance(batches, StreamBatches) if config.shuffle is None else config.shuffle

    def finish_epoch(epoch: int, cost: float, lr: float, seconds: float, complete: bool) -> LadderEpoch:
        parts = world.sum(*step.take_parts().tolist())
        rows = batches.steps * config.batch_size * world.size
        valid_error = math.nan if valid is None else error_rate(model, *valid, world=world)
        return LadderEpoch(epoch, cost, parts[0] / rows, tuple(p / rows for p in parts[1:]), valid_error, lr,
                           seconds)

    finished = state.stopped_by is not None
    try:
        run_epochs(step, batches, epochs=config.epochs, learning_rate=lambda e: learning_rate_at(config, e),
                   shuffle=shuffle, generator=generator, state=state, finish_epoch=finish_epoch,
                   order_seed=order_seed, world=world, progress=progress, callback=callback)
    finally:
        model.eval()
    if isinstance(x, torch.Tensor) and not finished:  # every rank holds every row: the same statistics
        model.set_population_statistics(x)
    return state.history


# --- deep autoencoders ----------------------------------------------------------------------------


def squared_error(model, x, world: World | None = None) -> float:
    """The mean over the rows of x of the squared reconstruction error sum_i (x_i - z_i)^2,
    [Hinton06]'s measure ("squared error per image").  ``model``: anything with a
    ``reconstruct`` (a model, a :class:`dae.deep.PCA`).  With a ``world`` of several processes
    each takes every N-th row."""
    return _mean_per_row(lambda rows: (model.reconstruct(rows) - rows).pow(2).sum(dim=1), model, x, world)


def mean_reconstruction_error(model: nn.Module, x, world: World | None = None) -> float:
    """The mean over the rows of x of the model's reconstruction error, its loss (e.g. the
    cross-entropy per image).  ``world``: as for :func:`squared_error`."""
    return _mean_per_row(model.reconstruction_error, model, x, world)


def _mean_per_row(per_row: Callable[[torch.Tensor], torch.Tensor], model, x, world: World | None) -> float:
    """The mean of ``per_row`` over the rows of x (this process's every N-th), a chunk at a time,
    without gradients, on the model's device and in its dtype (float32 for what has no parameters)."""
    world = world or SINGLE
    param = next(model.parameters()) if isinstance(model, nn.Module) else None
    x = _as_tensor(x, torch.float32 if param is None else param.dtype)[world.rank :: world.size]
    total = 0.0
    with torch.no_grad():
        for rows in x.split(EVAL_ROWS):
            total += float(per_row(rows if param is None else rows.to(param.device)).sum(dtype=torch.float64))
    total, n = world.sum(total, len(x))
    return total / n if n else math.nan


def train_deep(model: DeepAutoencoder, x, config: TrainingConfig | None = None, *, valid=None,
               generator: int | torch.Generator | None = None, callback: Callable[[DeepEpoch], None] | None = None,
               progress: bool = False, state: TrainState | None = None, order_seed: int = 0,
               world: World | None = None, **settings) -> list[DeepEpoch]:
    """Fine-tune a :class:`dae.deep.DeepAutoencoder` on the reconstruction of the rows of ``x``
    by backpropagation through the whole network, for a fixed number of epochs; return one
    record per epoch.  The model is unrolled first if it is not yet (:meth:`~DeepAutoencoder.unroll`).

    ``config`` defaults to :class:`dae.config.DeepRunConfig`'s fine-tuning (Adam, minibatches of
    100, a cosine schedule, a new order each epoch); the weights, not the biases, take its
    weight decay.  ``valid`` (rows) is measured after every epoch by :func:`squared_error` and
    only reported: nothing is selected on it.  ``generator``, ``callback``, ``progress``,
    ``state``, ``order_seed``, ``world``: as for :func:`train` (the gradients are averaged over
    the processes at every step).
    """
    from .config import DeepRunConfig

    config = merge(config or DeepRunConfig().training, settings)
    if isinstance(config.epochs, tuple) or isinstance(config.learning_rate, tuple):
        raise ValueError("train_deep takes one epochs value and one learning_rate")
    world = world or SINGLE
    model.unroll()
    param = next(model.parameters())
    batches = make_batches(x, batch_size=config.batch_size, world=world, device=param.device, dtype=param.dtype)
    if batches.n_cols != model.n_visible:
        raise ValueError(f"x must have shape (n, {model.n_visible}), got ({batches.n_rows}, {batches.n_cols})")
    shuffle = isinstance(batches, StreamBatches) if config.shuffle is None else config.shuffle
    generator = as_generator(generator, param.device)
    state = state if state is not None else TrainState()
    world.broadcast_(model.parameters())
    step = AutogradStep(model, config, max(1, CHUNK_ROWS // config.batch_size), world)
    step.load_state_dict(state.optimizer)
    if state.reference_cost is None:
        with torch.no_grad():
            state.reference_cost = float(model.reconstruction_error(batches.head(CHUNK_ROWS)).mean())

    def finish_epoch(epoch: int, cost: float, lr: float, seconds: float, complete: bool) -> DeepEpoch:
        valid_error = math.nan if valid is None else squared_error(model, valid, world)
        return DeepEpoch(epoch, cost, valid_error, lr, seconds)

    run_epochs(step, batches, epochs=config.epochs, learning_rate=lambda e: learning_rate_at(config, e),
               shuffle=shuffle, generator=generator, state=state, finish_epoch=finish_epoch, order_seed=order_seed,
               world=world, progress=progress, callback=callback)
    return state.history


def _as_tensor(v, dtype: torch.dtype) -> torch.Tensor:
    return (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).to(dtype)


def _check_labels(pair, model: StackedDenoisingAutoencoder, name: str) -> None:
    x, y = pair
    y = torch.as_tensor(y)
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{name}: y must hold one label per row of x ({len(x)}), got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point and not bool((y == y.round()).all()) or y.dtype == torch.bool:
        raise ValueError(f"{name}: labels must be integers")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= model.n_classes):
        raise ValueError(f"{name}: labels must be in 0..{model.n_classes - 1}, got {int(y.min())}..{int(y.max())}")
