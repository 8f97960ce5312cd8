"""Drawing a mask: ``dae.corruption.keep_mask`` (15 random bits per element, four per 64-bit draw)
against the float per element of 0.2 (``uniform_`` then ``ge_``) and ``bernoulli_``, side by side.

The shapes are those the training steps draw: a dropout mask of the default preset's
fine-tuning (100 x 1000) and a dA block's masking noise (2,048 x 784).  The three are timed in
turn, ``--rounds`` times; the best time of each is kept and printed as nanoseconds per element,
with the ratio to ``keep_mask``.

    python benchmarks/bench_masks.py [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from dae.corruption import keep_mask

P = 0.2


def float_mask(like, g):  # the masks of 0.2
    return torch.empty_like(like).uniform_(generator=g).ge_(P)


def bernoulli_mask(like, g):  # the masks of 0.1
    return torch.empty_like(like).bernoulli_(1.0 - P, generator=g)


def bits_mask(like, g):
    return keep_mask(like, P, g)


def seconds(draw, like, g, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        draw(like, g)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, drop probability {P}")
    g = torch.Generator().manual_seed(0)
    ways = {"keep_mask (15 bits)": bits_mask, "uniform_ + ge_ (0.2)": float_mask, "bernoulli_ (0.1)": bernoulli_mask}
    for shape in [(100, 1000), (2048, 784)]:
        like = torch.empty(shape)
        repeats = max(1, 20_000_000 // like.numel())
        best = {name: float("inf") for name in ways}
        for _ in range(args.rounds):
            for name, draw in ways.items():
                draw(like, g)  # warm
                best[name] = min(best[name], seconds(draw, like, g, repeats))
        print(f"{shape[0]} x {shape[1]}:")
        for name, t in best.items():
            print(f"  {name:22s} {t / like.numel() * 1e9:6.2f} ns per element, "
                  f"{t / best['keep_mask (15 bits)']:5.2f}x keep_mask's time")


if __name__ == "__main__":
    main()
