"""torchrun's script for tests/test_batches.py: each rank streams an epoch of ARGV[1] (a .npy
file) with StreamBatches (batch 10, chunks of 40 rows), summing every block over the ranks as a
training step's all-reduce would; a DataError ends the rank with a one-line `dae: error: ...`,
also written to ARGV[2]/rank<r>.txt, and exit status 2."""

import sys
from pathlib import Path

from dae.batches import StreamBatches
from dae.data import DataError
from dae.distributed import init_world, leave_world
from dae.stream import NpyStream

world = init_world("cpu")
out = Path(sys.argv[2])
try:
    batches = StreamBatches(NpyStream(sys.argv[1], loss="squared-error"), batch_size=10, world=world,
                            chunk_rows=40)
    for (x,) in batches.epoch(None, block_steps=1):
        world.sum(float(x.sum()))
except DataError as err:
    message = f"dae: error: {err}"
    (out / f"rank{world.rank}.txt").write_text(message + "\n")
    print(message, file=sys.stderr)
    leave_world(finished=False)
    sys.exit(2)
(out / f"rank{world.rank}.txt").write_text("ok\n")
leave_world(finished=True)
