"""One fine-tuning epoch of an SdA against the "GEMM floor" of its step, measured side by side.

The default preset's fine-tuning: MNIST's 50,000 training images, 784-1000-1000-1000-10,
batch 100, momentum 0.9, shuffled, 10% input masking and dropout 0.2 (``dae sda``).  A step
needs eleven matrix products: four forward (x W1, h1 W2, h2 W3, h3 W), three back through the
layers (d W^T) and four weight gradients (h^T d).  The floor is the time of those products
alone, one epoch's worth (500 steps), in the same process and thread settings (the *written
floor*: each weight-gradient product added into its weights in place, as a step of SGD
without momentum does, so that the next step reads the weights it wrote); the epoch is
`dae.finetune` for one epoch without validation, everything included (shuffling, masks,
softmax, updates).  The two are timed alternately and the best of each is kept.

    python benchmarks/bench_finetune.py [--rounds 5] [--profile]

``--profile`` then prints where the time of one more epoch goes, by operator (torch.profiler).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench_epoch import against_floor  # this folder's: the same rounds and report

from dae import SDA_PRESETS, StackedDenoisingAutoencoder, finetune, load_mnist

PRESET = SDA_PRESETS["default"]


def gemm_floor(n_rows: int, sizes: list[int], B: int, written: bool = False) -> float:
    """Seconds for the eleven matrix products of every step of one epoch, and nothing else;
    ``written``: the written floor (the module docstring)."""
    Ws = [torch.rand(a, b) for a, b in zip(sizes, sizes[1:])]
    hs = [torch.rand(B, n) for n in sizes]
    mm = torch.mm
    start = time.perf_counter()
    for _ in range(n_rows // B):
        for h, W in zip(hs, Ws):  # forward
            mm(h, W)
        for k in range(len(Ws) - 1, 0, -1):  # back through the hidden layers
            mm(hs[k + 1], Ws[k].t())
        for k, W in enumerate(Ws):  # weight gradients
            if written:
                W.addmm_(hs[k].t(), hs[k + 1], alpha=-1e-9)  # not 0, which a BLAS may skip
            else:
                mm(hs[k].t(), hs[k + 1])
    return time.perf_counter() - start


def one_epoch(x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    model = StackedDenoisingAutoencoder.from_config(x.shape[1], 10, PRESET.model, generator=g)
    result = finetune(model, (x, y), None, config=PRESET.finetuning, epochs=1, generator=g)
    return result.history[0].seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="then profile one more epoch, by operator")
    args = parser.parse_args()
    x, y = load_mnist().train
    sizes = [x.shape[1], *PRESET.model.hidden_layer_sizes, 10]
    B = PRESET.finetuning.batch_size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {x.shape[0]} examples, "
          f"{'-'.join(map(str, sizes))}, batch {B}, dropout {PRESET.model.dropout}, "
          f"input masking {PRESET.model.input_corruption}, momentum {PRESET.finetuning.momentum}")
    gemm_floor(2000, sizes, B), gemm_floor(2000, sizes, B, written=True), one_epoch(x[:2000], y[:2000], 0)  # warm up
    against_floor(lambda: gemm_floor(x.shape[0], sizes, B), lambda r: one_epoch(x, y, r), args.rounds,
                  "dae.finetune", written=lambda: gemm_floor(x.shape[0], sizes, B, written=True))
    if args.profile:
        with torch.profiler.profile() as profile:
            one_epoch(x, y, args.rounds)
        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
