"""Streaming the rows of a .npy file that does not fit in memory.

``dae train --data big.npy`` on, say, 1,000,000 x 784 float32 (3.1 GB) cannot load the
array. :class:`NpyStream` reads the header once, then reads the rows in chunks of about
``chunk_bytes`` (as float32): ``seek`` to the chunk and ``readinto`` a buffer of the
file's dtype, convert to float32 and check the values, naming the row of the file at
fault. An epoch visits the chunks in the caller's order and can shuffle the rows within
each chunk; while the caller trains on one chunk, the next is read in a background
thread, so disk and conversion time overlap training and at most about three chunks
are in memory (the caller's, and the next one's raw and float32 buffers).

Why not ``np.load(mmap_mode="r")`` or ``np.memmap``: the pages of a memory map count
toward the process's resident memory as they are touched, and one epoch touches the
whole file, so resident memory would grow to the file's size (and count against
container memory limits). Plain reads into chunk-sized buffers keep it bounded.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .data import (
    _READ_ERRORS,
    DataError,
    _as_float_tensor,
    _check_loss,
    _check_npy_header,
    _open_error,
    _reason,
)

__all__ = ["NpyStream"]


class NpyStream:
    """The rows of a 2-D (or 3-D: n images of h x w, flattened) .npy file, read from
    disk in chunks, so that memory use does not depend on the file's size.

    ``__init__`` checks the header only (the data is checked chunk by chunk as it is
    read); every problem is a :class:`~dae.data.DataError` naming the file. Every chunk
    but the last holds ``chunk_rows`` rows, a multiple of `rows_multiple` (e.g. the
    minibatch size, so that minibatches never straddle chunks).
    """

    def __init__(self, path: str | os.PathLike, *, loss: str = "cross-entropy",
                 chunk_bytes: int = 64 * 2**20, rows_multiple: int = 1) -> None:
        _check_loss(loss)
        if chunk_bytes < 1 or rows_multiple < 1:
            raise ValueError("chunk_bytes and rows_multiple must be at least 1")
        self.path, self.loss = Path(path), loss
        self.name = self.path.stem
        try:
            with open(self.path, "rb") as f:
                shape, fortran_order, dtype = _check_npy_header(
                    f, os.fstat(f.fileno()).st_size, self.path)
                self._offset = f.tell()
        except DataError:
            raise
        except OSError as err:
            if err.strerror:
                raise _open_error(self.path, err) from err
            raise DataError(f"{self.path}: not a valid .npy file ({_reason(err)})") from err
        except _READ_ERRORS as err:
            raise DataError(f"{self.path}: not a valid .npy file ({_reason(err)})") from err
        if len(shape) not in (2, 3):
            raise DataError(f"{self.path}: array of shape {shape}; expected one example per"
                            " row, i.e. shape (n, d) or (n, height, width)")
        if fortran_order:
            raise DataError(f"{self.path}: the array is stored in Fortran (column) order,"
                            " which cannot be read row by row; save it in C order, e.g."
                            " np.save(path, np.ascontiguousarray(x))")
        self.n_rows, self.n_cols = shape[0], math.prod(shape[1:])
        if self.n_rows == 0 or self.n_cols == 0:
            raise DataError(f"{self.path}: is empty (shape {shape}); it needs at least one"
                            " example of at least one value")
        side = math.isqrt(self.n_cols)  # the rule of dae.data._examples
        self.image_shape = (tuple(shape[1:]) if len(shape) == 3 else
                            (side, side) if side > 1 and side * side == self.n_cols else None)
        self.dtype = dtype
        rows = chunk_bytes // (self.n_cols * 4) // rows_multiple * rows_multiple
        self.chunk_rows = min(max(rows_multiple, rows), self.n_rows)
        self.n_chunks = -(-self.n_rows // self.chunk_rows)

    def chunk_rows_of(self, index: int) -> int:
        """The number of rows in chunk `index` (only the last one may be shorter)."""
        first = self._first_row(index)
        return min(self.chunk_rows, self.n_rows - first)

    def read(self, index: int) -> torch.Tensor:
        """Chunk `index` as a float32, C-contiguous (rows, n_cols) tensor, checked."""
        return self.read_rows(self._first_row(index), self.chunk_rows_of(index))

    def head(self, n: int) -> torch.Tensor:
        """The first min(n, n_rows) rows (e.g. to initialise or preview a model)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return self.read_rows(0, min(n, self.n_rows))

    def epoch(self, chunk_ids: Sequence[int],
              generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Iterate over the chunks in the order of `chunk_ids`, reading one ahead
        (:meth:`read_ahead` of the chunks' rows)."""
        ids = [self._check_index(i) for i in chunk_ids]  # fail now, not at next()
        return self.read_ahead([(self._first_row(i), self.chunk_rows_of(i)) for i in ids], generator)

    def read_ahead(self, spans: Iterable[tuple[int, int]],
                   generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """:meth:`read_rows` of each ``(first, count)`` of `spans` in turn, the next one
        read in a background thread while the caller works on the current one.

        With a `generator`, the rows of each span are permuted by
        ``torch.randperm(count, generator=generator)``, drawn in this thread in span
        order (span k's when its read starts, just before span k-1 is yielded), so the
        same generator state gives the same rows. The read-ahead thread ends when the
        iterator is exhausted or closed: to stop early, break out of the loop or call
        ``close()`` (``contextlib.closing`` does it on exceptions too). Nothing is read
        before the first ``next()``.
        """
        spans = [self._check_span(first, count) for first, count in spans]  # fail now
        return self._read_ahead(spans, generator)

    def _read_ahead(self, spans: list[tuple[int, int]], generator: torch.Generator | None
                    ) -> Iterator[torch.Tensor]:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dae-npy-read")

        def start(first: int, count: int) -> Future:
            perm = None if generator is None else torch.randperm(count, generator=generator)
            return pool.submit(self._read_span, first, count, perm)

        try:
            pending = start(*spans[0]) if spans else None
            for k in range(len(spans)):
                rows = pending.result()  # re-raises the reader's DataError here
                pending = start(*spans[k + 1]) if k + 1 < len(spans) else None
                yield rows
                del rows  # do not keep it alive while the next one is read
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _read_span(self, first: int, count: int, perm: torch.Tensor | None) -> torch.Tensor:
        x = self.read_rows(first, count)
        return x if perm is None else x.index_select(0, perm)

    def _check_span(self, first: int, count: int) -> tuple[int, int]:
        first, count = operator.index(first), operator.index(count)
        if first < 0 or count < 0 or first + count > self.n_rows:
            raise IndexError(f"rows {first} to {first + count - 1} out of range: {self.path}"
                             f" has {self.n_rows} rows")
        return first, count

    def _check_index(self, index: int) -> int:
        index = operator.index(index)
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk {index} out of range: {self.path} has"
                             f" {self.n_chunks} chunk(s)")
        return index

    def _first_row(self, index: int) -> int:
        return self._check_index(index) * self.chunk_rows

    def read_rows(self, first: int, count: int) -> torch.Tensor:
        """Rows first..first+count-1 of the file as a float32, C-contiguous
        (count, n_cols) tensor, checked (a DataError names the file's row at fault)."""
        first, count = self._check_span(first, count)
        raw = np.empty((count, self.n_cols), dtype=self.dtype)
        view = memoryview(raw.reshape(-1).view(np.uint8))
        position = self._offset + first * self.n_cols * self.dtype.itemsize
        got = 0
        try:
            with open(self.path, "rb", buffering=0) as f:
                f.seek(position)
                while got < len(view):
                    n = f.readinto(view[got:])
                    if not n:
                        break
                    got += n
        except OSError as err:
            raise _open_error(self.path, err) from err
        if got < len(view):
            raise DataError(f"{self.path}: truncated .npy data: rows {first} to"
                            f" {first + count - 1} need {len(view)} bytes from byte"
                            f" {position}, only {got} could be read (was the file changed?)")
        x = _as_float_tensor(raw, self.path)
        del raw, view
        self._check_values(x, first)
        return x

    def _check_values(self, x: torch.Tensor, first: int) -> None:
        """Refuse non-finite values and, for cross-entropy, values outside [0, 1]."""
        if x.numel() == 0:
            return
        last = first + len(x) - 1
        where = "" if len(x) == self.n_rows else f" in rows {first} to {last}"
        if not bool(torch.isfinite(x).all()):
            bad = ~torch.isfinite(x)
            count, row = int(bad.sum()), first + int(bad.any(dim=1).nonzero()[0, 0])
            raise DataError(f"{self.path}: contains {count} non-finite value"
                            f"{'s' if count > 1 else ''} (NaN or infinity){where}, the"
                            f" first in row {row} (counting from 0); remove or replace them")
        if self.loss == "cross-entropy":
            low, high = (float(v) for v in torch.aminmax(x))
            if low < 0 or high > 1:
                row = first + int(((x < 0) | (x > 1)).any(dim=1).nonzero()[0, 0])
                raise DataError(f"{self.path}: has values from {low:g} to {high:g}{where},"
                                f" the first outside [0, 1] in row {row}, but the"
                                " cross-entropy loss needs values in [0, 1]: scale the data"
                                " to [0, 1] or use --loss squared-error")
