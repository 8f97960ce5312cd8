"""Tests of dae.batches: the minibatches of an epoch on each process, in memory or streamed.

Ranks are simulated in one process with World(rank, size): TensorBatches needs no collective,
and StreamBatches only all_ok once per chunk, which FakeWorld answers.  One test runs two
real processes under torchrun for a NaN that only one of them reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from dae.batches import Batches, StreamBatches, TensorBatches, make_batches
from dae.data import DataError
from dae.distributed import World
from dae.stream import NpyStream

HERE = Path(__file__).parent


@dataclass(frozen=True)
class FakeWorld(World):
    """A rank of `size` in one process: all_ok records this rank's verdict and answers it, and'ed
    with the other ranks', which fail at call number `others_fail_at` (counting from 0)."""

    others_fail_at: int = -1
    calls: list = field(default_factory=list, compare=False)

    def all_ok(self, ok: bool) -> bool:
        self.calls.append(ok)
        return ok and len(self.calls) - 1 != self.others_fail_at

    def sum(self, *values):
        raise AssertionError("StreamBatches needs no collective but all_ok")


@dataclass(frozen=True)
class NoCollectives(World):
    """One process that fails the test if a collective is called."""

    def all_ok(self, ok):
        raise AssertionError("a collective with one process")

    def sum(self, *values):
        raise AssertionError("a collective with one process")


def numbered(n, d=3):
    """Rows whose every value is the row's index, so the rows can be identified."""
    return torch.arange(n, dtype=torch.float32)[:, None].repeat(1, d).contiguous()


def stream_of(tmp_path, x, chunk_rows, name="x.npy"):
    path = tmp_path / name
    np.save(path, np.asarray(x, dtype=np.float32))
    return NpyStream(path, loss="squared-error", chunk_bytes=chunk_rows * 4 * x.shape[1])


def make(kind, tmp_path, x, B, world, chunk_rows=70):
    if kind == "tensor":
        return TensorBatches(x, batch_size=B, world=world)
    return StreamBatches(stream_of(tmp_path, x, chunk_rows), batch_size=B, world=world)


def rows(batches, order=None, block_steps=3):
    """The row indices one epoch yields, and its blocks' numbers of minibatches."""
    blocks = [b[0] for b in batches.epoch(order, block_steps)]
    assert all(len(b) % batches.batch_size == 0 for b in blocks)
    return torch.cat(blocks)[:, 0].long().tolist(), [len(b) // batches.batch_size for b in blocks]


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_one_process_in_order_yields_views_of_x():
    x = numbered(1003)
    b = TensorBatches(x, batch_size=10, world=NoCollectives())
    assert (b.n_rows, b.n_cols, b.steps, b.n_used, b.batch_size) == (1003, 3, 100, 1000, 10)
    i = 0
    for (block,) in b.epoch(None, block_steps=7):
        k = len(block) // 10
        assert 1 <= k <= 7 and block.data_ptr() == x[i * 10].data_ptr()  # a view, no copy
        assert torch.equal(block, x[i * 10 : (i + k) * 10])
        i += k
    assert i == 100
    assert torch.equal(b.head(5), x[:5]) and isinstance(b, Batches)


@pytest.mark.parametrize("kind", ["tensor", "stream"])
@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_the_ranks_share_the_used_rows_equally_each_once(tmp_path, kind, size, shuffle):
    n, B = 1009, 10
    x = numbered(n)
    shares = []
    for rank in range(size):
        world = FakeWorld(rank, size) if size > 1 else NoCollectives()
        b = make(kind, tmp_path, x, B, world)
        assert b.steps == n // (B * size) and b.n_used == b.steps * B * size
        got, _ = rows(b, seeded(4) if shuffle else None)
        assert len(got) == b.steps * B  # every rank the same number of minibatches
        shares.append(got)
        assert torch.equal(b.head(7), x[:7])
    seen = sum(shares, [])
    assert len(seen) == len(set(seen)) == b.n_used  # disjoint, and n_used counts what was yielded
    if kind == "stream" or not shuffle:
        assert set(seen) == set(range(b.n_used))  # only the last < N*B rows are left out
    if not shuffle and kind == "tensor":  # global minibatch i is rows i*N*B ...; rank r has the r-th B
        assert shares[-1][:B] == list(range((size - 1) * B, size * B))


@pytest.mark.parametrize("shuffle", [False, True])
def test_n_processes_at_batch_b_see_the_minibatches_of_one_at_n_times_b(shuffle):
    x, B, N = numbered(1234), 5, 3
    one, _ = rows(TensorBatches(x, batch_size=N * B), seeded(9) if shuffle else None)
    shares = [rows(TensorBatches(x, batch_size=B, world=World(r, N)), seeded(9) if shuffle else None)[0]
              for r in range(N)]
    steps = len(shares[0]) // B
    assert one == [i for s in range(steps) for share in shares for i in share[s * B : (s + 1) * B]]


def test_a_stream_of_4n_plus_1_chunks_gives_every_rank_the_same_rows(tmp_path):
    # The old defect: chunks dealt out ids[r::N], so ranks ran the fewest steps of any rank.
    x = numbered(4010, 2)
    stream = stream_of(tmp_path, x, 450)
    assert stream.n_chunks == 9
    for order in (None, seeded(1)):
        shares = [rows(StreamBatches(stream, batch_size=10, world=FakeWorld(r, 2)), order)[0]
                  for r in range(2)]
        assert len(shares[0]) == len(shares[1]) == 2000
        assert sorted(shares[0] + shares[1]) == list(range(4000))
    assert StreamBatches(stream, batch_size=10, world=FakeWorld(0, 2)).n_used == 4000


def test_each_rank_reads_only_its_own_rows(tmp_path, monkeypatch):
    reads = []
    real = NpyStream.read_rows
    monkeypatch.setattr(NpyStream, "read_rows", lambda s, first, count: reads.append((first, count))
                        or real(s, first, count))
    stream = stream_of(tmp_path, numbered(1000), 100)
    got, _ = rows(StreamBatches(stream, batch_size=10, world=FakeWorld(1, 2)), seeded(3))
    assert sorted(reads) == [(c * 100 + 50, 50) for c in range(10)]
    assert sorted(got) == [c * 100 + 50 + i for c in range(10) for i in range(50)]


def test_stream_chunks_not_a_multiple_of_the_batch_lose_no_rows(tmp_path):
    x = numbered(1003)
    stream = stream_of(tmp_path, x, 37)  # the old code dropped 7 rows of every 37
    assert stream.chunk_rows == 37
    for b in (StreamBatches(stream, batch_size=10), StreamBatches(stream, batch_size=10, chunk_rows=25)):
        assert b.n_used == 1000
        assert rows(b)[0] == list(range(1000))
        assert sorted(rows(b, seeded(0))[0]) == list(range(1000))


def test_a_stream_in_order_is_the_tensor_in_order(tmp_path):
    x = torch.rand(997, 6)
    stream = stream_of(tmp_path, x, 64)
    blocks = [torch.cat([b[0] for b in batches.epoch(None, 4)])
              for batches in (TensorBatches(x, batch_size=16), StreamBatches(stream, batch_size=16))]
    assert blocks[0].shape == (992, 6) and torch.equal(blocks[0], blocks[1])


@pytest.mark.parametrize("kind", ["tensor", "stream"])
def test_shuffled_epochs_visit_each_used_row_once_in_new_orders(tmp_path, kind):
    b = make(kind, tmp_path, numbered(1000), 10, NoCollectives(), chunk_rows=100)
    epochs = [rows(b, seeded(seed))[0] for seed in (1, 2, 1)]
    assert epochs[0] == epochs[2] and epochs[0] != epochs[1]
    for got in epochs:
        assert sorted(got) == list(range(1000)) and got != list(range(1000))
    if kind == "stream":  # the rows within a chunk too, not only the chunks' order
        one_chunk = StreamBatches(b.stream, batch_size=10, chunk_rows=1000)
        assert sorted(rows(one_chunk, seeded(1))[0]) == list(range(1000)) != rows(one_chunk, seeded(1))[0]


@pytest.mark.parametrize("kind", ["tensor", "stream"])
@pytest.mark.parametrize("block_steps", [1, 3, 8, 1000])
@pytest.mark.parametrize("shuffle", [False, True])
def test_blocks_never_exceed_block_steps(tmp_path, kind, block_steps, shuffle):
    b = make(kind, tmp_path, numbered(1111), 10, World(1, 2) if kind == "tensor" else FakeWorld(1, 2))
    _, sizes = rows(b, seeded(0) if shuffle else None, block_steps)
    assert all(1 <= k <= block_steps for k in sizes) and sum(sizes) == b.steps == 55
    with pytest.raises(ValueError, match="block_steps"):
        b.epoch(None, 0)


def test_inputs_are_cast_and_labels_follow_their_rows():
    x64 = np.arange(60, dtype=np.float64).reshape(20, 3) / 60
    b = TensorBatches(x64, np.arange(20, dtype=np.int32), batch_size=4, world=World(1, 2))
    assert b.x.dtype == torch.float32 and torch.equal(b.head(20), torch.from_numpy(x64).float())
    for order in (None, seeded(5)):
        for xb, yb in b.epoch(order, 2):
            assert yb.dtype == torch.int64 and torch.equal(xb, b.x[yb])
    u8 = np.arange(40, dtype=np.uint8).reshape(10, 4)
    for x in (u8, torch.from_numpy(u8)):
        b = make_batches(x, batch_size=3, dtype=torch.float64)
        assert isinstance(b, TensorBatches) and b.head(10).dtype == torch.float64
        assert torch.equal(b.head(10), torch.from_numpy(u8).double())


def test_the_share_in_order_is_computed_once():
    b = TensorBatches(numbered(100), batch_size=5, world=World(1, 2))
    first = [blk[0] for blk in b.epoch(None, 2)]
    again = [blk[0] for blk in b.epoch(None, 2)]
    assert [t.data_ptr() for t in first] == [t.data_ptr() for t in again]
    assert torch.equal(torch.cat(first), torch.cat(again))


def test_validation(tmp_path):
    for x in (torch.zeros(5), torch.zeros(0, 3), torch.zeros(2, 3, 4)):
        with pytest.raises(ValueError, match="2-D with at least one row"):
            TensorBatches(x, batch_size=1)
    with pytest.raises(ValueError, match="at least 1"):
        TensorBatches(torch.zeros(5, 2), batch_size=0)
    with pytest.raises(ValueError, match="3 rows but y has 2 labels"):
        TensorBatches(torch.zeros(3, 2), torch.zeros(2), batch_size=1)
    with pytest.raises(ValueError) as err:
        TensorBatches(torch.zeros(19, 2), batch_size=10, world=World(0, 2))
    assert str(err.value) == "batch size 10 x 2 processes exceeds the 19 rows of x"
    stream = stream_of(tmp_path, numbered(19), 5)
    with pytest.raises(ValueError, match=r"batch size 20 exceeds the 19 rows of .*x\.npy"):
        make_batches(stream, batch_size=20)
    with pytest.raises(ValueError, match="no labels"):
        make_batches(stream, torch.zeros(19), batch_size=2)
    assert isinstance(make_batches(stream, batch_size=19), StreamBatches)


def _read_threads():
    return [t for t in threading.enumerate() if t.name.startswith("dae-npy-read")]


def test_a_stream_reads_ahead_and_stopping_early_ends_the_thread(tmp_path):
    b = StreamBatches(stream_of(tmp_path, numbered(1000), 100), batch_size=10)
    epoch = b.epoch(seeded(0), block_steps=2)
    assert not _read_threads()  # nothing before the first next()
    next(epoch)
    assert _read_threads()
    epoch.close()
    assert not _read_threads()


def test_one_process_raises_the_streams_error_without_a_collective(tmp_path):
    x = numbered(300).numpy() / 300
    x[123, 1] = np.nan
    b = StreamBatches(stream_of(tmp_path, x, 50), batch_size=10, world=NoCollectives())
    with pytest.raises(DataError, match="the first in row 123 "):
        list(b.epoch(None, 1))
    assert not _read_threads()


def test_bad_rows_of_one_rank_stop_every_rank(tmp_path):
    x = numbered(400).numpy() / 400
    x[3 * 40 + 25, 0] = np.nan  # chunk 3 (of 40 rows), in rank 1's half
    stream = stream_of(tmp_path, x, 40)
    worlds = [FakeWorld(0, 2, others_fail_at=3), FakeWorld(1, 2)]
    errors = []
    for world in worlds:
        b = StreamBatches(stream, batch_size=10, world=world)
        seen = []
        with pytest.raises(DataError) as err:
            for (block,) in b.epoch(None, 1):
                seen.append(len(block))
        assert len(seen) == 3 * 2 and world.calls[:3] == [True] * 3 and len(world.calls) == 4
        errors.append(str(err.value))
    assert errors[0] == f"{stream.path}: another process found bad data in it (see its message)"
    assert "the first in row 145 " in errors[1] and "\n" not in errors[1]
    assert worlds[1].calls[3] is False
    assert not _read_threads()
    good = FakeWorld(0, 2)
    list(StreamBatches(stream, batch_size=10, world=good).epoch(seeded(0), 5))
    assert good.calls == [True] * 10  # one all_ok per chunk


def test_under_torchrun_a_nan_in_one_ranks_rows_ends_both_with_one_line(tmp_path):
    x = np.random.default_rng(0).random((200, 4)).astype(np.float32)
    x[3 * 40 + 25, 2] = np.nan  # chunk 3: rows 120-139 are rank 0's, 140-159 rank 1's
    np.save(tmp_path / "bad.npy", x)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(HERE / "torchrun_stream_nan.py"), str(tmp_path / "bad.npy"), str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and time.monotonic() - start < 60
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in range(2))
    assert rank0 == f"dae: error: {tmp_path / 'bad.npy'}: another process found bad data in it (see its message)\n"
    assert rank1.startswith(f"dae: error: {tmp_path / 'bad.npy'}: contains 1 non-finite value")
    assert "the first in row 145 " in rank1 and rank1.count("\n") == 1
    assert run.stderr.count("dae: error: ") == 2
