"""Training throughput (examples per second) against the GEMM floor, for 1 and 2 processes.

For each global batch size (20, 128, 1024) and each number of processes (1 with two threads;
2 under torchrun, gloo, one thread each, half the batch each), one epoch of the tutorial's dA
(MNIST's 50,000 images, 784-500, tied, corruption 0.3) is timed next to its GEMM floor: the
five matrix products of every step of that epoch at the same per-process batch, and nothing
else (no corruption, no element-wise work, no all-reduce), run in the same processes at the
same time.  The ratio dae / floor is the fraction of the floor's throughput that training
reaches.  Floor and epoch alternate for several rounds; the best of each is kept.

    python benchmarks/bench_throughput.py [--rounds 5] [--batches 20,128,1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
from bench_epoch import gemm_floor  # the five products of each step, at any batch size

N_HIDDEN, LR, CORRUPTION = 500, 0.1, 0.3  # the tutorial's test_dA


def worker(args: argparse.Namespace) -> None:
    """One process's measurements; under torchrun, every rank runs this and rank 0 prints."""
    from dae import DenoisingAutoencoder, load_mnist, train
    from dae.distributed import init_world

    torch.set_num_threads(args.threads)
    world = init_world("cpu")
    x = load_mnist().train.x
    b = args.batch // world.size  # per process
    n_steps = x.shape[0] // args.batch
    mine = x[: n_steps * args.batch].view(n_steps, world.size, b, -1)[:, world.rank].reshape(-1, x.shape[1])
    W = torch.empty(x.shape[1], N_HIDDEN).uniform_(-0.1, 0.1)

    def epoch(seed: int) -> float:
        g = torch.Generator().manual_seed(world.seed(seed))
        model = DenoisingAutoencoder(x.shape[1], N_HIDDEN, corruption_level=CORRUPTION, generator=g)
        [r] = train(model, x, epochs=1, learning_rate=LR, batch_size=b, generator=g, world=world)
        return r.seconds

    def floor() -> float:
        world.sum(0.0)  # start together
        seconds = gemm_floor(mine, W, b)
        return world.sum(seconds)[0] / world.size  # the processes' mean

    floor(), epoch(99)  # warm up
    floors, epochs = [], []
    for r in range(args.rounds):
        floors.append(floor())
        epochs.append(epoch(r))
    if world.main:
        rows = n_steps * args.batch
        print(json.dumps({"processes": world.size, "threads": args.threads, "batch": args.batch,
                          "floor_examples_per_s": rows / min(floors), "dae_examples_per_s": rows / min(epochs)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="20,128,1024")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    cores = os.cpu_count() or 1
    print(f"torch {torch.__version__}, {cores} cores; MNIST 50,000 x 784, 784-{N_HIDDEN} dA, one epoch; "
          f"best of {args.rounds}")
    print(f"{'processes':>9} {'threads':>7} {'batch':>6} {'floor ex/s':>11} {'dae ex/s':>10} {'dae/floor':>9}")
    me = [__file__, "--worker", "--rounds", str(args.rounds)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    for processes, threads in ((1, cores), (2, max(1, cores // 2))):
        for batch in map(int, args.batches.split(",")):
            launcher = [sys.executable] if processes == 1 else [
                sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
            out = subprocess.run([*launcher, *me, "--batch", str(batch), "--threads", str(threads)], env=env,
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            f, d = r["floor_examples_per_s"], r["dae_examples_per_s"]
            print(f"{processes:>9} {threads:>7} {batch:>6} {f:>11,.0f} {d:>10,.0f} {d / f:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
