"""Minibatch stochastic gradient descent, as the tutorial does it.

* :func:`train` trains one dA (the tutorial's ``dA.py``);
* :func:`pretrain` trains the dAs of a stack one layer at a time, and :func:`finetune` trains
  the whole stack on the labels with the tutorial's early stopping (``SdA.py``).

The tutorial's loop (``test_dA``): for each epoch, for each minibatch index in order, one SGD
step on the mean cost of that minibatch; the epoch reports the mean of the minibatch costs.
That is what :func:`train` does, with the same numbers, but each step is written out by hand
rather than left to autograd, because at batch size 20 the bookkeeping of a general engine
costs more than the arithmetic.  Per step there are four matrix products and a handful of
fused element-wise passes:

    h   = x~ W + b ;  y = s(h)                     encoder                      (GEMM 1)
    a   = y W^T + b'                               decoder logits               (GEMM 2)
    dz  = c (sigmoid(a) - x)                       dL/da for cross-entropy (c = 1), or
          c (a - x)                                for squared error (c = 2)
    dy  = (dz W) * s'(y)                           back through the encoder     (GEMM 3)
    W  -= lr/B [x~ ; dz]^T [dy ; y]                both gradient terms of tied W in one GEMM
    b  -= lr/B sum(dy) ;  b' -= lr/B sum(dz)

The last GEMM stacks x~ over dz and dy over y, so the two terms of the tied gradient
(x~^T dy + dz^T y) come out of one product of inner size 2B that updates W in place.

Work that does not depend on the weights is done in bulk, once per chunk of minibatches, with
vectorised multi-threaded passes: the corruption of the inputs, and the cost, which is
computed from the decoder logits that the steps leave behind.  The numbers are those of
autograd on ``model.loss`` (tests/test_train.py checks one step against it).  Fine-tuning
is written out by hand the same way (:class:`_FinetuneStep`, checked against autograd and
torch.optim.SGD in tests/test_stacked.py).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .autoencoder import DenoisingAutoencoder
from .corruption import corrupt, mask
from .distributed import SINGLE, World
from .stacked import StackedDenoisingAutoencoder
from .stream import NpyStream

aten = torch.ops.aten

# Rows handled per chunk of bulk work: big enough that the vectorised passes are cheap per
# element, small enough that the chunk's buffers (about 3 x 2048 x 784 floats) stay in cache.
CHUNK_ROWS = 2048


class TrainingDiverged(ArithmeticError):
    """The cost became NaN, infinite or a hundredfold: the learning rate is too high for this model and data."""


# SGD that works lowers the cost; one that ends an epoch at a hundred times the cost of the
# initial weights has blown up, even where the saturated sigmoids keep the cost finite.
DIVERGENCE_FACTOR = 100.0

# Below this batch size a step's products are too small to share between threads: at batch 1,
# a dA epoch of 784-1000 took 15 s on one thread and 42 s on two (benchmarks/bench_sda_steps.py).
MIN_ROWS_FOR_THREADS = 8


@contextlib.contextmanager
def _threads_for(batch_size: int):
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


@dataclass(frozen=True)
class EpochResult:
    """What one epoch of training reports."""

    epoch: int  # 1-based, as the tutorial prints it
    cost: float  # mean over the epoch's minibatches of the minibatch cost
    seconds: float  # wall time of the epoch


def as_generator(seed_or_generator: int | torch.Generator | None, device: torch.device) -> torch.Generator:
    """A torch.Generator: the one given, a new one seeded with the int given, or a fresh one."""
    if isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator
    g = torch.Generator(device=device)
    if seed_or_generator is None:
        g.seed()
    else:
        g.manual_seed(int(seed_or_generator))
    return g


def train(
    model: DenoisingAutoencoder,
    x: torch.Tensor | NpyStream,
    *,
    epochs: int = 15,
    learning_rate: float = 0.1,
    batch_size: int = 20,
    generator: int | torch.Generator | None = None,
    callback: Callable[[EpochResult], None] | None = None,
    progress: bool = False,
    first_epoch: int = 1,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    optimizer_state: dict | None = None,
    shuffle: bool = False,
    order_seed: int = 0,
    world: World | None = None,
) -> list[EpochResult]:
    """Train ``model`` on the rows of ``x`` by minibatch SGD; return one result per epoch.

    Defaults are the tutorial's (``test_dA``): 15 epochs, learning rate 0.1, batch size 20.
    Minibatches are taken in order, ``x[i*B:(i+1)*B]``; as in the tutorial, the last
    ``len(x) % batch_size`` rows, if any, are not used.  ``generator`` (a seed or a
    ``torch.Generator``) drives the corruption: with the same seed and the same initial
    weights, training on the CPU is bit-for-bit repeatable.  ``callback`` is called after
    each epoch; ``progress`` shows a progress bar within each epoch.  A cost that becomes
    NaN or infinite, or a hundred times that of the initial weights, raises
    :class:`TrainingDiverged`.  ``first_epoch`` > 1 continues a run from a checkpoint taken
    after epoch ``first_epoch - 1`` (with the generator in the state it had then).

    Beyond the tutorial: ``optimizer`` "sgd" (with ``momentum``, ``nesterov``) or "adam";
    ``weight_decay``, an L2 penalty on the weights (not the biases), as torch.optim applies
    it; ``schedule`` "constant" or "cosine" (see :func:`finetune`).  The model's own penalties
    (sparsity, contraction) count too.  Plain SGD without penalties takes the hand-written
    step; anything else takes autograd and a torch.optim optimizer, whose state is kept in
    ``optimizer_state`` (a dict, filled after each epoch and read at the start) for checkpoints.

    ``x`` may also be an :class:`~dae.stream.NpyStream`, a .npy file read from disk in chunks
    while training, for data larger than memory.  ``shuffle`` visits the rows in a new order
    each epoch (for a stream: the chunks in a new order, and the rows within each chunk),
    drawn from a generator seeded with ``(order_seed, epoch)``: the same on every process, and
    the same again in a resumed run.

    ``world`` (see :mod:`dae.distributed`) trains data-parallel: this process takes its share
    of each global minibatch of ``world.size * batch_size`` rows (the tutorial's order, or the
    shuffled one), the gradients are summed over the processes at every step, and the reported
    cost is that of all of them.  Every process must call train with the same arguments, except
    ``generator`` (each rank's own noise).
    """
    world = world or SINGLE
    shape = (x.n_rows, x.n_cols) if isinstance(x, NpyStream) else tuple(x.shape)
    if len(shape) != 2 or shape[1] != model.n_visible:
        raise ValueError(f"x must have shape (n, {model.n_visible}), got {shape}")
    if epochs < 1 or batch_size < 1 or not learning_rate > 0:
        raise ValueError("epochs, batch_size and learning_rate must be positive")
    if optimizer not in ("sgd", "adam") or schedule not in SCHEDULES:
        raise ValueError(f"optimizer must be sgd or adam and schedule one of {', '.join(SCHEDULES)}")
    if not 0 <= momentum < 1 or weight_decay < 0 or (nesterov and not momentum):
        raise ValueError("momentum must be in [0, 1), weight_decay at least 0, and nesterov needs momentum")
    if shape[0] // (batch_size * world.size) == 0:
        raise ValueError(f"need at least batch_size={batch_size} rows per process to train, got {shape[0]} "
                         f"for {world.size}")
    device, dtype = model.W.device, model.W.dtype
    rows = _Rows(x, batch_size, world, device, dtype)
    generator = as_generator(generator, device)
    per_chunk = max(1, CHUNK_ROWS // batch_size)
    world.broadcast_(model.parameters())
    plain = optimizer == "sgd" and not momentum and not weight_decay and schedule == "constant"
    if plain and not model.regularised:
        step = _SGDStep(model, batch_size, per_chunk, learning_rate, world)
    else:
        step = _AutogradSteps(model, batch_size, per_chunk, optimizer, learning_rate, momentum, nesterov,
                              weight_decay, optimizer_state, world)
    with torch.no_grad():  # the scale of the cost before training, to recognise a blow-up
        initial_cost = float(model.reconstruction_error(rows.head(CHUNK_ROWS)).mean())

    history = []
    with torch.no_grad(), _threads_for(batch_size):
        for epoch in range(first_epoch, epochs + 1):
            start = time.perf_counter()
            total = 0.0
            if isinstance(step, _AutogradSteps):
                step.set_learning_rate(learning_rate * SCHEDULES[schedule]((epoch - 1) / epochs))
            order = _order_generator(order_seed, epoch) if shuffle else None
            n_steps, blocks = rows.epoch(order, per_chunk)
            with tqdm(total=n_steps, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress) as bar:
                for block in blocks:
                    total += step.chunk(block, generator)
                    bar.update(len(block) // batch_size)
            total, = world.sum(total)
            result = EpochResult(epoch, total / (n_steps * batch_size * world.size), time.perf_counter() - start)
            if not math.isfinite(result.cost) or result.cost > DIVERGENCE_FACTOR * abs(initial_cost):
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch} (cost {result.cost:.4g}, against {initial_cost:.4g} "
                    f"before training); try a lower learning rate"
                )
            history.append(result)
            if optimizer_state is not None and isinstance(step, _AutogradSteps):
                optimizer_state.clear()
                optimizer_state.update(step.optimizer.state_dict())
            if callback is not None:
                callback(result)
    return history


def _order_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's order: seeded with (seed, epoch), the same on every process."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)


class _Rows:
    """The rows that each epoch of :func:`train` visits on this process, in blocks of whole
    minibatches: from a tensor in memory, or from a .npy file streamed in chunks.

    Global minibatch i is ``world.size * B`` consecutive rows of the epoch's order; rank r takes
    the r-th B of them, so that one process with batch N x B and N processes with batch B see
    the same minibatches.  A stream's chunks are dealt out in turn (chunk order[r::N] to rank r)
    and every rank runs as many steps as the rank with the fewest rows can, as all-reduces pair
    up step by step.
    """

    def __init__(self, x, batch_size: int, world: World, device: torch.device, dtype: torch.dtype) -> None:
        self.B, self.world, self.device, self.dtype = batch_size, world, device, dtype
        self.stream = x if isinstance(x, NpyStream) else None
        self._share = None
        if self.stream is None:
            self.x = x.to(device=device, dtype=dtype).contiguous()

    def head(self, n: int) -> torch.Tensor:
        """The first ``n`` rows of the data (the same on every process)."""
        if self.stream is not None:
            return self.stream.head(n).to(device=self.device, dtype=self.dtype)
        return self.x[:n]

    def epoch(self, order: torch.Generator | None, per_chunk: int):
        """(number of minibatches, iterator of blocks of at most ``per_chunk`` minibatches)."""
        B, N, r = self.B, self.world.size, self.world.rank
        if self.stream is None:
            n_steps = len(self.x) // (B * N)
            if order is None and N == 1:
                local = self.x
            elif order is None and self._share is not None:  # the same share every epoch
                local = self._share
            else:
                index = torch.randperm(len(self.x), generator=order) if order is not None else torch.arange(len(self.x))
                local = self.x[index[: n_steps * B * N].view(n_steps, N, B)[:, r].reshape(-1).to(self.device)]
                self._share = local if order is None else None
            return n_steps, (local[i * B : min(i + per_chunk, n_steps) * B] for i in range(0, n_steps, per_chunk))
        s = self.stream
        ids = (torch.randperm(s.n_chunks, generator=order) if order is not None else torch.arange(s.n_chunks)).tolist()
        n_steps = min(sum(s.chunk_rows_of(i) // B for i in ids[k::N]) for k in range(N))
        if n_steps == 0:
            raise ValueError(f"{s.path}: {s.n_chunks} chunk(s) of {s.chunk_rows} rows leave a process without a "
                             f"minibatch of {B}")
        return n_steps, self._stream_blocks(ids[r::N], order, n_steps, per_chunk)

    def _stream_blocks(self, ids: list[int], order: torch.Generator | None, n_steps: int, per_chunk: int):
        B, done = self.B, 0
        chunks = self.stream.epoch(ids, generator=order)
        try:
            for chunk in chunks:
                chunk = chunk.to(device=self.device, dtype=self.dtype)
                k = min(len(chunk) // B, n_steps - done)
                for i in range(0, k, per_chunk):
                    yield chunk[i * B : min(i + per_chunk, k) * B]
                done += k
                if done == n_steps:
                    break
        finally:
            chunks.close()


class _AutogradSteps:
    """Minibatch steps by autograd on ``model.loss`` and a torch.optim optimizer: for the
    variants the hand-written step does not cover (momentum, Adam, weight decay, a schedule,
    the sparsity and contractive penalties).  The same corruption is drawn, in the same order."""

    def __init__(self, model: DenoisingAutoencoder, batch_size: int, batches_per_chunk: int, kind: str, lr: float,
                 momentum: float, nesterov: bool, weight_decay: float, state: dict | None,
                 world: World = SINGLE) -> None:
        self.model, self.B, self.batches_per_chunk, self.world = model, batch_size, batches_per_chunk, world
        weights = [p for name, p in model.named_parameters() if name in ("W", "W_prime")]
        biases = [p for name, p in model.named_parameters() if name not in ("W", "W_prime")]
        groups = [{"params": weights, "weight_decay": weight_decay}, {"params": biases, "weight_decay": 0.0}]
        if kind == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=lr)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
        if state:
            self.optimizer.load_state_dict(state)

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def chunk(self, x: torch.Tensor, generator: torch.Generator) -> float:
        total = 0.0
        with torch.enable_grad():
            for xb in x.split(self.B):
                loss = self.model.loss(xb, generator)
                self.optimizer.zero_grad()
                loss.backward()
                if self.world.size > 1:  # the mean gradient of the global minibatch
                    for p in self.model.parameters():
                        if p.grad is not None:
                            self.world.all_reduce_(p.grad).div_(self.world.size)
                self.optimizer.step()
                total += loss.item() * len(xb)
        return total


class _SGDStep:
    """Preallocated buffers and the hand-written SGD step of one dA (see the module docstring)."""

    def __init__(self, model: DenoisingAutoencoder, batch_size: int, batches_per_chunk: int, lr: float,
                 world: World = SINGLE) -> None:
        B, V, H = batch_size, model.n_visible, model.n_hidden
        factory = {"device": model.W.device, "dtype": model.W.dtype}
        self.model, self.B, self.batches_per_chunk = model, B, batches_per_chunk
        # For each minibatch of a chunk, L[i] stacks x~ (rows :B) over dz (rows B:);
        # R stacks dy over y.  Then L[i]^T R is the whole tied-weight gradient.
        self.L = torch.empty(batches_per_chunk, 2 * B, V, **factory)
        self.A = torch.empty(batches_per_chunk, B, V, **factory)  # decoder logits
        self.R = torch.empty(2 * B, H, **factory)
        self.ones = torch.ones(B, **factory)
        # Cross-entropy against a sigmoid output and squared error against a linear one both
        # have dL/da = c (z - x); c = 2 for ||x - z||^2.  c/B (the minibatch mean) goes in the step.
        self.cross_entropy = model.loss_name == "cross-entropy"
        self.alpha = -lr * (1.0 if self.cross_entropy else 2.0) / (B * world.size)
        # Data-parallel: the gradients (unscaled sums over the minibatch) go to one flat buffer
        # that a single all-reduce sums over the processes before the update.
        self.world, self.grads = world, None
        if world.size > 1:
            tied = model.W_prime is None
            flat = torch.empty((1 if tied else 2) * V * H + H + V, **factory)
            parts = flat.split([V * H, H, V] + ([] if tied else [V * H]))
            self.grads = flat
            self.grad_views = [parts[0].view(V, H), parts[1], parts[2]] + [p.view(V, H) for p in parts[3:]]

    def chunk(self, x: torch.Tensor, generator: torch.Generator) -> float:
        """Run SGD over the consecutive minibatches of ``x``; return the sum of their costs."""
        m, B = self.model, self.B
        k = x.shape[0] // B
        xs = x.view(k, B, -1)
        L, A, R = self.L[:k], self.A[:k], self.R
        corrupt(xs, m.noise, m.corruption_level, generator, out=L[:, :B])

        W, b, b_prime, Wd = m.W, m.b, m.b_prime, m.decoder_weight
        Wd_t = Wd.t()
        dy, y = R[:B], R[B:]
        dy_t = dy.t()
        ones, alpha, tied = self.ones, self.alpha, m.W_prime is None
        activate, activation_grad = _ACTIVATION_STEPS[m.activation]
        addmm, mm, sigmoid, sub = torch.addmm, torch.mm, torch.sigmoid, torch.sub
        cross_entropy = self.cross_entropy
        for i in range(k):
            Li, a, xi = L[i], A[i], xs[i]
            x_tilde, dz = Li[:B], Li[B:]
            addmm(b, x_tilde, W, out=y)
            activate(y)
            addmm(b_prime, y, Wd_t, out=a)
            if cross_entropy:
                sigmoid(a, out=dz)
                dz.sub_(xi)
            else:
                sub(a, xi, out=dz)
            mm(dz, Wd, out=dy)
            activation_grad(dy, y)
            if self.grads is not None:
                self._all_reduce_step(Li, dy, dz, y)
            elif tied:
                b.addmv_(dy_t, ones, alpha=alpha)
                b_prime.addmv_(dz.t(), ones, alpha=alpha)
                W.addmm_(Li.t(), R, alpha=alpha)
            else:
                b.addmv_(dy_t, ones, alpha=alpha)
                b_prime.addmv_(dz.t(), ones, alpha=alpha)
                W.addmm_(x_tilde.t(), dy, alpha=alpha)
                Wd.addmm_(dz.t(), y, alpha=alpha)
        return self._cost(xs, A)

    def _all_reduce_step(self, Li: torch.Tensor, dy: torch.Tensor, dz: torch.Tensor, y: torch.Tensor) -> None:
        """The same update, from gradients summed over the processes."""
        m, B = self.model, self.B
        gW, gb, gb_prime, *gWd = self.grad_views
        if m.W_prime is None:
            torch.mm(Li.t(), self.R, out=gW)
        else:
            torch.mm(Li[:B].t(), dy, out=gW)
            torch.mm(dz.t(), y, out=gWd[0])
        torch.mv(dy.t(), self.ones, out=gb)
        torch.mv(dz.t(), self.ones, out=gb_prime)
        self.world.all_reduce_(self.grads)
        for p, g in zip((m.W, m.b, m.b_prime, m.W_prime), self.grad_views):
            p.add_(g, alpha=self.alpha)

    def _cost(self, xs: torch.Tensor, A: torch.Tensor) -> float:
        """Sum over the chunk of L(x, z), from the logits A the steps computed (before each update)."""
        flat_x, flat_a = xs.reshape(-1), A.view(-1)
        if self.cross_entropy:
            # L = sum softplus(a) - x a, the stable form of -x log s(a) - (1 - x) log(1 - s(a)).
            xa = torch.dot(flat_x, flat_a)
            aten.softplus.out(flat_a, 1, 20, out=flat_a)
            return float(flat_a.sum(dtype=torch.float64) - xa)
        flat_a.sub_(flat_x)
        return float(torch.dot(flat_a, flat_a))


def _identity_grad(dy: torch.Tensor, y: torch.Tensor) -> None:
    pass


# For each encoder activation: apply it in place, and multiply dy in place by s'(h) written in
# terms of the output y (sigmoid: y (1 - y); tanh: 1 - y^2; relu: [y > 0]), one fused pass each.
_ACTIVATION_STEPS = {
    "sigmoid": (lambda y: torch.sigmoid(y, out=y), lambda dy, y: aten.sigmoid_backward.grad_input(dy, y, grad_input=dy)),
    "tanh": (lambda y: torch.tanh(y, out=y), lambda dy, y: aten.tanh_backward.grad_input(dy, y, grad_input=dy)),
    "relu": (torch.relu_, lambda dy, y: aten.threshold_backward.grad_input(dy, y, 0, grad_input=dy)),
    "linear": (lambda y: None, _identity_grad),
}


# --- stacked denoising autoencoders ---------------------------------------------------------


def pretrain(
    model: StackedDenoisingAutoencoder,
    x: torch.Tensor,
    *,
    epochs: int | Sequence[int] = 15,
    learning_rate: float | Sequence[float] = 0.001,
    batch_size: int = 1,
    generator: int | torch.Generator | None = None,
    callback: Callable[[int, EpochResult], None] | None = None,
    after_layer: Callable[[int], None] | None = None,
    progress: bool = False,
    first_layer: int = 1,
    first_epoch: int = 1,
    world: World | None = None,
) -> list[list[EpochResult]]:
    """Greedy layer-wise pre-training [Bengio07]: train the dA of each layer in turn, on the
    clean codes of the layers below it, with :func:`train`.

    ``epochs`` and ``learning_rate`` are one value for all layers or one per layer (defaults:
    the tutorial's ``pretraining_epochs=15, pretrain_lr=0.001, batch_size=1``).  Each dA uses
    its own ``corruption_level``.  ``callback(layer, result)`` follows each epoch (layer is
    1-based) and ``after_layer(layer)`` each layer, e.g. to save a checkpoint.
    ``first_layer`` and ``first_epoch`` continue from a checkpoint: the layers below
    ``first_layer`` are taken as trained (their histories are left empty).  ``world``: as
    for :func:`train` (every process computes the codes of all rows, and trains on its share).
    """
    n = model.n_layers
    epochs, rates = per_layer(epochs, n, "epochs"), per_layer(learning_rate, n, "learning_rate")
    generator = as_generator(generator, model.log_W.device)
    histories = []
    codes = x.to(model.log_W.device)
    for k, dA in enumerate(model.autoencoders):
        if k + 1 >= first_layer:
            report = None if callback is None else (lambda r, layer=k + 1: callback(layer, r))
            start = first_epoch if k + 1 == first_layer else 1
            histories.append([] if start > epochs[k] else
                             train(dA, codes, epochs=epochs[k], learning_rate=rates[k], batch_size=batch_size,
                                   generator=generator, callback=report, progress=progress, first_epoch=start,
                                   world=world))
            if after_layer is not None:
                after_layer(k + 1)
        else:
            histories.append([])
        if k + 1 < n:  # the clean codes of this layer are the next dA's data
            with torch.no_grad():
                codes = torch.cat([model.hidden[k](c) for c in codes.split(CHUNK_ROWS * 4)])
    return histories


def per_layer(value, n: int, name: str) -> list:
    """``value`` for each of ``n`` layers: a single value repeated, or a sequence of n."""
    values = list(value) if isinstance(value, Sequence) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} values for {n} layers")
    return values


@dataclass(frozen=True)
class FinetuneEpoch:
    """What one epoch of fine-tuning reports."""

    epoch: int
    train_loss: float  # mean negative log-likelihood over the epoch's minibatches
    valid_error: float  # fraction of the validation set misclassified after the epoch
    test_error: float | None  # measured, as in the tutorial, only when the validation error is a new best
    learning_rate: float
    seconds: float


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
    validation error below ``improvement_threshold`` (0.995, i.e. 0.5% better) times the best
    so far sets patience to max(patience, ``patience_increase`` (2) x iteration).  Training
    stops when the iteration count reaches the patience.
    """

    def __init__(self, n_batches: int, patience_epochs: int = 10, improvement_threshold: float = 0.995,
                 patience_increase: float = 2.0) -> None:
        self.n_batches = n_batches
        self.patience = patience_epochs * n_batches
        self.improvement_threshold, self.patience_increase = improvement_threshold, patience_increase
        self.best = math.inf

    def update(self, epoch: int, valid_error: float) -> bool:
        """Record the validation error measured at the end of ``epoch``; True if it is the best."""
        iteration = epoch * self.n_batches - 1  # 0-based index of the epoch's last minibatch
        if valid_error >= self.best:
            return False
        if valid_error < self.best * self.improvement_threshold:
            self.patience = max(self.patience, int(iteration * self.patience_increase))
        self.best = valid_error
        return True

    def exhausted(self, epoch: int) -> bool:
        """True if training must stop before the minibatch after ``epoch``."""
        return self.patience <= epoch * self.n_batches


def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, world: World | None = None) -> float:
    """Fraction of rows that ``model`` misclassifies (the tutorial's ``errors``).  With a
    ``world`` of several processes each counts the errors in every N-th row, and all get the sum."""
    world = world or SINGLE
    device = next(model.parameters()).device
    x, y = x[world.rank :: world.size], y[world.rank :: world.size]
    with torch.no_grad():
        wrong = sum(int((model(xc.to(device)).argmax(1) != yc.to(device)).sum())
                    for xc, yc in zip(x.split(4096), y.split(4096)))
    wrong, = world.sum(wrong)
    return wrong / (len(y) if world.size == 1 else world.sum(len(y))[0])


def finetune(
    model: StackedDenoisingAutoencoder,
    train_set: tuple[torch.Tensor, torch.Tensor],
    valid_set: tuple[torch.Tensor, torch.Tensor] | None,
    test_set: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    max_epochs: int = 1000,
    learning_rate: float = 0.1,
    batch_size: int = 1,
    momentum: float = 0.0,
    schedule: str = "constant",
    shuffle: bool = False,
    input_corruption: float = 0.0,
    dropout: float = 0.0,
    patience_epochs: int = 10,
    generator: int | torch.Generator | None = None,
    callback: Callable[[FinetuneEpoch], None] | None = None,
    progress: bool = False,
    state: dict | None = None,
    order_seed: int = 0,
    world: World | None = None,
) -> FinetuneResult:
    """Fine-tune the whole stack by minibatch SGD on the negative log-likelihood of the labels.

    Defaults are the tutorial's (``finetune_lr=0.1, training_epochs=1000, batch_size=1``,
    minibatches in order, no momentum).  After each epoch the validation error is measured;
    early stopping follows :class:`Patience`; the test error is measured at each new best,
    and the best model is restored at the end.  ``schedule`` is "constant" or "cosine" (the
    learning rate falls from ``learning_rate`` to 0 along a half cosine over ``max_epochs``);
    ``shuffle`` draws a new order of the training examples each epoch; ``input_corruption``
    masks that fraction of each training input (the denoising criterion kept on as a
    regulariser during fine-tuning; the tutorial's value is 0); ``dropout`` drops hidden units
    during fine-tuning (not in the tutorial either).  Without a ``valid_set`` there is no
    early stopping: all ``max_epochs`` run, and the test error is that of the final model.

    ``state``, a dict, makes fine-tuning resumable: when it holds the state of an earlier run
    (after some epoch), fine-tuning continues from there; after each epoch, before
    ``callback``, it is filled with everything needed to continue (the epoch, the history, the
    early-stopping counters, the best parameters and the momentum), for a checkpoint.

    ``world`` trains data-parallel as :func:`train` does: each of N processes takes its B rows
    of every global minibatch of N x B, the gradients are summed at each step, and the errors
    are counted by all together.  With several processes the shuffled order is drawn from a
    generator seeded with ``(order_seed, epoch)``, the same on every process; one process draws
    it from ``generator``, as before.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if max_epochs < 1 or batch_size < 1 or not learning_rate > 0 or patience_epochs < 1:
        raise ValueError("max_epochs, batch_size, learning_rate and patience_epochs must be positive")
    if not (0 <= momentum < 1 and 0 <= input_corruption < 1 and 0 <= dropout < 1):
        raise ValueError("momentum, input_corruption and dropout must be in [0, 1)")
    world = world or SINGLE
    device = model.log_W.device
    x, y = (t.to(device) for t in train_set)
    n_batches = len(x) // (batch_size * world.size)
    if n_batches == 0:
        raise ValueError(f"need at least batch_size={batch_size} training examples per process, got {len(x)} "
                         f"for {world.size}")
    generator = as_generator(generator, device)
    world.broadcast_(model.parameters())
    step = _FinetuneStep(model, momentum, dropout, generator, world)
    rule = Patience(n_batches, patience_epochs)
    history, best_state, best_epoch, test_error, stopped_by = [], None, 0, None, "max_epochs"
    first = 1
    if state:  # continue an interrupted run
        first = state["epoch"] + 1
        history = [FinetuneEpoch(**e) for e in state["history"]]
        rule.patience, rule.best = state["patience"], state["best"]
        best_epoch, test_error, best_state = state["best_epoch"], state["test_error"], state["best_params"]
        if step.velocity is not None:
            for (vW, vb), (sW, sb) in zip(step.velocity, state["velocity"]):
                vW.copy_(sW)
                vb.copy_(sb)
        if state.get("stopped"):
            first = max_epochs + 1
            stopped_by = state["stopped"]
    for epoch in range(first, max_epochs + 1):
        start = time.perf_counter()
        lr = learning_rate * SCHEDULES[schedule]((epoch - 1) / max_epochs)
        if world.size == 1:
            order = torch.randperm(len(x), generator=generator, device=x.device) if shuffle else None
        else:
            order = (torch.randperm(len(x), generator=_order_generator(order_seed, epoch)) if shuffle
                     else torch.arange(len(x)))
            order = order[: n_batches * batch_size * world.size].view(n_batches, world.size, batch_size)
            order = order[:, world.rank].reshape(-1).to(device)
        xs, ys = (x, y) if order is None else (x[order], y[order])
        total = 0.0
        with torch.no_grad(), _threads_for(batch_size):
            for i in tqdm(range(n_batches), desc=f"epoch {epoch}", unit="batch", leave=False,
                          disable=not progress, mininterval=0.5):
                rows = slice(i * batch_size, (i + 1) * batch_size)
                xb = mask(xs[rows], input_corruption, generator) if input_corruption else xs[rows]
                total += step(xb, ys[rows], lr)
        total, = world.sum(total / world.size)
        if valid_set is None:  # no early stopping: the final model is the one kept
            valid_error, is_best = math.nan, epoch == max_epochs
        else:
            valid_error = error_rate(model, *valid_set, world=world)
            is_best = rule.update(epoch, valid_error)
        this_test = None
        if is_best:
            best_epoch, best_state = epoch, {k: v.detach().clone() for k, v in model.named_parameters()}
            if test_set is not None:
                this_test = test_error = error_rate(model, *test_set, world=world)
        record = FinetuneEpoch(epoch, total / n_batches, valid_error, this_test, lr, time.perf_counter() - start)
        # The zero-initialised softmax starts at NLL ln K; a hundred times that is a blow-up.
        if not math.isfinite(record.train_loss) or record.train_loss > DIVERGENCE_FACTOR * math.log(model.n_classes):
            raise TrainingDiverged(f"fine-tuning diverged at epoch {epoch} (mean negative log-likelihood "
                                   f"{record.train_loss:.4g}); try a lower learning rate")
        history.append(record)
        exhausted = valid_set is not None and rule.exhausted(epoch)
        if state is not None:
            state.update(epoch=epoch, history=[vars(e) for e in history], patience=rule.patience, best=rule.best,
                         best_epoch=best_epoch, test_error=test_error, best_params=best_state,
                         velocity=step.velocity or [], stopped="patience" if exhausted else None)
        if callback is not None:
            callback(record)
        if exhausted:
            stopped_by = "patience"
            break
    if best_state is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(best_state[name])
    best_valid_error = math.nan if valid_set is None else rule.best
    return FinetuneResult(history, best_epoch, best_valid_error, test_error, stopped_by)


class _FinetuneStep:
    """One step of minibatch SGD (with optional momentum) on the negative log-likelihood of the
    whole stack, written out by hand as for the dA (see the module docstring).

    Forward: h_k = s(h_{k-1} W_k + b_k); logits = h_L W + b.  Backward: the gradient of the
    mean NLL at the logits is (softmax - onehot) / B; through a sigmoid layer it is
    (d W^T) * h (1 - h).  Update, as torch.optim.SGD: v = momentum v + g; W -= lr v.  With
    momentum the gradient GEMM accumulates straight into v (beta = momentum); without, into W.
    With ``dropout`` p > 0, each hidden unit's output is zeroed with probability p and the
    others scaled by 1 / (1 - p) during training (inverted dropout, Srivastava et al. 2014).
    """

    def __init__(self, model: StackedDenoisingAutoencoder, momentum: float, dropout: float = 0.0,
                 generator: torch.Generator | None = None, world: World = SINGLE) -> None:
        self.weights = [(layer.W, layer.b) for layer in model.hidden] + [(model.log_W, model.log_b)]
        self.momentum, self.dropout, self.generator = momentum, dropout, generator
        self.velocity = [(torch.zeros_like(W), torch.zeros_like(b)) for W, b in self.weights] if momentum else None
        # Data-parallel: each step's gradients go to one flat buffer, summed over the processes
        # by one all-reduce, then divided by their number (each is already a mean over B rows).
        self.world, self.grads = world, None
        if world.size > 1:
            sizes = [t.numel() for pair in self.weights for t in pair]
            self.grads = torch.empty(sum(sizes), device=model.log_W.device, dtype=model.log_W.dtype)
            parts = self.grads.split(sizes)
            self.grad_views = [(parts[2 * k].view_as(W), parts[2 * k + 1]) for k, (W, b) in enumerate(self.weights)]
        self._rows = self._ones = None  # arange(B) and ones(B), made once per batch size

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
        """One step on the minibatch (x, y); returns its mean NLL before the step."""
        B = x.shape[0]
        inputs, outputs, masks, h = [x], [], [], x
        for W, b in self.weights[:-1]:
            h = torch.addmm(b, h, W).sigmoid_()
            outputs.append(h)
            if self.dropout:
                keep = torch.empty_like(h).bernoulli_(1.0 - self.dropout, generator=self.generator)
                keep.div_(1.0 - self.dropout)
                masks.append(keep)
                h = h * keep
            inputs.append(h)
        W, b = self.weights[-1]
        log_p = torch.log_softmax(torch.addmm(b, h, W), dim=1)
        if self._rows is None or len(self._rows) != B:
            self._rows = torch.arange(B, device=x.device)
            self._ones = torch.ones(B, device=x.device, dtype=x.dtype)
        rows, ones = self._rows, self._ones
        loss = -float(log_p[rows, y].sum()) / B
        d = log_p.exp_()
        d[rows, y] -= 1.0
        d.div_(B)
        deltas = [d]
        for k in range(len(self.weights) - 1, 0, -1):  # back through the (dropped-out) sigmoid layers
            g = d @ self.weights[k][0].t()
            if self.dropout:
                g.mul_(masks[k - 1])
            d = aten.sigmoid_backward(g, outputs[k - 1])
            deltas.append(d)
        deltas.reverse()
        if self.grads is not None:
            self._all_reduce_step(inputs, deltas, ones, lr)
            return loss
        for k, ((W, b), h, d) in enumerate(zip(self.weights, inputs, deltas)):
            if self.velocity is None:
                W.addmm_(h.t(), d, alpha=-lr)
                b.addmv_(d.t(), ones, alpha=-lr)
            else:
                vW, vb = self.velocity[k]
                vW.addmm_(h.t(), d, beta=self.momentum)
                vb.addmv_(d.t(), ones, beta=self.momentum)
                W.add_(vW, alpha=-lr)
                b.add_(vb, alpha=-lr)
        return loss

    def _all_reduce_step(self, inputs: list, deltas: list, ones: torch.Tensor, lr: float) -> None:
        """The same update, from the gradients averaged over the processes."""
        for (gW, gb), h, d in zip(self.grad_views, inputs, deltas):
            torch.mm(h.t(), d, out=gW)
            torch.mv(d.t(), ones, out=gb)
        self.world.all_reduce_(self.grads).div_(self.world.size)
        for k, ((W, b), (gW, gb)) in enumerate(zip(self.weights, self.grad_views)):
            if self.velocity is None:
                W.add_(gW, alpha=-lr)
                b.add_(gb, alpha=-lr)
            else:
                vW, vb = self.velocity[k]
                vW.mul_(self.momentum).add_(gW)
                vb.mul_(self.momentum).add_(gb)
                W.add_(vW, alpha=-lr)
                b.add_(vb, alpha=-lr)


SCHEDULES = {
    "constant": lambda t: 1.0,
    "cosine": lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),
}
