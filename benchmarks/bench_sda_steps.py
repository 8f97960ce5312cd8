"""Seconds per epoch of each SdA phase, estimated from a few thousand steps of the real code.

For the tutorial's 784-1000-1000-1000-10 network on MNIST's 50,000 training images: the
pre-training of each layer's dA and the fine-tuning of the whole stack, at the batch sizes
given (the tutorial's is 1, the default preset's 20 for pre-training and 100 for
fine-tuning).  A full `dae sda --preset tutorial` takes about 15 x (the three pre-training
figures) + (fine-tuning epochs) x (the fine-tuning figure).

    python benchmarks/bench_sda_steps.py [--batch-sizes 1,20,100] [--examples 4000]
"""

from __future__ import annotations

import argparse
import time

import torch

from dae import StackedDenoisingAutoencoder, load_mnist
from dae.steps import DAStep, FinetuneStep
from dae.train import CHUNK_ROWS

N_TRAIN = 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,20,100")
    parser.add_argument("--examples", type=int, default=4000, help="examples timed per phase")
    args = parser.parse_args()
    mnist = load_mnist()
    x, y = mnist.train.x[: args.examples], mnist.train.y[: args.examples]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; seconds per epoch of {N_TRAIN} examples")
    for B in (int(b) for b in args.batch_sizes.split(",")):
        g = torch.Generator().manual_seed(0)
        sda = StackedDenoisingAutoencoder(784, [1000, 1000, 1000], 10, [0.1, 0.2, 0.3], generator=g)
        figures = []
        with torch.no_grad():
            codes = x
            for k, dA in enumerate(sda.autoencoders):
                per_chunk = max(1, CHUNK_ROWS // B)  # minibatches per block, as dae.train takes them
                rows = codes[: min(per_chunk, len(codes) // B) * B]
                step = DAStep(dA, B, per_chunk)
                step.set_learning_rate(0.001)
                step((rows,), g)  # warm up
                start = time.perf_counter()
                step((rows,), g)
                figures.append(f"pretrain layer {k + 1}: {(time.perf_counter() - start) / len(rows) * N_TRAIN:6.1f}")
                codes = sda.hidden[k](codes)
            n = (len(x) // B) * B
            per_chunk = max(1, CHUNK_ROWS // B)
            step = FinetuneStep(sda, 0.0, B, per_chunk)
            step.set_learning_rate(0.01)
            blocks = [(x[i:min(i + per_chunk * B, n)], y[i:min(i + per_chunk * B, n)])
                      for i in range(0, n, per_chunk * B)]
            step((x[: min(n, 100 * B)], y[: min(n, 100 * B)]), g)  # warm up
            start = time.perf_counter()
            for block in blocks:
                step(block, g)
            figures.append(f"fine-tune: {(time.perf_counter() - start) / n * N_TRAIN:6.1f}")
        print(f"batch {B:4d}:  " + "   ".join(figures))


if __name__ == "__main__":
    main()
