"""Noise processes q(x~ | x) that corrupt the input of a denoising autoencoder.

The three of [Vincent10] (section 4.2, and its Table 4 compares them):

* masking: each input is set to 0 independently with probability p, the rest are left
  untouched.  The tutorial draws ``binomial(n=1, p=1 - corruption_level)`` and multiplies.
* gaussian: additive isotropic Gaussian noise, x~ = x + N(0, sigma^2 I).
* salt-and-pepper: a fraction nu of the inputs, chosen at random, is set to 0 or 1 with
  equal probability; the rest are left untouched.

Each takes the level (p, sigma or nu) as ``corruption_level``; a level of 0 copies x.

Masks (the masking noise, and the dropout of :class:`dae.stacked.Dropout`) are drawn from 15
random bits per element, four elements from each 64-bit number of the generator: an element is
dropped with probability ``drop_probability(p)``, p rounded up to a multiple of 2^-15 (less than
3.1e-5 away).  On the CPU a float per element (``uniform_``, as 0.2 drew them) took 1.8 to 2.8
times as long, ``bernoulli_`` (as 0.1) 4.7 to 6.7 times (benchmarks/bench_masks.py, on an AMD
EPYC and an Intel Xeon), and masks
weigh in every step: 3,784 numbers per example in the default preset's fine-tuning.
"""

from __future__ import annotations

import math

import torch

NOISES = ("masking", "gaussian", "salt-and-pepper")
_LEVELS = 2 ** 15  # the masks' resolution: 15 random bits per element


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


def drop_probability(p: float) -> float:
    """The probability with which a mask at level p drops each element: p rounded up to a
    multiple of 2^-15, the resolution of the bits drawn per element."""
    return math.ceil(p * _LEVELS) / _LEVELS


def keep_mask(like: torch.Tensor, p: float, generator: torch.Generator | None = None,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """1 where an element of a tensor shaped like ``like`` is kept, 0 where it is dropped, each
    dropped independently with probability ``drop_probability(p)``; of ``like``'s dtype (float32
    or float64, whose integers up to 2^15 are exact).

    The numbers depend only on the generator and the number of elements, in row-major order,
    whatever the strides of ``out``; drawing m + n elements at once gives the concatenation of
    drawing m and then n when m is a multiple of 4 (the bits of four elements come from one
    64-bit number).
    """
    n = like.numel()
    # int64 random_ gives 63 random bits (the sign bit is 0): four 16-bit lanes, each cut to 15 bits.
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(generator=generator)
    bits = words.view(torch.int16)[:n].bitwise_and_(_LEVELS - 1).view(like.shape)
    if out is None:
        out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    # Integer-valued floats compared with an integer: exact.  (A bool comparison, then a cast,
    # takes two slower passes on the CPU.)
    return out.copy_(bits).ge_(drop_probability(p) * _LEVELS)


def blocks_draw_alike(noise: str, numel: int) -> bool:
    """Whether the noise for k tensors of ``numel`` elements drawn at once is the concatenation
    of k draws of one: for masks when numel is a multiple of 4 (see :func:`keep_mask`), for
    salt-and-pepper always; for Gaussian noise never relied on (``normal_`` fills 16 numbers at a
    time and redraws a ragged tail)."""
    return {"masking": numel % 4 == 0, "salt-and-pepper": True, "gaussian": False}[noise]


def gaussian(x, corruption_level, generator=None, out=None) -> torch.Tensor:
    """x + N(0, sigma^2) noise on every element, sigma = ``corruption_level``."""
    return corrupt(x, "gaussian", corruption_level, generator, out)


def salt_and_pepper(x, corruption_level, generator=None, out=None) -> torch.Tensor:
    """x with a random fraction ``corruption_level`` of its elements set to 0 or 1, each with
    probability 1/2."""
    return corrupt(x, "salt-and-pepper", corruption_level, generator, out)


def _mask_into(x, p, generator, out):
    return keep_mask(x, p, generator, out).mul_(x)


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
