"""The minibatches of an epoch on this process, from a tensor in memory or a streamed .npy.

The training loop asks a :class:`Batches` for ``steps`` and then for the blocks of an epoch;
it never needs to know where the rows come from, nor how many processes share them.

Under torchrun (``world.size`` = N processes, each with batch B) every rank must run the same
number of steps, because the gradients are all-reduced step by step: a rank with one step more
would wait forever for the others.  So every rank gets an equal share of the data, and only the
last ``n % (N*B)`` rows are left out, as the tutorial leaves out the last ``n % B``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .data import DataError
from .distributed import SINGLE, World
from .stream import NpyStream

__all__ = ["Batches", "StreamBatches", "TensorBatches", "make_batches", "steps_per_epoch"]


def steps_per_epoch(n_rows: int, batch_size: int, world: World, what: object) -> int:
    """Minibatches per epoch on each process: the one rule, which needs at least one (a DataError
    naming ``what``, the data, if there is not)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    steps = n_rows // (batch_size * world.size)
    if steps == 0:
        per = "" if world.size == 1 else f" x {world.size} processes"
        raise DataError(f"batch size {batch_size}{per} exceeds the {n_rows} rows of {what}")
    return steps


class Batches:
    """This process's minibatches of ``batch_size`` rows: ``steps`` of them per epoch, the same
    number on every rank, so ``n_used = steps * batch_size * world.size`` rows an epoch in all."""

    batch_size: int
    world: World
    n_rows: int
    n_cols: int
    steps: int

    def _setup(self, n_rows: int, n_cols: int, batch_size: int, world: World, what: object) -> None:
        self.n_rows, self.n_cols, self.batch_size, self.world = n_rows, n_cols, batch_size, world
        self.steps = steps_per_epoch(n_rows, batch_size, world, what)

    @property
    def n_used(self) -> int:
        """Rows used per epoch by all the ranks together."""
        return self.steps * self.batch_size * self.world.size

    def head(self, n: int) -> torch.Tensor:
        """The first ``n`` rows of x (fewer if there are fewer), the same on every rank."""
        raise NotImplementedError

    def epoch(self, order: torch.Generator | None, block_steps: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """This rank's rows for one epoch, in blocks ``(x,)`` or ``(x, y)`` of 1 to ``block_steps``
        consecutive minibatches, ``steps`` minibatches in all.  ``order=None``: the data's own
        order; else a new order drawn from ``order``, which must be seeded alike on every rank."""
        raise NotImplementedError


def _check_block_steps(block_steps: int) -> None:
    if block_steps < 1:
        raise ValueError(f"block_steps must be at least 1, got {block_steps}")


class TensorBatches(Batches):
    """Rows in memory.  Global minibatch i is the ``N*B`` rows i*N*B... of the epoch's order and
    rank r takes the r-th B of them, so N processes at batch B see the minibatches of one process
    at batch N*B.  ``x`` is cast to ``dtype``, ``y`` (labels) to int64; both go to ``device``
    (None: x's own device, the CPU for a numpy array)."""

    def __init__(self, x, y=None, *, batch_size: int, world: World = SINGLE, device=None,
                 dtype: torch.dtype = torch.float32) -> None:
        x = torch.as_tensor(x)
        if x.dim() != 2 or len(x) == 0:
            raise ValueError(f"x must be 2-D with at least one row, got shape {tuple(x.shape)}")
        if y is not None and len(y) != len(x):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)} labels")
        self._setup(len(x), x.shape[1], batch_size, world, "x")
        device = x.device if device is None else torch.device(device)
        self.x = x.to(device=device, dtype=dtype).contiguous()
        self.y = None if y is None else torch.as_tensor(y).to(device=device, dtype=torch.int64)
        self._share = None  # this rank's rows in the data's own order, once computed

    def head(self, n: int) -> torch.Tensor:
        return self.x[:n]

    def epoch(self, order: torch.Generator | None, block_steps: int) -> Iterator[tuple[torch.Tensor, ...]]:
        _check_block_steps(block_steps)
        data = tuple(t for t in (self.x, self.y) if t is not None)
        if order is not None or self.world.size > 1:
            if order is None and self._share is not None:
                data = self._share
            else:
                index = torch.randperm(self.n_rows, generator=order) if order is not None else torch.arange(self.n_rows)
                B, N = self.batch_size, self.world.size
                mine = index[: self.n_used].view(self.steps, N, B)[:, self.world.rank].reshape(-1).to(self.x.device)
                data = tuple(t.index_select(0, mine) for t in data)
                if order is None:
                    self._share = data
        return self._blocks(data, block_steps)

    def _blocks(self, data, block_steps):
        B = self.batch_size
        for i in range(0, self.steps, block_steps):
            end = min(i + block_steps, self.steps) * B
            yield tuple(t[i * B : end] for t in data)


class StreamBatches(Batches):
    """Rows of a .npy file read from disk as training goes (see :class:`~dae.stream.NpyStream`).

    The file is cut into chunks of ``chunk_rows`` rows, a multiple of N*B (default: the stream's
    chunk size rounded down to one, at least N*B).  An epoch visits the chunks in order, or in a
    random order; in a chunk of m rows each rank takes k = m // (N*B) minibatches from its own
    contiguous k*B rows (permuted, in a random order), so each rank reads only its rows, every rank
    gets the same share of every chunk, and only the last chunk leaves out rows (fewer than N*B).
    Under N processes the global minibatches thus differ from :class:`TensorBatches`' ones.
    The next chunk is read in a background thread while the caller trains on this one.
    """

    def __init__(self, stream: NpyStream, *, batch_size: int, world: World = SINGLE, device=None,
                 dtype: torch.dtype = torch.float32, chunk_rows: int | None = None) -> None:
        self.stream, self.device, self.dtype = stream, torch.device(device or "cpu"), dtype
        self._setup(stream.n_rows, stream.n_cols, batch_size, world, stream.path)
        step = batch_size * world.size
        rows = stream.chunk_rows if chunk_rows is None else chunk_rows
        self.chunk_rows = max(step, rows // step * step)
        # (first row, rows of this rank) of every chunk that holds at least one global minibatch
        self._chunks = [(first, min(self.chunk_rows, self.n_rows - first) // step * batch_size)
                        for first in range(0, self.n_rows - step + 1, self.chunk_rows)]

    def head(self, n: int) -> torch.Tensor:
        return self.stream.head(n).to(device=self.device, dtype=self.dtype)

    def epoch(self, order: torch.Generator | None, block_steps: int) -> Iterator[tuple[torch.Tensor, ...]]:
        _check_block_steps(block_steps)
        ids = torch.randperm(len(self._chunks), generator=order).tolist() if order is not None else None
        chunks = self._chunks if ids is None else [self._chunks[i] for i in ids]
        r = self.world.rank
        spans = [(first + r * count, count) for first, count in chunks]
        return self._blocks(self.stream.read_ahead(spans, order), len(spans), block_steps)

    def _blocks(self, reader, n_chunks, block_steps):
        B, world = self.batch_size, self.world
        try:
            for _ in range(n_chunks):
                try:
                    x, error = next(reader), None
                except DataError as err:
                    x, error = None, err
                # Every rank learns whether any failed, so that none waits for the others in vain.
                all_ok = world.all_ok(error is None) if world.size > 1 else error is None
                if error is not None:
                    raise error
                if not all_ok:
                    raise DataError(f"{self.stream.path}: another process found bad data in it (see its message)")
                x = x.to(device=self.device, dtype=self.dtype)
                k = len(x) // B
                for i in range(0, k, block_steps):
                    yield (x[i * B : min(i + block_steps, k) * B],)
                del x  # not alive while the next chunk is read
        finally:
            reader.close()


def make_batches(x, y=None, *, batch_size: int, world: World = SINGLE, device=None,
                 dtype: torch.dtype = torch.float32) -> Batches:
    """:class:`StreamBatches` for an :class:`~dae.stream.NpyStream`, else :class:`TensorBatches`
    (a tensor or a numpy array); a :class:`Batches` made for this batch size and world as it is."""
    if isinstance(x, Batches):
        if y is not None or x.batch_size != batch_size or x.world != world:
            raise ValueError("these Batches were made for another batch size, world or labels")
        return x
    if isinstance(x, NpyStream):
        if y is not None:
            raise ValueError("a streamed .npy file has no labels: y must be None")
        return StreamBatches(x, batch_size=batch_size, world=world, device=device, dtype=dtype)
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"x must be a tensor, a numpy array or an NpyStream, got {type(x).__name__}")
    return TensorBatches(x, y, batch_size=batch_size, world=world, device=device, dtype=dtype)
