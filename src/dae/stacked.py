"""Stacked denoising autoencoders (SdA): a deep MLP whose layers are pre-trained as dAs.

As in the deeplearning.net tutorial (``SdA.py``) and [Vincent10]:

* Each hidden layer is a sigmoid layer y = s(x W + b).  Its W and b are *the same
  Parameters* as those of a DenoisingAutoencoder, which adds only a visible bias b'.
  Pre-training the dA therefore changes the MLP's layer, and nothing has to be copied.
* Layer k's dA is trained on the clean codes of layers 1..k-1 (greedy layer-wise
  pre-training [Bengio07]), each with its own corruption level.
* A logistic-regression (softmax) layer sits on top, zero-initialised as in the tutorial's
  ``LogisticRegression``; the whole stack is then fine-tuned on the labels.

The training loops are in :mod:`dae.train` (:func:`pretrain`, :func:`finetune`).

References
----------
[Vincent10] P. Vincent, H. Larochelle, I. Lajoie, Y. Bengio, P.-A. Manzagol. Stacked
    denoising autoencoders: learning useful representations in a deep network with a local
    denoising criterion. JMLR 11, 2010.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import DenoisingAutoencoder, init_range
from .corruption import drop_probability, keep_mask, mask


class SigmoidLayer(nn.Module):
    """The tutorial's ``HiddenLayer`` with a sigmoid: y = s(x W + b), W of shape (n_in, n_out)."""

    def __init__(self, n_in: int, n_out: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.W = nn.Parameter(torch.empty(n_in, n_out, device=device, dtype=dtype))
        self.b = nn.Parameter(torch.empty(n_out, device=device, dtype=dtype))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """W ~ U(-r, r) with r = :func:`init_range`, b = 0 (tutorial)."""
        r = init_range(self.n_in, self.n_out)
        with torch.no_grad():
            self.W.uniform_(-r, r, generator=generator)
            self.b.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.addmm(self.b, x, self.W))

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}"


class LogisticRegression(nn.Module):
    """The tutorial's ``LogisticRegression``: class logits x W + b, W (n_in, n_classes), both zero at the start."""

    def __init__(self, n_in: int, n_classes: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.n_in, self.n_classes = n_in, n_classes
        self.W = nn.Parameter(torch.zeros(n_in, n_classes, device=device, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(n_classes, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.W.zero_()
            self.b.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b, x, self.W)

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_classes={self.n_classes}"


class Dropout(nn.Module):
    """Inverted dropout (Srivastava et al. 2014): in training mode each unit is kept with
    probability 1 - p and scaled by 1 / (1 - p); in evaluation mode, the identity.  Unlike
    ``nn.Dropout`` it draws from the generator it is given, so runs repeat under a seed."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = float(p)

    def mask(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A mask of kept units, already scaled: 1 / (1 - p') where kept, 0 where dropped, for
        p' = ``drop_probability(p)`` (p to 2^-15), so that the mask's mean is 1.

        Drawn as the masking noise is (:func:`dae.corruption.keep_mask`): on the CPU
        ``bernoulli_`` is not vectorised (the default preset's fine-tuning took 502 s with
        float masks [u >= p] and 569 s with bernoulli's, one ``dae sda`` run each, in 0.2)."""
        return keep_mask(like, self.p, generator).div_(1.0 - drop_probability(self.p))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training or not self.p:
            return x
        return x * self.mask(x, generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class StackedDenoisingAutoencoder(nn.Module):
    """A stack of sigmoid layers, each shared with a dA, and a softmax classifier on top.

    Parameters
    ----------
    n_visible : int
        Input size (784 for MNIST).
    hidden_layer_sizes : sequence of int
        Units per hidden layer (tutorial: [1000, 1000, 1000]).
    n_classes : int
        Output classes (10 for MNIST).
    corruption_levels : sequence of float, optional
        One masking level per layer for pre-training; default: the tutorial's 0.1, 0.2, 0.3
        (:func:`dae.config.default_corruption_levels`).
    dropout : float
        Dropout of the hidden units in training mode (fine-tuning); 0, the tutorial's, is none.
    input_corruption : float
        Masking of the inputs in training mode (fine-tuning); 0, the tutorial's, is none.
    generator : torch.Generator, optional
        Source of the initial weights.

    Attributes
    ----------
    hidden : ModuleList of SigmoidLayer
    autoencoders : ModuleList of DenoisingAutoencoder, ``autoencoders[k].W is hidden[k].W``
    dropout : Dropout
    classifier : LogisticRegression, the softmax layer on top
    """

    def __init__(
        self,
        n_visible: int,
        hidden_layer_sizes: Sequence[int],
        n_classes: int,
        corruption_levels: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
        *,
        dropout: float = 0.0,
        input_corruption: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        from .config import SdAConfig  # the rules between settings live there

        config = SdAConfig(tuple(hidden_layer_sizes),
                           None if corruption_levels is None else tuple(float(p) for p in corruption_levels),
                           dropout, input_corruption)
        config.check()
        if not (isinstance(n_visible, int) and n_visible >= 1 and isinstance(n_classes, int) and n_classes >= 2):
            raise ValueError(f"need a positive n_visible and n_classes >= 2, got {n_visible} and {n_classes}")
        sizes = [n_visible, *config.hidden_layer_sizes]
        self.n_visible, self.n_classes = n_visible, n_classes
        self.hidden_layer_sizes = list(config.hidden_layer_sizes)
        self.input_corruption = float(input_corruption)
        factory = {"device": device, "dtype": dtype}
        self.hidden = nn.ModuleList(SigmoidLayer(a, b, generator, **factory) for a, b in zip(sizes, sizes[1:]))
        # The dA of layer k shares W and b with hidden[k]; its visible bias is its own.
        self.autoencoders = nn.ModuleList(
            DenoisingAutoencoder(layer.n_in, layer.n_out, corruption_level=level, W=layer.W, b=layer.b)
            for layer, level in zip(self.hidden, config.corruption_levels)
        )
        self.dropout = Dropout(dropout)
        self.classifier = LogisticRegression(sizes[-1], n_classes, **factory)

    @classmethod
    def from_config(cls, n_visible: int, n_classes: int, config, **kwargs) -> StackedDenoisingAutoencoder:
        """A stack as a :class:`dae.config.SdAConfig` describes it."""
        return cls(n_visible, config.hidden_layer_sizes, n_classes, config.corruption_levels,
                   dropout=config.dropout, input_corruption=config.input_corruption, **kwargs)

    @property
    def config(self):
        """The :class:`dae.config.SdAConfig` of this stack."""
        from .config import SdAConfig

        return SdAConfig(tuple(self.hidden_layer_sizes), tuple(dA.corruption_level for dA in self.autoencoders),
                         self.dropout.p, self.input_corruption)

    @property
    def n_layers(self) -> int:
        return len(self.hidden)

    def encode(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The clean code after hidden layer ``layer`` (1 = the first; default: the top one).
        ``layer=0`` returns x itself."""
        layer = self.n_layers if layer is None else layer
        if not 0 <= layer <= self.n_layers:
            raise ValueError(f"layer must be in 0..{self.n_layers}, got {layer}")
        for h in self.hidden[:layer]:
            x = h(x)
        return x

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The class logits (the softmax's input).  In training mode the inputs are masked at
        ``input_corruption`` and the hidden units dropped out, drawn from ``generator`` in that
        order (the order of the hand-written step in :mod:`dae.steps`)."""
        if self.training and self.input_corruption:
            x = mask(x, self.input_corruption, generator)
        for h in self.hidden:
            x = self.dropout(h(x), generator)
        return self.classifier(x)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """p(y | x) for each class (the tutorial's ``p_y_given_x``), without dropout or noise."""
        return F.softmax(self.classifier(self.encode(x)), dim=1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class of each row (the tutorial's ``y_pred``), without dropout or noise."""
        return self.classifier(self.encode(x)).argmax(dim=1)

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, hidden_layer_sizes={self.hidden_layer_sizes}, n_classes={self.n_classes}"
