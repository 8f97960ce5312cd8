"""The denoising autoencoder (dA) of Vincent et al. (2008), as in the deeplearning.net tutorial.

A dA maps an input x in [0, 1]^d to a hidden code and back::

    x~ = q(x~ | x)                  stochastic corruption (here: masking noise)
    y  = s(x~ W + b)                the code                    (tutorial: get_hidden_values)
    z  = s(y W'^T + b')             the reconstruction          (tutorial: get_reconstructed_input)
    L  = - sum_k [x_k log z_k + (1 - x_k) log(1 - z_k)]        cross-entropy against the *clean* x

With tied weights (the default, as in the tutorial) W' = W.  The cost of a minibatch is the
mean over its examples of L, which is what the tutorial's ``get_cost_updates`` returns.

The weight matrix ``W`` has shape (n_visible, n_hidden), as in the tutorial and its MLP's
``HiddenLayer``: ``x @ W`` is the encoder, and the columns of ``W`` (rows of ``W.T``) are the
filters.  ``W`` and the hidden bias ``b`` may be passed in, so that a dA and a layer of an MLP
share them (the tutorial's ``SdA`` does exactly this); the visible bias ``b_prime`` belongs to
the dA alone.

References
----------
[Vincent08] P. Vincent, H. Larochelle, Y. Bengio, P.-A. Manzagol. Extracting and composing
    robust features with denoising autoencoders. ICML 2008.
[Bengio07] Y. Bengio, P. Lamblin, D. Popovici, H. Larochelle. Greedy layer-wise training of
    deep networks. NIPS 2007.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .corruption import corrupt

LOSSES = ("cross-entropy", "squared-error")

aten = torch.ops.aten


@dataclass(frozen=True)
class Activation:
    """An encoder non-linearity s, in the forms the model and the hand-written steps use."""

    function: Callable[[torch.Tensor], torch.Tensor]  # y = s(h)
    apply_: Callable[[torch.Tensor], object]  # h <- s(h), in place
    backward_: Callable[[torch.Tensor, torch.Tensor], object]  # dy <- dy * s'(h), in place, from y = s(h)
    slope: Callable[[torch.Tensor], torch.Tensor]  # s'(h) written in terms of y = s(h)


# The one table of activations: the model's forward pass, its contractive penalty and the fused
# in-place passes of dae.steps all read it.  s'(h) in terms of y: sigmoid y (1 - y), tanh 1 - y^2,
# relu [y > 0], linear 1.
ACTIVATIONS = {
    "sigmoid": Activation(torch.sigmoid, torch.sigmoid_,
                          lambda dy, y: aten.sigmoid_backward.grad_input(dy, y, grad_input=dy), lambda y: y * (1 - y)),
    "tanh": Activation(torch.tanh, torch.tanh_,
                       lambda dy, y: aten.tanh_backward.grad_input(dy, y, grad_input=dy), lambda y: 1 - y * y),
    "relu": Activation(torch.relu, torch.relu_,
                       lambda dy, y: aten.threshold_backward.grad_input(dy, y, 0, grad_input=dy),
                       lambda y: (y > 0).to(y.dtype)),
    "linear": Activation(lambda h: h, lambda h: None, lambda dy, y: None, torch.ones_like),
}


def reconstruction_loss(x: torch.Tensor, a: torch.Tensor, loss: str) -> torch.Tensor:
    """Each feature's term of L(x, z), from the decoder's output pre-activation a: the
    cross-entropy -[x log z + (1 - x) log(1 - z)] with z = s(a), computed from the logits
    (log z = -softplus(-a), log(1 - z) = -softplus(a)) so that it stays finite where z rounds
    to 0 or 1; or the squared error (a - x)^2 of a linear output z = a.  Summed over a row: L."""
    if loss == "cross-entropy":
        return F.binary_cross_entropy_with_logits(a, x, reduction="none")
    return (a - x).pow(2)


def init_range(n_in: int, n_out: int) -> float:
    """r of the tutorial's W ~ U(-r, r) for sigmoid units: 4 sqrt(6 / (n_in + n_out)), the
    interval of Glorot & Bengio (2010) for tanh, times 4 (tutorial: dA.__init__, HiddenLayer)."""
    return 4.0 * math.sqrt(6.0 / (n_in + n_out))


class DenoisingAutoencoder(nn.Module):
    """A denoising autoencoder with tied (default) or untied weights.

    Parameters
    ----------
    n_visible, n_hidden : int
        Sizes of the input and of the code (tutorial: 784 and 500 for MNIST).
    corruption_level : float
        The level of the noise: for masking (the tutorial's), the probability with which each
        input is zeroed before encoding (tutorial: 0.0 and 0.3).
    noise : {"masking", "gaussian", "salt-and-pepper"}
        The noise process (see :mod:`dae.corruption`); the level is p, sigma or nu.
    tied : bool
        If True (the tutorial's choice), the decoder uses W' = W.  If False it has its own
        ``W_prime`` of the same shape, initialised like ``W``.
    loss : {"cross-entropy", "squared-error"}
        Cross-entropy with a sigmoid decoder (the tutorial's, for inputs in [0, 1]), or the
        squared error ``||x - z||^2`` with a linear decoder (for real-valued inputs).
    activation : {"sigmoid", "tanh", "relu", "linear"}
        The encoder's non-linearity ``s`` (tutorial: sigmoid).  "linear" with
        ``loss="squared-error"`` is the linear autoencoder that finds the principal subspace.
    sparsity_target, sparsity_weight : float
        A sparsity penalty: sparsity_weight * sum_j KL(rho || rho_hat_j), where rho_hat_j is the
        mean activation of hidden unit j over the minibatch and rho the target (sigmoid codes
        only; weight 0, the default, turns it off).
    contraction : float
        The contractive penalty lambda * ||J_f(x)||_F^2 of Rifai et al. (2011), the squared
        Frobenius norm of the encoder's Jacobian, in closed form (the tutorial's ``cA.py``);
        0, the default, turns it off.
    W, b : nn.Parameter, optional
        Existing parameters to share, of shapes (n_visible, n_hidden) and (n_hidden,).  When
        given they are used as they are (not re-initialised).
    generator : torch.Generator, optional
        Source of randomness for the initial weights.

    Attributes
    ----------
    W : nn.Parameter (n_visible, n_hidden)
    b : nn.Parameter (n_hidden,), the hidden bias
    b_prime : nn.Parameter (n_visible,), the visible bias
    W_prime : nn.Parameter (n_visible, n_hidden) or None when tied
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        corruption_level: float = 0.0,
        noise: str = "masking",
        tied: bool = True,
        loss: str = "cross-entropy",
        activation: str = "sigmoid",
        sparsity_target: float = 0.05,
        sparsity_weight: float = 0.0,
        contraction: float = 0.0,
        W: nn.Parameter | None = None,
        b: nn.Parameter | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        from .config import DAConfig  # the rules between settings live there

        if not (isinstance(n_visible, int) and n_visible >= 1):
            raise ValueError(f"n_visible must be a positive integer, got {n_visible!r}")
        DAConfig(n_hidden, corruption_level, noise, loss, activation, tied, sparsity_target, sparsity_weight,
                 contraction).check()
        if W is not None and tuple(W.shape) != (n_visible, n_hidden):
            raise ValueError(f"W must have shape ({n_visible}, {n_hidden}), got {tuple(W.shape)}")
        if b is not None and tuple(b.shape) != (n_hidden,):
            raise ValueError(f"b must have shape ({n_hidden},), got {tuple(b.shape)}")
        self.n_visible = n_visible
        self.n_hidden = n_hidden
        self.corruption_level = float(corruption_level)
        self.noise = noise
        self.tied = tied
        self.loss_name = loss
        self.activation = activation
        self.sparsity_target, self.sparsity_weight = float(sparsity_target), float(sparsity_weight)
        self.contraction = float(contraction)
        factory = {"device": device, "dtype": dtype}
        self._owns_W, self._owns_b = W is None, b is None
        self.W = W if W is not None else nn.Parameter(torch.empty(n_visible, n_hidden, **factory))
        self.b = b if b is not None else nn.Parameter(torch.zeros(n_hidden, **factory))
        self.b_prime = nn.Parameter(torch.zeros(n_visible, device=self.W.device, dtype=self.W.dtype))
        self.W_prime = None if tied else nn.Parameter(torch.empty_like(self.W))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise the parameters this dA owns, as the tutorial does.

        W ~ Uniform(-r, r) with r = :func:`init_range` (tutorial, dA.__init__).  Biases start
        at zero (tutorial).  Shared parameters passed in are left untouched.
        """
        r = init_range(self.n_visible, self.n_hidden)
        with torch.no_grad():
            if self._owns_W:
                self.W.uniform_(-r, r, generator=generator)
            if self._owns_b:
                self.b.zero_()
            self.b_prime.zero_()
            if self.W_prime is not None:
                self.W_prime.uniform_(-r, r, generator=generator)

    @classmethod
    def from_config(cls, n_visible: int, config, **kwargs) -> DenoisingAutoencoder:
        """A dA of ``n_visible`` inputs as a :class:`dae.config.DAConfig` describes it."""
        return cls(n_visible, config.n_hidden, corruption_level=config.corruption_level, noise=config.noise,
                   tied=config.tied, loss=config.loss, activation=config.activation,
                   sparsity_target=config.sparsity_target, sparsity_weight=config.sparsity_weight,
                   contraction=config.contraction, **kwargs)

    @property
    def config(self):
        """The :class:`dae.config.DAConfig` of this dA."""
        from .config import DAConfig

        return DAConfig(self.n_hidden, self.corruption_level, self.noise, self.loss_name, self.activation, self.tied,
                        self.sparsity_target, self.sparsity_weight, self.contraction)

    @property
    def decoder_weight(self) -> torch.Tensor:
        """W' (n_visible, n_hidden): W itself when tied."""
        return self.W if self.W_prime is None else self.W_prime

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x~ ~ q(x~ | x): for masking, x with each input zeroed with probability ``corruption_level``."""
        return corrupt(x, self.noise, self.corruption_level, generator)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code y = s(x W + b) (tutorial: get_hidden_values)."""
        return ACTIVATIONS[self.activation].function(torch.addmm(self.b, x, self.W))

    def decode_logits(self, y: torch.Tensor) -> torch.Tensor:
        """The decoder's pre-activation a = y W'^T + b'."""
        return torch.addmm(self.b_prime, y, self.decoder_weight.t())

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        """The reconstruction z = s(y W'^T + b') (tutorial: get_reconstructed_input).

        The output unit is a sigmoid for the cross-entropy loss and the identity for the
        squared error.
        """
        a = self.decode_logits(y)
        return torch.sigmoid(a) if self.loss_name == "cross-entropy" else a

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """z = decode(encode(x)), without corruption."""
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    def reconstruction_error(self, x: torch.Tensor, x_input: torch.Tensor | None = None) -> torch.Tensor:
        """The loss L(x, z) of each row (shape (n,)), with z reconstructed from ``x_input``
        (default: x itself, uncorrupted)."""
        return self._error(x, self.decode_logits(self.encode(x if x_input is None else x_input)))

    def _error(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(x, a, self.loss_name).sum(dim=1)

    @property
    def regularised(self) -> bool:
        """True if a penalty is added to the reconstruction error."""
        return bool(self.sparsity_weight or self.contraction)

    def penalty(self, y: torch.Tensor, mean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The regularisers on the codes y of a minibatch (zero when none is set).

        ``mean`` computes rho_hat from y (default ``y.mean(dim=0)``); data-parallel training
        passes the mean over every process's share of the minibatch.

        Sparsity: weight * sum_j [rho log(rho / rho_hat_j) + (1 - rho) log((1 - rho) / (1 - rho_hat_j))].
        Contraction: lambda * mean over rows of sum_j s'(h_j)^2 sum_i W_ij^2, which is
        ||dy/dx||_F^2 since dy_j/dx_i = s'(h_j) W_ij (the tutorial's cA.py, for sigmoid units).
        """
        total = y.new_zeros(())
        if self.sparsity_weight:
            rho = self.sparsity_target
            rho_hat = (y.mean(dim=0) if mean is None else mean(y)).clamp(1e-6, 1 - 1e-6)
            kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
            total = total + self.sparsity_weight * kl.sum()
        if self.contraction:
            slope = ACTIVATIONS[self.activation].slope(y)
            total = total + self.contraction * (slope.pow(2) @ self.W.pow(2).sum(dim=0)).mean()
        return total

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None,
             mean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The training cost of a minibatch: mean over rows of L(x, z(corrupt(x)))
        (tutorial: ``cost = T.mean(L)`` in get_cost_updates), plus the penalties if any
        (``mean``: see :meth:`penalty`).  Differentiable."""
        y = self.encode(self.corrupt(x, generator))
        error = self._error(x, self.decode_logits(y)).mean()
        return error + self.penalty(y, mean) if self.regularised else error

    def extra_repr(self) -> str:
        return (
            f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, "
            f"corruption_level={self.corruption_level}, noise={self.noise!r}, tied={self.tied}, "
            f"loss={self.loss_name!r}, activation={self.activation!r}"
        )
