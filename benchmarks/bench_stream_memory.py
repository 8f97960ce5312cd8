"""Peak resident memory of one epoch of `dae train` on a .npy file larger than memory allows.

Writes (once) a 1,000,000 x 784 float32 file of MNIST-like rows (3.1 GB; see make_big_npy.py),
then runs one epoch of the tutorial's dA on it under ``/usr/bin/time -v``: dae streams the
file in chunks (files over 1 GiB are streamed by default) and the peak resident set size is
read from time's report.  Memory-mapping or loading the file would bring the whole 3.1 GB in.

    python benchmarks/bench_stream_memory.py [--file /tmp/dae-big.npy] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(Path(tempfile.gettempdir()) / "dae-big.npy"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=20)
    args = parser.parse_args()
    big = Path(args.file)
    if not big.exists():
        subprocess.run([sys.executable, str(HERE / "make_big_npy.py"), str(big), "--rows", str(args.rows)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "dae", "train", "--data", str(big),
                              "--epochs", "1", "--batch-size", str(args.batch_size), "--out", f"{tmp}/run",
                              "--quiet"], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(run.stderr)
        summary = json.loads(Path(tmp, "run", "summary.json").read_text())
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", run.stderr).group(1)
    size = big.stat().st_size
    print(f"file {big}: {size / 1e9:.2f} GB ({summary['n_train']:,} rows used x {summary['n_visible']})")
    print(f"streamed: {summary['streamed']}, shuffled: {summary['shuffle']}, batch {args.batch_size}, "
          f"epoch {summary['train_seconds']:.1f} s ({summary['examples_per_second']:,.0f} examples/s), "
          f"wall {wall}, final cost {summary['final_cost']:.2f}")
    peak = peak_kb * 1024  # time -v reports kibibytes
    print(f"peak resident memory: {peak / 1e9:.2f} GB = {peak / 2**30:.2f} GiB ({peak / size:.0%} of the file)")


if __name__ == "__main__":
    main()
