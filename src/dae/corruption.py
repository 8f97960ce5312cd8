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


def corrupt(
    x: torch.Tensor,
    noise: str,
    corruption_level: float,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """x~ drawn from the named noise process at the given level.

    ``out`` may be given to write the result in place (it may be a strided view); it must not
    overlap ``x``.  At level 0 x is copied and no random numbers are drawn.
    """
    if out is None:
        out = torch.empty_like(x)
    if corruption_level == 0.0:
        return out.copy_(x)
    return _NOISE_INTO[noise](x, corruption_level, generator, out)


def mask(x, corruption_level, generator=None, out=None) -> torch.Tensor:
    """x with each element zeroed independently with probability ``corruption_level``."""
    return corrupt(x, "masking", corruption_level, generator, out)


def gaussian(x, corruption_level, generator=None, out=None) -> torch.Tensor:
    """x + N(0, sigma^2) noise on every element, sigma = ``corruption_level``."""
    return corrupt(x, "gaussian", corruption_level, generator, out)


def salt_and_pepper(x, corruption_level, generator=None, out=None) -> torch.Tensor:
    """x with a random fraction ``corruption_level`` of its elements set to 0 or 1, each with
    probability 1/2."""
    return corrupt(x, "salt-and-pepper", corruption_level, generator, out)


def _mask_into(x, p, generator, out):
    # Three in-place passes and no temporary: u ~ U[0, 1), keep = [u >= p], x~ = keep * x.
    return out.uniform_(generator=generator).ge_(p).mul_(x)


def _gaussian_into(x, sigma, generator, out):
    if not out.is_contiguous():
        # normal_ on a strided view draws its numbers in another order than on contiguous
        # memory (uniform_ does not), so draw where the numbers are those of corrupt(x).
        return out.copy_(torch.empty(x.shape, device=x.device, dtype=x.dtype).normal_(0.0, sigma, generator=generator)
                         .add_(x))
    return out.normal_(0.0, sigma, generator=generator).add_(x)


def _salt_and_pepper_into(x, nu, generator, out):
    # One draw u ~ U[0, 1) per element: u < nu/2 -> 0 (pepper), nu/2 <= u < nu -> 1 (salt).
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return out.copy_(torch.where(u < nu, (u >= nu / 2).to(x.dtype), x))


_NOISE_INTO = {"masking": _mask_into, "gaussian": _gaussian_into, "salt-and-pepper": _salt_and_pepper_into}
