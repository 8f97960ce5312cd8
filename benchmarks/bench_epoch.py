"""One epoch of the tutorial's dA against the "GEMM floor", measured side by side.

The tutorial configuration: MNIST's 50,000 training images, 784-500, tied weights, batch 20,
corruption 0.3, learning rate 0.1.  A step of SGD needs five matrix products at batch 20:

    x~ @ W,  y @ W^T,  dz @ W,  x~^T @ dy,  dz^T @ y

The floor is the time of those five products alone, 2,500 times (one epoch), with torch, in
the same process and the same thread settings.  It reads an unchanged W; an SGD step cannot:
the *written floor* is the step's own products, the encoder's, the decoder's, the one back
through W, and the two gradient terms of the tied W stacked into one product of inner size 2B
that updates W in place (as :class:`dae.steps.DAStep` does), so that each step's products read
the W the last one wrote.  The epoch is `dae.train` for one epoch,
everything included (corruption, cost, updates).  The two are timed alternately, several
rounds, and the best time of each is kept: on a shared machine the minimum is the figure
least disturbed by other processes.

    python benchmarks/bench_epoch.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dae import DenoisingAutoencoder, load_mnist, train

# The tutorial's test_dA: 500 hidden units, batch 20, learning rate 0.1, corruption 0.3.
N_HIDDEN, BATCH, LR, CORRUPTION = 500, 20, 0.1, 0.3


def gemm_floor(x: torch.Tensor, W: torch.Tensor, B: int = BATCH, written: bool = False) -> float:
    """Seconds for the five matrix products of every step of one epoch, and nothing else;
    ``written``: the written floor (the module docstring), which changes ``W`` a little."""
    H = W.shape[1]
    y, dy, dz = torch.rand(B, H), torch.rand(B, H), torch.rand(B, x.shape[1])
    L, R = torch.rand(2 * B, x.shape[1]), torch.rand(2 * B, H)
    mm = torch.mm
    start = time.perf_counter()
    for i in range(x.shape[0] // B):
        xb = x[i * B : (i + 1) * B]
        mm(xb, W)
        mm(y, W.t())
        mm(dz, W)
        if written:
            W.addmm_(L.t(), R, alpha=-1e-9)  # not 0, which a BLAS may skip
        else:
            mm(xb.t(), dy)
            mm(dz.t(), y)
    return time.perf_counter() - start


def one_epoch(x: torch.Tensor, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    model = DenoisingAutoencoder(x.shape[1], N_HIDDEN, corruption_level=CORRUPTION, generator=g)
    [result] = train(model, x, epochs=1, learning_rate=LR, batch_size=BATCH, generator=g)
    return result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    x = load_mnist().train.x
    W = torch.empty(x.shape[1], N_HIDDEN).uniform_(-0.1, 0.1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{x.shape[0]} examples, 784-{N_HIDDEN}, batch {BATCH}")
    gemm_floor(x[:2000], W), gemm_floor(x[:2000], W, written=True), one_epoch(x[:2000], 0)  # warm up
    against_floor(lambda: gemm_floor(x, W), lambda r: one_epoch(x, r), args.rounds, "dae.train",
                  written=lambda: gemm_floor(x, W, written=True))


def against_floor(floor, epoch, rounds: int, name: str, written=None) -> None:
    """Time ``floor()``, ``written()`` (the written floor, if given) and ``epoch(round)``
    alternately, ``rounds`` times; print each round's ratio, the best time of each and the ratio
    of the best times, and the median ratio; then the epoch against the written floor."""
    floors, writtens, epochs = [], [], []
    for r in range(rounds):
        floors.append(floor())
        if written:
            writtens.append(written())
        epochs.append(epoch(r))
        print(f"round {r + 1}: floor {floors[-1]:.3f} s, " + (f"written {writtens[-1]:.3f} s, " if written else "")
              + f"epoch {epochs[-1]:.3f} s, ratio {epochs[-1] / floors[-1]:.3f}")
    f, e = min(floors), min(epochs)
    print(f"GEMM floor (best of {rounds}): {f:.3f} s per epoch")
    print(f"{name} epoch (best of {rounds}): {e:.3f} s per epoch")
    print(f"ratio epoch / floor: {e / f:.3f} (best times); median of per-round ratios: "
          f"{statistics.median(ei / fi for ei, fi in zip(epochs, floors)):.3f}")
    if written:
        w = min(writtens)
        print(f"written floor (best of {rounds}): {w:.3f} s per epoch, {w / f:.3f} x the floor; "
              f"ratio epoch / written floor: {e / w:.3f}")


if __name__ == "__main__":
    main()
