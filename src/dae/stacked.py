"""Stacked denoising autoencoders (SdA): a deep MLP whose layers are pre-trained as dAs.

As in the deeplearning.net tutorial (``SdA.py``) and [Vincent10]:

* Each hidden layer is a sigmoid layer y = s(x W + b).  Its W and b are *the same
  Parameters* as those of a DenoisingAutoencoder, which adds only a visible bias b'.
  Pre-training the dA therefore changes the MLP's layer, and nothing has to be copied.
* Layer k's dA is trained on the clean codes of layers 1..k-1 (greedy layer-wise
  pre-training [Bengio07]), each with its own corruption level.
* A logistic-regression (softmax) layer sits on top, zero-initialised as in the tutorial's
  ``LogisticRegression``; the whole stack is then fine-tuned on the labels.

The training loops are in :mod:`dae.training` (:func:`pretrain`, :func:`finetune`).

References
----------
[Vincent10] P. Vincent, H. Larochelle, I. Lajoie, Y. Bengio, P.-A. Manzagol. Stacked
    denoising autoencoders: learning useful representations in a deep network with a local
    denoising criterion. JMLR 11, 2010.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import DenoisingAutoencoder


class SigmoidLayer(nn.Module):
    """The tutorial's ``HiddenLayer`` with a sigmoid: y = s(x W + b), W of shape (n_in, n_out).

    W ~ U(+-4 sqrt(6 / (n_in + n_out))) (the tutorial's interval for sigmoid units, from
    Glorot & Bengio 2010), b = 0.
    """

    def __init__(self, n_in: int, n_out: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        r = 4.0 * math.sqrt(6.0 / (n_in + n_out))
        self.W = nn.Parameter(torch.empty(n_in, n_out).uniform_(-r, r, generator=generator))
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.addmm(self.b, x, self.W))

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}"


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
        One masking level per layer for pre-training (tutorial: [0.1, 0.2, 0.3]); default 0.
    generator : torch.Generator, optional
        Source of the initial weights.

    Attributes
    ----------
    hidden : ModuleList of SigmoidLayer
    autoencoders : ModuleList of DenoisingAutoencoder, ``autoencoders[k].W is hidden[k].W``
    log_W, log_b : the logistic-regression layer, (n_last, n_classes) and (n_classes,)
    """

    def __init__(
        self,
        n_visible: int,
        hidden_layer_sizes: Sequence[int],
        n_classes: int,
        corruption_levels: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        sizes = [n_visible, *hidden_layer_sizes]
        if len(sizes) < 2 or min(sizes) < 1 or n_classes < 2:
            raise ValueError("need at least one hidden layer, positive sizes and at least two classes")
        levels = list(corruption_levels) if corruption_levels is not None else [0.0] * len(hidden_layer_sizes)
        if len(levels) != len(hidden_layer_sizes):
            raise ValueError(f"{len(hidden_layer_sizes)} hidden layers but {len(levels)} corruption levels")
        self.n_visible, self.n_classes = n_visible, n_classes
        self.hidden_layer_sizes = list(hidden_layer_sizes)
        self.hidden = nn.ModuleList(SigmoidLayer(a, b, generator) for a, b in zip(sizes, sizes[1:]))
        # The dA of layer k shares W and b with hidden[k]; its visible bias is its own.
        self.autoencoders = nn.ModuleList(
            DenoisingAutoencoder(layer.n_in, layer.n_out, corruption_level=level, W=layer.W, b=layer.b)
            for layer, level in zip(self.hidden, levels)
        )
        # The tutorial's LogisticRegression starts from zero weights and biases.
        self.log_W = nn.Parameter(torch.zeros(sizes[-1], n_classes))
        self.log_b = nn.Parameter(torch.zeros(n_classes))

    @property
    def n_layers(self) -> int:
        return len(self.hidden)

    def encode(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The code after hidden layer ``layer`` (1 = the first; default: the top one).
        ``layer=0`` returns x itself."""
        layer = self.n_layers if layer is None else layer
        if not 0 <= layer <= self.n_layers:
            raise ValueError(f"layer must be in 0..{self.n_layers}, got {layer}")
        for h in self.hidden[:layer]:
            x = h(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The class logits (the softmax's input)."""
        return torch.addmm(self.log_b, self.encode(x), self.log_W)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """p(y | x) for each class: the tutorial's ``p_y_given_x``."""
        return F.softmax(self(x), dim=1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class of each row: the tutorial's ``y_pred``."""
        return self(x).argmax(dim=1)

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, hidden_layer_sizes={self.hidden_layer_sizes}, n_classes={self.n_classes}"
