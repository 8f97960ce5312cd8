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
    if corruption_level == 0.0:
        return x.clone() if out is None else out.copy_(x)
    keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    keep.ge_(corruption_level)  # 1.0 with probability 1 - p, else 0.0
    return torch.mul(x, keep) if out is None else torch.mul(x, keep, out=out)
