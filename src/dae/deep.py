"""The deep autoencoder of Hinton & Salakhutdinov (2006): a stack pre-trained layer by layer,
unrolled into an encoder and a decoder, and fine-tuned end to end on reconstruction.

With L layers of widths n_0 (the input), n_1, ..., n_L (the code)::

    h_0 = x
    h_k = s(h_{k-1} W_k + b_k)           k = 1..L      encoder (the code h_L: linear or sigmoid)
    g_L = h_L
    g_{k-1} = s(g_k W'_k^T + b'_k)       k = L..1      decoder; the output g_0 = z is a sigmoid
                                                       for cross-entropy, the identity for squared error

Each encoder layer k is the encoder of a denoising autoencoder (dA), trained greedily on the
clean codes h_{k-1} of the layers below, exactly as the dAs of a stacked denoising autoencoder
are ([Vincent10], :mod:`dae.stacked`); [Hinton06] pre-trained RBMs instead, and [Vincent10]
find that stacking denoising autoencoders pre-trains deep networks about as well as stacking
RBMs (on their classification benchmarks).  The dA's visible bias b'_k is
layer k's decoder bias.  *Unrolling* turns the stack into the deep autoencoder: the encoder
is the dAs' encoders in order, the decoder their decoders in reverse order, starting from the
transposed weights W'_k = W_k.  [Hinton06] then untie them, so that encoder and decoder are
fine-tuned as separate weights (``tied=False``, the default); ``tied=True`` keeps W'_k = W_k.
Unrolling changes nothing the network computes: before fine-tuning, ``encode`` gives the
stack's codes and ``decode`` the composition of the dAs' decoders.

Fine-tuning minimises the mean reconstruction error of a minibatch by backpropagation through
all 2L layers: the cross-entropy L = -sum_i [x_i log z_i + (1 - x_i) log(1 - z_i)] (theirs for
MNIST, computed from the logits) or the squared error ||x - z||^2.  [Hinton06] report the
squared error per image on the test set, which :func:`dae.train.squared_error` measures; PCA
with as many components as the code (:func:`pca_fit`) is their baseline.

The training loops are in :mod:`dae.train` (:func:`dae.train.pretrain`,
:func:`dae.train.train_deep`).

References
----------
[Hinton06] G. E. Hinton, R. R. Salakhutdinov. Reducing the dimensionality of data with neural
    networks. Science 313 (5786), 504-507, 2006.  Fig. 2B: test digits reconstructed by the
    784-1000-500-250-30 autoencoder and by PCA; fig. 3B: the 2-D codes of a 784-1000-500-250-2 one.
[Vincent10] P. Vincent, H. Larochelle, I. Lajoie, Y. Bengio, P.-A. Manzagol. Stacked denoising
    autoencoders: learning useful representations in a deep network with a local denoising
    criterion. JMLR 11, 2010.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .autoencoder import DenoisingAutoencoder, reconstruction_loss

CODE_ACTIVATIONS = ("linear", "sigmoid")


class DeepAutoencoder(nn.Module):
    """An encoder and a decoder unrolled from a stack of dAs [Hinton06], fine-tuned on reconstruction.

    Parameters
    ----------
    n_visible : int
        Input size (784 for MNIST).
    hidden_layer_sizes : sequence of int
        The encoder's widths, the last one the code ([Hinton06]: 1000, 500, 250, 30).
    code_activation : {"linear", "sigmoid"}
        The code layer's units; the other hidden units are sigmoids.  [Hinton06]'s top RBM had
        linear code units.
    tied : bool
        After unrolling, False gives the decoder its own weights, copies of the encoder's
        ([Hinton06]); True keeps the decoder on the encoder's W^T.
    loss : {"cross-entropy", "squared-error"}
        The reconstruction error fine-tuned: cross-entropy with a sigmoid output (inputs in
        [0, 1]), or the squared error with a linear output.  The first dA, which reconstructs
        the data, is pre-trained with it; the dAs above reconstruct sigmoid codes in [0, 1]
        with the cross-entropy, as the tutorial's SdA does.
    corruption_levels : sequence of float, optional
        The masking level of each dA for pre-training; default: the tutorial's 0.1, 0.2, 0.3,
        the last repeated (:func:`dae.config.default_corruption_levels`).
    generator : torch.Generator, optional
        Source of the initial weights.

    Attributes
    ----------
    autoencoders : ModuleList of DenoisingAutoencoder
        Layer k's dA: its W, b are encoder layer k, its b_prime the decoder bias of layer k.
    W_prime : ParameterList or None
        The decoder's own weights (W'_k of shape (n_{k-1}, n_k)) once unrolled untied; else None.
    unrolled : bool
    """

    def __init__(
        self,
        n_visible: int,
        hidden_layer_sizes: Sequence[int] = (1000, 500, 250, 30),
        *,
        code_activation: str = "linear",
        tied: bool = False,
        loss: str = "cross-entropy",
        corruption_levels: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        from .config import DeepConfig  # the rules between settings live there

        config = DeepConfig(tuple(hidden_layer_sizes), code_activation, tied, loss,
                            None if corruption_levels is None else tuple(float(p) for p in corruption_levels))
        if not (isinstance(n_visible, int) and not isinstance(n_visible, bool) and n_visible >= 1):
            raise ValueError(f"n_visible must be a positive integer, got {n_visible!r}")
        sizes = [n_visible, *config.hidden_layer_sizes]
        self.n_visible = n_visible
        self.hidden_layer_sizes = list(config.hidden_layer_sizes)
        self.code_activation, self.tied, self.loss_name = code_activation, bool(tied), loss
        last = len(self.hidden_layer_sizes) - 1
        self.autoencoders = nn.ModuleList(
            DenoisingAutoencoder(n_in, n_out, corruption_level=level,
                                 activation=code_activation if k == last else "sigmoid",
                                 loss=loss if k == 0 else "cross-entropy",
                                 generator=generator, device=device, dtype=dtype)
            for k, (n_in, n_out, level) in enumerate(zip(sizes, sizes[1:], config.corruption_levels)))
        self.W_prime: nn.ParameterList | None = None
        self.unrolled = False

    @classmethod
    def from_config(cls, n_visible: int, config, **kwargs) -> DeepAutoencoder:
        """A deep autoencoder as a :class:`dae.config.DeepConfig` describes it."""
        return cls(n_visible, config.hidden_layer_sizes, code_activation=config.code_activation, tied=config.tied,
                   loss=config.loss, corruption_levels=config.corruption_levels, **kwargs)

    @classmethod
    def from_stack(cls, stack, *, code_activation: str | None = None, tied: bool = False,
                   loss: str | None = None) -> DeepAutoencoder:
        """Unroll a pre-trained stack: a :class:`dae.StackedDenoisingAutoencoder` (its classifier
        is left out) or a sequence of dAs whose widths chain (any widths).

        The new model holds copies of the dAs' W, b and b' (and W' of an untied dA, as its
        decoder weight: ``tied=True`` needs tied dAs); ``code_activation`` defaults to the top
        dA's activation (it must be linear or sigmoid, the others sigmoid) and ``loss`` to the
        first dA's; the dAs above the first reconstruct sigmoid codes, so they must have the
        cross-entropy's sigmoid decoder.  The result is unrolled: its encoder gives the stack's
        codes and, before any fine-tuning, its decoder the dAs' decoders in reverse order.
        """
        dAs = list(getattr(stack, "autoencoders", stack))
        if not dAs or not all(isinstance(dA, DenoisingAutoencoder) for dA in dAs):
            raise ValueError("from_stack needs a StackedDenoisingAutoencoder or a sequence of DenoisingAutoencoders")
        for below, above in zip(dAs, dAs[1:]):
            if above.n_visible != below.n_hidden:
                raise ValueError(f"the dAs do not chain: {below.n_hidden} codes into {above.n_visible} inputs")
        if any(dA.activation != "sigmoid" for dA in dAs[:-1]):
            raise ValueError("every dA below the code layer must have sigmoid units")
        if any(dA.loss_name != "cross-entropy" for dA in dAs[1:]):
            raise ValueError("every dA above the first must have a sigmoid decoder (the cross-entropy loss)")
        if tied and any(not dA.tied for dA in dAs):
            raise ValueError("tied=True needs tied dAs: an untied dA's decoder has weights of its own")
        code_activation = dAs[-1].activation if code_activation is None else code_activation
        if dAs[-1].activation != code_activation:
            raise ValueError(f"the top dA's units are {dAs[-1].activation}, not {code_activation}")
        W = dAs[0].W
        model = cls(dAs[0].n_visible, [dA.n_hidden for dA in dAs], code_activation=code_activation, tied=tied,
                    loss=dAs[0].loss_name if loss is None else loss,
                    corruption_levels=[dA.corruption_level for dA in dAs], device="meta", dtype=W.dtype)
        model = model.to_empty(device=W.device)
        with torch.no_grad():
            for mine, theirs in zip(model.autoencoders, dAs):
                for name in ("W", "b", "b_prime"):
                    getattr(mine, name).copy_(getattr(theirs, name))
            model.unroll()
            for k, dA in enumerate(dAs):
                if not dA.tied:  # then the model is untied too
                    model.W_prime[k].copy_(dA.W_prime)
        return model

    @property
    def config(self):
        """The :class:`dae.config.DeepConfig` of this model."""
        from .config import DeepConfig

        return DeepConfig(tuple(self.hidden_layer_sizes), self.code_activation, self.tied, self.loss_name,
                          tuple(dA.corruption_level for dA in self.autoencoders))

    @property
    def n_layers(self) -> int:
        return len(self.autoencoders)

    @property
    def n_code(self) -> int:
        """The size of the code."""
        return self.hidden_layer_sizes[-1]

    def unroll(self) -> None:
        """Make the stack a deep autoencoder, after pre-training (or at once, without it).

        Untied (``tied=False``): the decoder gets its own weights W'_k, copies of the W_k
        ([Hinton06]); tied: the decoder goes on using W_k^T.  What the network computes does not
        change.  A second call does nothing (it does not copy the weights again)."""
        if self.unrolled:
            return
        if not self.tied:
            self.W_prime = nn.ParameterList(nn.Parameter(dA.W.detach().clone()) for dA in self.autoencoders)
        self.unrolled = True

    def decoder_weight(self, k: int) -> torch.Tensor:
        """W'_k (n_{k-1}, n_k) of decoder layer k (0-based): W_k itself when tied or not yet unrolled."""
        return self.autoencoders[k].W if self.W_prime is None else self.W_prime[k]

    def encode(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The code h_L (or h_layer, 1-based; ``layer=0`` returns x): the dAs' encoders in turn."""
        layer = self.n_layers if layer is None else layer
        if not 0 <= layer <= self.n_layers:
            raise ValueError(f"layer must be in 0..{self.n_layers}, got {layer}")
        for dA in self.autoencoders[:layer]:
            x = dA.encode(x)
        return x

    def decode_logits(self, code: torch.Tensor) -> torch.Tensor:
        """The output layer's pre-activation a = g_1 W'_1^T + b'_1, from the code g_L = h_L."""
        g = code
        for k in range(self.n_layers - 1, 0, -1):
            g = torch.sigmoid(torch.addmm(self.autoencoders[k].b_prime, g, self.decoder_weight(k).t()))
        return torch.addmm(self.autoencoders[0].b_prime, g, self.decoder_weight(0).t())

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """The reconstruction z from a code: a sigmoid output for cross-entropy, the identity for squared error."""
        a = self.decode_logits(code)
        return torch.sigmoid(a) if self.loss_name == "cross-entropy" else a

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """z = decode(encode(x))."""
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """The loss of each row (shape (n,)): the cross-entropy, from the logits so that it stays
        finite where z rounds to 0 or 1, or the squared error ||x - z||^2."""
        return reconstruction_loss(x, self.decode_logits(self.encode(x)), self.loss_name).sum(dim=1)

    @property
    def regularised(self) -> bool:
        """False: fine-tuning adds no penalty (what :class:`dae.steps.AutogradStep` asks)."""
        return False

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None,
             mean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The fine-tuning cost of a minibatch: the mean over its rows of the reconstruction
        error of the clean input ([Hinton06] fine-tune without noise).  ``generator`` and
        ``mean`` are unused: the signature of :meth:`DenoisingAutoencoder.loss`."""
        return self.reconstruction_error(x).mean()

    def extra_repr(self) -> str:
        sizes = "-".join(str(n) for n in [self.n_visible, *self.hidden_layer_sizes])
        return (f"sizes={sizes}, code_activation={self.code_activation!r}, tied={self.tied}, "
                f"loss={self.loss_name!r}, unrolled={self.unrolled}")


class PCA(NamedTuple):
    """Principal components: [Hinton06]'s baseline, a linear code of the same size."""

    mean: torch.Tensor  # (d,)
    components: torch.Tensor  # (k, d), orthonormal rows, the leading eigenvectors of the covariance first

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The k coordinates of each row in the principal subspace."""
        return (x.to(self.mean.dtype) - self.mean) @ self.components.t()

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The projection of each row on the principal subspace (in x's dtype)."""
        return (self.encode(x) @ self.components + self.mean).to(x.dtype)


def pca_fit(x: torch.Tensor, k: int, chunk_rows: int = 8192) -> PCA:
    """The first ``k`` principal components of the rows of ``x``: the eigenvectors of the largest
    eigenvalues of their covariance, accumulated in float64 a chunk of rows at a time."""
    if not 1 <= k <= x.shape[1]:
        raise ValueError(f"k must be in 1..{x.shape[1]}, got {k}")
    mean = x.mean(dim=0, dtype=torch.float64)
    scatter = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for rows in x.split(chunk_rows):
        centred = rows.to(torch.float64) - mean
        scatter.addmm_(centred.t(), centred)
    _, vectors = torch.linalg.eigh(scatter)  # eigenvalues in ascending order
    return PCA(mean, vectors[:, -k:].flip(1).t().contiguous())
