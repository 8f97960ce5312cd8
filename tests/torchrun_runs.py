"""torchrun's script for tests/test_distributed.py: several `dae` runs in one launch, since a
launch (every process importing torch, joining the group) costs more than a small run.

ARGV[1] is a JSON list of runs, each {"argv": [...], "interrupt_after_epoch": k (optional)};
ARGV[2] a folder for what the test reads besides the runs' own outputs.  Every run is
`dae.cli.main(argv)`, as `torchrun -m dae ...` runs it, except that the process group is kept
from one run to the next.  A run with "interrupt_after_epoch" stops on every rank, as if by
Ctrl-C, right after the checkpoint of that epoch.  Then each rank writes to ARGV[2]/rank<r>.json
the exit status of each run and, for each streamed epoch, the rows it trained on (a hash of
each row).  A stream is cut into chunks of STREAM_CHUNK_ROWS rows, so that a small file has as
many chunks as a large one would (4,000 rows: 9 = 4N + 1 chunks for N = 2).
"""

import hashlib
import json
import sys
from pathlib import Path

import torch.distributed

import dae.cli
from dae.batches import StreamBatches
from dae.distributed import leave_world
from dae.runs import RunFolder

STREAM_CHUNK_ROWS = 480

runs, out = json.loads(sys.argv[1]), Path(sys.argv[2])
StreamBatches.__init__.__kwdefaults__["chunk_rows"] = STREAM_CHUNK_ROWS

streamed_epochs: list[list[str]] = []
real_epoch = StreamBatches.epoch


def recorded_epoch(self, order, block_steps):
    rows: list[str] = []
    streamed_epochs.append(rows)
    blocks = real_epoch(self, order, block_steps)
    try:
        for block in blocks:
            rows.extend(hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in block[0].cpu())
            yield block
    finally:
        blocks.close()


StreamBatches.epoch = recorded_epoch

interrupt_after = None
real_checkpoint = RunFolder.checkpoint


def checkpoint(self, model, generator, config, state, **extra):
    real_checkpoint(self, model, generator, config, state, **extra)
    if state.epoch == interrupt_after:
        raise KeyboardInterrupt


RunFolder.checkpoint = checkpoint
destroy = torch.distributed.destroy_process_group
torch.distributed.destroy_process_group = lambda *args, **kwargs: None  # kept for the next run

codes = []
for run in runs:
    interrupt_after = run.get("interrupt_after_epoch")
    codes.append(dae.cli.main(run["argv"]))
    sys.stdout.flush()

rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
(out / f"rank{rank}.json").write_text(json.dumps({"codes": codes, "streamed_epochs": streamed_epochs}))
torch.distributed.destroy_process_group = destroy
leave_world(finished=True)  # as dae.cli.main leaves it after a run that ended well
