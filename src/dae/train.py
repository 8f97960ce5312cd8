"""Training a denoising autoencoder by minibatch stochastic gradient descent, as the tutorial does.

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
autograd on ``model.loss`` (tests/test_train.py checks one step against it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from .autoencoder import DenoisingAutoencoder
from .corruption import mask

aten = torch.ops.aten

# Rows handled per chunk of bulk work: big enough that the vectorised passes are cheap per
# element, small enough that the chunk's buffers (about 3 x 2048 x 784 floats) stay in cache.
CHUNK_ROWS = 2048


class TrainingDiverged(ArithmeticError):
    """The cost became NaN or infinite: the learning rate is too high for this model and data."""


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
    x: torch.Tensor,
    *,
    epochs: int = 15,
    learning_rate: float = 0.1,
    batch_size: int = 20,
    generator: int | torch.Generator | None = None,
    callback: Callable[[EpochResult], None] | None = None,
    progress: bool = False,
) -> list[EpochResult]:
    """Train ``model`` on the rows of ``x`` by minibatch SGD; return one result per epoch.

    Defaults are the tutorial's (``test_dA``): 15 epochs, learning rate 0.1, batch size 20.
    Minibatches are taken in order, ``x[i*B:(i+1)*B]``; as in the tutorial, the last
    ``len(x) % batch_size`` rows, if any, are not used.  ``generator`` (a seed or a
    ``torch.Generator``) drives the corruption: with the same seed and the same initial
    weights, training on the CPU is bit-for-bit repeatable.  ``callback`` is called after
    each epoch; ``progress`` shows a progress bar within each epoch.  A cost that becomes
    NaN or infinite raises :class:`TrainingDiverged`.
    """
    if x.ndim != 2 or x.shape[1] != model.n_visible:
        raise ValueError(f"x must have shape (n, {model.n_visible}), got {tuple(x.shape)}")
    if epochs < 1 or batch_size < 1 or not learning_rate > 0:
        raise ValueError("epochs, batch_size and learning_rate must be positive")
    n_batches = x.shape[0] // batch_size
    if n_batches == 0:
        raise ValueError(f"need at least batch_size={batch_size} rows to train, got {x.shape[0]}")
    device, dtype = model.W.device, model.W.dtype
    x = x.to(device=device, dtype=dtype).contiguous()
    generator = as_generator(generator, device)
    step = _SGDStep(model, batch_size, max(1, min(n_batches, CHUNK_ROWS // batch_size)), learning_rate)

    history = []
    with torch.no_grad():
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            total = 0.0
            with tqdm(total=n_batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress) as bar:
                for first in range(0, n_batches, step.batches_per_chunk):
                    k = min(step.batches_per_chunk, n_batches - first)
                    total += step.chunk(x[first * batch_size : (first + k) * batch_size], generator)
                    bar.update(k)
            result = EpochResult(epoch, total / (n_batches * batch_size), time.perf_counter() - start)
            if not math.isfinite(result.cost):
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch} (cost {result.cost}); try a lower learning rate"
                )
            history.append(result)
            if callback is not None:
                callback(result)
    return history


class _SGDStep:
    """Preallocated buffers and the hand-written SGD step of one dA (see the module docstring)."""

    def __init__(self, model: DenoisingAutoencoder, batch_size: int, batches_per_chunk: int, lr: float) -> None:
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
        self.alpha = -lr * (1.0 if self.cross_entropy else 2.0) / B

    def chunk(self, x: torch.Tensor, generator: torch.Generator) -> float:
        """Run SGD over the consecutive minibatches of ``x``; return the sum of their costs."""
        m, B = self.model, self.B
        k = x.shape[0] // B
        xs = x.view(k, B, -1)
        L, A, R = self.L[:k], self.A[:k], self.R
        mask(xs, m.corruption_level, generator=generator, out=L[:, :B])

        W, b, b_prime, Wd = m.W, m.b, m.b_prime, m.decoder_weight
        W_t, Wd_t = W.t(), Wd.t()
        dy, y = R[:B], R[B:]
        dy_t, y_t = dy.t(), y.t()
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
            b.addmv_(dy_t, ones, alpha=alpha)
            b_prime.addmv_(dz.t(), ones, alpha=alpha)
            if tied:
                W.addmm_(Li.t(), R, alpha=alpha)
            else:
                W.addmm_(x_tilde.t(), dy, alpha=alpha)
                Wd.addmm_(dz.t(), y, alpha=alpha)
        return self._cost(xs, A)

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


def _no_grad_step(dy: torch.Tensor, y: torch.Tensor) -> None:
    pass


# For each encoder activation: apply it in place, and multiply dy in place by s'(h) written in
# terms of the output y (sigmoid: y (1 - y); tanh: 1 - y^2; relu: [y > 0]), one fused pass each.
_ACTIVATION_STEPS = {
    "sigmoid": (lambda y: torch.sigmoid(y, out=y), lambda dy, y: aten.sigmoid_backward.grad_input(dy, y, grad_input=dy)),
    "tanh": (lambda y: torch.tanh(y, out=y), lambda dy, y: aten.tanh_backward.grad_input(dy, y, grad_input=dy)),
    "relu": (torch.relu_, lambda dy, y: aten.threshold_backward.grad_input(dy, y, 0, grad_input=dy)),
    "linear": (lambda y: None, _no_grad_step),
}
