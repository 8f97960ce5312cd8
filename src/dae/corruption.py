"""Noise processes q(x~ | x) that corrupt the input of a denoising autoencoder.

The three of [Vincent10] (section 4.2, and its Table 4 compares them):

* masking: each input is set to 0 independently with probability p, the rest are left
  untouched.  The tutorial draws ``binomial(n=1, p=1 - corruption_level)`` and multiplies.
* gaussian: additive isotropic Gaussian noise, x~ = x + N(0, sigma^2 I).
* salt-and-pepper: a fraction nu of the inputs, chosen at random, is set to 0 or 1 with
  equal probability; the rest are left untouched.

Each takes the level (p, sigma or nu) as ``corruption_level``; a level of 0 copies x.
"""

from __future__ import annotations

import torch

NOISES = ("masking", "gaussian", "salt-and-pepper")


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


def gaussian(
    x: torch.Tensor,
    corruption_level: float,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return x + N(0, sigma^2) noise on every element, sigma = ``corruption_level``."""
    if out is None:
        out = torch.empty_like(x)
    if corruption_level == 0.0:
        return out.copy_(x)
    return out.normal_(0.0, corruption_level, generator=generator).add_(x)


def salt_and_pepper(
    x: torch.Tensor,
    corruption_level: float,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return x with a random fraction ``corruption_level`` of its elements set to 0 or 1,
    each with probability 1/2."""
    if out is None:
        out = torch.empty_like(x)
    if corruption_level == 0.0:
        return out.copy_(x)
    # One draw u ~ U[0, 1) per element: u < nu/2 -> 0 (pepper), nu/2 <= u < nu -> 1 (salt).
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return out.copy_(torch.where(u < corruption_level, (u >= corruption_level / 2).to(x.dtype), x))


CORRUPTIONS = {"masking": mask, "gaussian": gaussian, "salt-and-pepper": salt_and_pepper}


def corrupt(
    x: torch.Tensor,
    noise: str,
    corruption_level: float,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """x~ drawn from the named noise process at the given level."""
    return CORRUPTIONS[noise](x, corruption_level, generator, out)
