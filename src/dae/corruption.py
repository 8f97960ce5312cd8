"""Noise processes q(x~ | x) that corrupt the input of a denoising autoencoder.

Masking noise [Vincent08]: each input is set to 0 independently with probability p, the rest
are left untouched.  The tutorial draws ``binomial(n=1, p=1 - corruption_level)`` and multiplies.
"""

from __future__ import annotations

import torch


def mask(
    x: torch.Tensor,
    corruption_level: float,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return x with each element zeroed independently with probability ``corruption_level``.

    ``out`` may be given to write the result in place (it may be a strided view); it must not
    overlap ``x``.  With ``corruption_level == 0`` no random numbers are drawn.
    """
    if out is None:
        out = torch.empty_like(x)
    if corruption_level == 0.0:
        return out.copy_(x)
    # Three in-place passes and no temporary: u ~ U[0, 1), keep = [u >= p], x~ = keep * x.
    out.uniform_(generator=generator).ge_(corruption_level)
    return out.mul_(x)
