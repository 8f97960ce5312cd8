"""Write a large MNIST-like .npy file, for trying `dae train --data` on data that does
not fit in memory (see dae.stream.NpyStream).

    python benchmarks/make_big_npy.py OUT.npy [--rows 1000000]

The rows are (rows, 784) float32 in [0, 1]: MNIST's 50,000 training images in order,
wrapping around, each rolled by a random shift of -2..2 pixels down and right (seeded,
so the file is the same every time) so that the copies are not identical. The file is
written chunk by chunk after a header from numpy.lib.format, so memory use does not
grow with --rows; it goes to OUT.npy.tmp first and is renamed when complete.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from dae import load_mnist

CHUNK_ROWS = 10_000  # 31 MB of float32 per write


def varied_rows(images: np.ndarray, start: int, count: int,
                rng: np.random.Generator) -> np.ndarray:
    """Images start, start+1, ... (wrapping around), each rolled by its own shift."""
    chunk = images[(start + np.arange(count)) % len(images)]  # a copy: safe to modify
    shifts = rng.integers(-2, 3, size=(count, 2))
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            chunk[chosen] = np.roll(chunk[chosen], (dy, dx), axis=(1, 2))
    return chunk.reshape(count, -1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the .npy file to write")
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="number of examples (default 1000000: 3.1 GB)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shifts")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")

    start_time = time.perf_counter()
    dataset = load_mnist()
    height, width = dataset.image_shape
    images = dataset.train.x.numpy().reshape(-1, height, width)
    rng = np.random.default_rng(args.seed)
    dtype = np.dtype("<f4")
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": (args.rows, height * width)}
    tmp = f"{args.out}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for start in range(0, args.rows, CHUNK_ROWS):
                rows = varied_rows(images, start, min(CHUNK_ROWS, args.rows - start), rng)
                f.write(np.ascontiguousarray(rows, dtype=dtype).data)
        os.replace(tmp, args.out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    size = os.path.getsize(args.out)
    print(f"{args.out}: {args.rows} x {height * width} float32, {size:,} bytes"
          f" ({size / 1e9:.2f} GB) in {time.perf_counter() - start_time:.1f} s")


if __name__ == "__main__":
    main()
