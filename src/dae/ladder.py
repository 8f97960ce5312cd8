"""The ladder network: a denoising autoencoder at every layer, trained with the labels.

[Rasmus15] corrupts every layer of an MLP encoder with Gaussian noise and puts a decoder with
lateral connections on top of it; the decoder denoises every layer, and its per-layer denoising
costs are minimised together with the supervised cost of the corrupted encoder on the labelled
examples.  Unlabelled data teach the encoder through the denoising costs, which is how it learns
from 100 labels what an MLP needs tens of thousands for.

The fully connected model of [Rasmus15] (section 3 and algorithm 1):

* **encoder**, for l = 1..L, on the clean path (noise 0) and on the corrupted path (noise
  sigma, also added to the input, with its own sigma_0 if given: the authors' code keeps 0.3
  there when its layers' is 0.2)::

      z_pre = h_{l-1} W_l                       no bias: batch normalisation removes it
      z     = (z_pre - mean) / std + noise      mean, std: the minibatch's own statistics
      h_l   = relu(z + beta_l)                  hidden layers
      h_L   = softmax(gamma_L * (z + beta_L))   the top

* **decoder**, for l = L..0: ``u = batchnorm(V_{l+1} z^_{l+1})`` (at the top, ``u =
  batchnorm(h~_L)``), and the denoised ``z^_l = g(z~_l, u)`` with the *vanilla combinator*,
  ten parameters per unit::

      mu = a1 sigmoid(a2 u + a3) + a4 u + a5
      v  = a6 sigmoid(a7 u + a8) + a9 u + a10
      z^ = (z~ - mu) v + mu

* **cost**: ``-log P(y~ = t | x)`` on the labelled examples (corrupted path) plus
  ``sum_l lambda_l / n_l || z_l - (z^_l - mean_l) / std_l ||^2`` per unlabelled example, where
  z_l, mean_l, std_l come from the clean path (the targets; the gradient flows into them too, as
  in the authors' code, unless ``target_gradient=False``).

At test time the clean path runs with the running statistics: averages of the clean batch
statistics while training, replaced at its end by the population statistics of the final weights
(:meth:`LadderNetwork.set_population_statistics`).

References
----------
[Rasmus15] A. Rasmus, H. Valpola, M. Honkala, M. Berglund, T. Raiko. Semi-supervised learning
    with ladder networks. NIPS 2015 (arXiv:1507.02672).
[Pezeshki16] M. Pezeshki, L. Fan, P. Brakel, A. Courville, Y. Bengio. Deconstructing the ladder
    network architecture. ICML 2016.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import EVAL_ROWS

# Batch normalisation's epsilon (torch's BatchNorm default; the reference code's 1e-10 is fragile
# in float32) and the weight of each new batch in the running averages (its decay of 0.99).
BN_EPS = 1e-5
RUNNING_MOMENTUM = 0.01
# The vanilla combinator's starting values a1..a10, those of [Rasmus15]'s code: mu = v = 0, so
# z^ = 0 at the start, and the decoder learns how much of the lateral z~ and of u to use.
COMBINATOR_INIT = (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)


def combinator(z: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """[Rasmus15]'s vanilla combinator g(z~, u); ``a`` holds a1..a10, each a row of units.

    mu = a1 sigmoid(a2 u + a3) + a4 u + a5 and v = a6 sigmoid(a7 u + a8) + a9 u + a10 have the
    same form, so both are computed at once, a1..a5 and a6..a10 side by side (``a.reshape(2, 5, ...)``):
    six fused operations, and as many in the backward pass, instead of seventeen.
    """
    c = a.reshape(2, 5, 1, a.shape[-1])  # c[0, i] = a_{i+1} (mu's), c[1, i] = a_{i+6} (v's)
    s = torch.sigmoid(torch.addcmul(c[:, 2], c[:, 1], u))
    mu, v = torch.addcmul(torch.addcmul(c[:, 4], c[:, 3], u), c[:, 0], s)
    return torch.addcmul(mu, z - mu, v)


def _normalise(x: torch.Tensor, parts: Sequence[int] | None = None) -> torch.Tensor:
    """(x - mean) / std over the minibatch (torch's batch normalisation kernels, without scale or
    shift); with ``parts``, over each of its consecutive blocks of rows apart."""
    if parts is None:
        return F.batch_norm(x, None, None, training=True, eps=BN_EPS)
    return torch.cat([_normalise(block) for block in x.split(list(parts))])


class LadderNetwork(nn.Module):
    """A fully connected ladder network for classification ([Rasmus15]).

    Parameters
    ----------
    sizes : the widths of every layer, input first, classes last (the paper's MNIST network is
        784-1000-500-250-250-250-10).
    noise_std : the standard deviation of the Gaussian noise on every layer of the corrupted path.
    input_noise_std : that of the noise on its input (None: ``noise_std``).
    denoising_weights : lambda_l for l = 0 (the input) .. L (the top), one per size.
    target_gradient : whether the denoising costs' gradient also flows into the clean path, through
        its z_l (the targets) and the statistics z^_l is normalised with: True, as in [Rasmus15]'s
        code (Theano differentiates the whole cost; batch normalisation of the targets is what keeps
        the encoder from shrinking them to make denoising easy).  False: the targets are constants
        (``dae`` before 2026-12-02).
    """

    def __init__(self, sizes: Sequence[int], noise_std: float, denoising_weights: Sequence[float],
                 generator: torch.Generator | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, input_noise_std: float | None = None,
                 target_gradient: bool = True) -> None:
        super().__init__()
        self.target_gradient = bool(target_gradient)
        self.sizes, self.noise_std = tuple(int(s) for s in sizes), float(noise_std)
        self.input_noise_std = self.noise_std if input_noise_std is None else float(input_noise_std)
        self.denoising_weights = tuple(float(w) for w in denoising_weights)
        if len(self.sizes) < 2 or len(self.denoising_weights) != len(self.sizes):
            raise ValueError("a ladder needs at least two sizes and one denoising weight per size")
        kw = dict(device=device, dtype=dtype)
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        self.W = nn.ParameterList(nn.Parameter(torch.empty(i, o, **kw)) for i, o in pairs)  # encoder
        self.V = nn.ParameterList(nn.Parameter(torch.empty(o, i, **kw)) for i, o in pairs)  # decoder
        self.beta = nn.ParameterList(nn.Parameter(torch.empty(o, **kw)) for _, o in pairs)
        self.gamma = nn.Parameter(torch.empty(self.sizes[-1], **kw))  # the softmax layer's scale
        self.a = nn.ParameterList(nn.Parameter(torch.empty(10, n, **kw)) for n in self.sizes)
        for l, (_, o) in enumerate(pairs, start=1):
            self.register_buffer(f"running_mean_{l}", torch.zeros(o, **kw))
            self.register_buffer(f"running_var_{l}", torch.ones(o, **kw))
        self.reset_parameters(generator)

    @classmethod
    def from_config(cls, n_visible: int, n_classes: int, config=None, generator: torch.Generator | None = None,
                    **kwargs) -> LadderNetwork:
        """The ladder a :class:`dae.config.LadderConfig` describes, for this data."""
        from .config import LadderConfig

        config = config or LadderConfig()
        return cls((n_visible, *config.hidden_layer_sizes, n_classes), config.noise_std, config.denoising_weights,
                   generator=generator, input_noise_std=config.input_noise_std,
                   target_gradient=config.target_gradient, **kwargs)

    @property
    def n_visible(self) -> int:
        return self.sizes[0]

    @property
    def n_classes(self) -> int:
        return self.sizes[-1]

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """W, V ~ N(0, 1/fan_in) ([Rasmus15]'s code); beta = 0, gamma = 1; the combinator as
        :data:`COMBINATOR_INIT`; running statistics mean 0, variance 1."""
        with torch.no_grad():
            for w in [*self.W, *self.V]:
                w.normal_(0.0, 1.0 / math.sqrt(w.shape[0]), generator=generator)
            for b in self.beta:
                b.zero_()
            self.gamma.fill_(1.0)
            for a in self.a:
                a.copy_(torch.tensor(COMBINATOR_INIT, dtype=a.dtype).view(10, 1).expand_as(a))
            for l in range(1, len(self.sizes)):
                self.running_mean(l).zero_()
                self.running_var(l).fill_(1.0)

    def running_mean(self, l: int) -> torch.Tensor:
        return getattr(self, f"running_mean_{l}")

    def running_var(self, l: int) -> torch.Tensor:
        return getattr(self, f"running_var_{l}")

    def _activation(self, l: int, z: torch.Tensor) -> torch.Tensor:
        """h_l from the normalised (and perhaps noisy) z_l: relu, or the top's class logits."""
        if l == len(self.sizes) - 1:
            return self.gamma * (z + self.beta[l - 1])
        return F.relu(z + self.beta[l - 1])

    def encode(self, x: torch.Tensor, noise_std: float = 0.0, generator: torch.Generator | None = None,
               update_running: bool = False, input_noise_std: float | None = None,
               parts: Sequence[int] | None = None) -> tuple[list[torch.Tensor], list[tuple], torch.Tensor]:
        """One pass of the encoder with the minibatch's statistics.

        Returns the z_l for l = 0..L (noisy when ``noise_std`` > 0; the input z_0 with
        ``input_noise_std``, by default ``noise_std``), the (mean, 1/std) of each
        z_pre_l for l = 1..L (the clean path, ``noise_std`` = 0, only: the decoder's targets are
        normalised with them), and the class logits of the top.  ``update_running`` moves the
        running statistics towards the clean path's.  ``parts`` (the corrupted path only): the
        row counts of consecutive blocks of ``x`` that are normalised apart, each with its own
        statistics, as if each went through alone (the noise is drawn for all rows at once).
        """
        if parts is not None and (noise_std == 0.0 or sum(parts) != len(x)):
            raise ValueError("parts: row counts that add up to len(x), on the corrupted path only")
        if min(parts or [len(x)]) < 2:
            raise ValueError(f"batch normalisation needs at least two rows, got {min(parts or [len(x)])}")
        def noisy(t: torch.Tensor, std: float = noise_std) -> torch.Tensor:
            if std == 0.0:
                return t
            return t + std * torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype)

        h = noisy(x, noise_std if input_noise_std is None else input_noise_std)
        zs, stats = [h], []
        for l in range(1, len(self.sizes)):
            z_pre = h @ self.W[l - 1]
            if noise_std == 0.0:  # the clean path: keep the statistics
                running = (self.running_mean(l), self.running_var(l)) if update_running else (None, None)
                z = F.batch_norm(z_pre, *running, training=True, momentum=RUNNING_MOMENTUM, eps=BN_EPS)
                # batch_norm does not return its mean and 1/std as differentiable outputs: taken again
                var, mean = torch.var_mean(z_pre, 0, correction=0)
                stats.append((mean, torch.rsqrt(var + BN_EPS)))
            else:
                z = noisy(_normalise(z_pre, parts))
            zs.append(z)
            h = self._activation(l, z)
        return zs, stats, h

    def decode(self, zs_noisy: list[torch.Tensor], logits: torch.Tensor) -> list[torch.Tensor]:
        """The decoder: the denoised z^_l for l = 0..L, from the corrupted path's z~ and output."""
        L = len(self.sizes) - 1
        u = _normalise(torch.softmax(logits, dim=1))
        out = [None] * (L + 1)
        for l in range(L, -1, -1):
            if l < L:
                u = _normalise(out[l + 1] @ self.V[l])
            out[l] = combinator(zs_noisy[l], u, self.a[l])
        return out

    def costs(self, x_labelled: torch.Tensor, y: torch.Tensor, x_unlabelled: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The supervised cost (mean over the labelled rows) and each layer's weighted denoising
        cost (mean over the unlabelled rows); the training loss is their sum."""
        n = len(x_labelled)
        if n == 1 or len(x_unlabelled) < 2:  # before the running statistics move
            raise ValueError(f"batch normalisation needs at least two rows, got {min(n, len(x_unlabelled))}")
        # The clean path: targets and statistics (constants unless target_gradient).  The running
        # statistics follow the unlabelled rows' (those of the data, not of the few labels).
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.target_gradient):
            clean, stats, _ = self.encode(x_unlabelled, 0.0, update_running=self.training)

        def corrupted(x, parts=None):
            return self.encode(x, self.noise_std, generator, input_noise_std=self.input_noise_std, parts=parts)

        if n and self.noise_std > 0.0:
            # The labelled rows above the unlabelled ones in one pass (fewer, larger products), each
            # part normalised with its own statistics, as [Rasmus15]'s code does.
            zs, _, logits = corrupted(torch.cat([x_labelled, x_unlabelled]), (n, len(x_unlabelled)))
            supervised = F.cross_entropy(logits[:n], y)
            noisy, logits = [z[n:] for z in zs], logits[n:]
        else:  # the layers' noise off: the two passes apart (the clean path's normalisation)
            supervised = F.cross_entropy(corrupted(x_labelled)[2], y) if n else x_labelled.new_zeros(())
            noisy, _, logits = corrupted(x_unlabelled)
        denoised = self.decode(noisy, logits)
        denoising = []
        for l, (target, z_hat, weight) in enumerate(zip(clean, denoised, self.denoising_weights)):
            if l > 0:
                mean, invstd = stats[l - 1]
                z_hat = (z_hat - mean) * invstd
            cost = F.mse_loss(z_hat, target, reduction="sum")
            denoising.append(cost * (weight / (self.sizes[l] * len(target))))
        return supervised, denoising

    @torch.no_grad()
    def set_population_statistics(self, x: torch.Tensor, chunk_rows: int = EVAL_ROWS) -> None:
        """Set the running statistics, which inference normalises with, to the clean path's mean
        and (unbiased) variance over all the rows of ``x``, layer by layer: the population
        statistics of batch normalisation's inference (Ioffe & Szegedy 2015, algorithm 2).

        The running averages move 1% towards each minibatch's, from mean 0 and variance 1:
        right after MNIST's 30,000 steps, but far from the final weights' after the few hundred
        steps a small data set gets.  :func:`dae.train_ladder` calls this at the end.
        """
        param = self.W[0]
        n = len(x)
        for l in range(1, len(self.sizes)):
            total = squares = torch.zeros(self.sizes[l], dtype=torch.float64, device=param.device)
            for chunk in x.split(chunk_rows):
                z = (self.hidden(chunk.to(param.device, param.dtype), l - 1) @ self.W[l - 1]).double()
                total, squares = total + z.sum(0), squares + z.square().sum(0)
            mean = total / n
            self.running_mean(l).copy_(mean)
            self.running_var(l).copy_(((squares - n * mean.square()) / max(n - 1, 1)).clamp_min(0.0))

    def hidden(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """h_layer of the clean path with the running statistics: the features of hidden layer
        ``layer`` (1-based), or the class logits for the top."""
        h = x
        for l in range(1, layer + 1):
            z = (h @ self.W[l - 1] - self.running_mean(l)) * torch.rsqrt(self.running_var(l) + BN_EPS)
            h = self._activation(l, z)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of the clean path with the running statistics (inference)."""
        return self.hidden(x, len(self.sizes) - 1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.forward(x), dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).argmax(1)

    def extra_repr(self) -> str:
        return (f"sizes={self.sizes}, noise_std={self.noise_std}, input_noise_std={self.input_noise_std}, "
                f"denoising_weights={self.denoising_weights}, target_gradient={self.target_gradient}")
