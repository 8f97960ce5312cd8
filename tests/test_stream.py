"""Tests of dae.stream.NpyStream: reading a .npy file in chunks, without loading it."""

from __future__ import annotations

import json
import math
import mmap
import threading
import time

import numpy as np
import pytest
import torch

from dae.data import DataError
from dae.stream import NpyStream


def _save(tmp_path, array, name="data.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


def _expected(array):
    """What the stream should give: the rows as float32 (uint8 / 255), flattened."""
    x = array.reshape(len(array), -1)
    if x.dtype == np.uint8:
        return torch.from_numpy(x.astype(np.float32) / np.float32(255))
    return torch.from_numpy(x.astype(np.float32))


def _all(stream, **kwargs):
    return torch.cat(list(stream.epoch(range(stream.n_chunks), **kwargs)))


def _unique_rows(n, d, seed=0):
    """Rows in [0, 1) whose first value is distinct, so rows can be sorted."""
    x = np.random.default_rng(seed).random((n, d), dtype=np.float32)
    x[:, 0] = np.arange(n, dtype=np.float32) / n
    return x


def _sorted_rows(x):
    return x[torch.argsort(x[:, 0])]


def _read_threads():
    return [t for t in threading.enumerate() if t.name.startswith("dae-npy-read")]


rng = np.random.default_rng(1)
ARRAYS = {
    "float32": rng.random((300, 10), dtype=np.float32),
    "float32-3d": rng.random((250, 4, 5), dtype=np.float32),
    "uint8": rng.integers(0, 256, (300, 16), dtype=np.uint8),
    "float64-big-endian": rng.random((210, 9)).astype(">f8"),
    "float16": rng.random((333, 7)).astype(np.float16),
    "bool": rng.random((120, 5)) > 0.5,
}


@pytest.mark.parametrize("kind", ARRAYS)
def test_epoch_concatenates_to_the_file(tmp_path, kind):
    array = ARRAYS[kind]
    path = _save(tmp_path, array)
    stream = NpyStream(path, chunk_bytes=200)
    assert stream.n_chunks > 2
    assert stream.dtype == np.load(path).dtype
    chunks = list(stream.epoch(range(stream.n_chunks)))
    for chunk in chunks:
        assert chunk.dtype == torch.float32 and chunk.is_contiguous()
        assert chunk.shape[1] == stream.n_cols
    assert torch.equal(torch.cat(chunks), _expected(np.load(path)))
    assert torch.equal(torch.cat([stream.read(i) for i in range(stream.n_chunks)]),
                       _expected(np.load(path)))


def test_attributes(tmp_path):
    s = NpyStream(_save(tmp_path, ARRAYS["float32-3d"], "images.npy"))
    assert (s.n_rows, s.n_cols, s.image_shape, s.name) == (250, 20, (4, 5), "images")
    assert s.path == tmp_path / "images.npy" and s.loss == "cross-entropy"
    assert (s.chunk_rows, s.n_chunks) == (250, 1)  # 64 MiB holds the whole file
    assert NpyStream(_save(tmp_path, ARRAYS["uint8"])).image_shape == (4, 4)
    assert NpyStream(_save(tmp_path, ARRAYS["float32"])).image_shape is None
    assert NpyStream(_save(tmp_path, np.zeros((3, 1)))).image_shape is None


@pytest.mark.parametrize("rows_multiple, chunk_rows", [
    (1, 25), (7, 21), (20, 20), (30, 30), (64, 64), (299, 299), (500, 300)])
def test_chunk_sizes(tmp_path, rows_multiple, chunk_rows):
    path = _save(tmp_path, ARRAYS["float32"])  # 300 rows of 10 values: 40 bytes
    s = NpyStream(path, chunk_bytes=1000, rows_multiple=rows_multiple)  # 25 rows fit
    assert s.chunk_rows == chunk_rows
    assert s.n_chunks == math.ceil(300 / chunk_rows)
    sizes = [s.chunk_rows_of(i) for i in range(s.n_chunks)]
    assert sum(sizes) == 300
    assert all(size == chunk_rows for size in sizes[:-1])
    assert all(size % rows_multiple == 0 for size in sizes[:-1])
    assert [len(s.read(i)) for i in range(s.n_chunks)] == sizes
    for bad in (-1, s.n_chunks):
        with pytest.raises(IndexError):
            s.chunk_rows_of(bad)
        with pytest.raises(IndexError):
            s.epoch([0, bad])


def test_epoch_follows_the_chunk_order(tmp_path):
    array = ARRAYS["float32"]
    s = NpyStream(_save(tmp_path, array), chunk_bytes=40 * 60)  # 60 rows, 5 chunks
    order = [3, 0, 4, 2, 2, 1]
    chunks = list(s.epoch(order))
    assert len(chunks) == len(order)
    for index, chunk in zip(order, chunks):
        assert torch.equal(chunk, torch.from_numpy(array[index * 60:(index + 1) * 60]))
    assert list(s.epoch([])) == []


def test_generator_permutes_rows_within_each_chunk(tmp_path):
    array = _unique_rows(530, 6)
    s = NpyStream(_save(tmp_path, array), chunk_bytes=200 * 24)  # 200, 200, 130 rows
    assert [s.chunk_rows_of(i) for i in range(3)] == [200, 200, 130]
    order = [2, 0, 1]
    chunks = list(s.epoch(order, torch.Generator().manual_seed(0)))
    for index, chunk in zip(order, chunks):
        original = s.read(index)
        assert chunk.dtype == torch.float32 and chunk.is_contiguous()
        assert torch.equal(_sorted_rows(chunk), original)
        assert not torch.equal(chunk, original)


def test_generator_seeds(tmp_path):
    s = NpyStream(_save(tmp_path, _unique_rows(400, 3)), chunk_bytes=100 * 12)
    def epoch(seed):
        return _all(s, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(epoch(5), epoch(5))
    assert not torch.equal(epoch(5), epoch(6))
    # The permutations are drawn from the caller's generator, one per chunk, in order.
    g = torch.Generator().manual_seed(5)
    expected = torch.cat([s.read(i)[torch.randperm(100, generator=g)] for i in range(4)])
    assert torch.equal(epoch(5), expected)


def test_head(tmp_path):
    array = ARRAYS["uint8"]
    s = NpyStream(_save(tmp_path, array), chunk_bytes=64 * 5)
    for n in (0, 1, 7, 123, 300, 1000):
        head = s.head(n)
        assert head.shape == (min(n, 300), 16) and head.dtype == torch.float32
        assert torch.equal(head, _expected(array)[:n])
    with pytest.raises(ValueError):
        s.head(-1)


def test_read_rows_and_read_ahead_take_any_span_of_rows(tmp_path):
    array = _unique_rows(300, 4)
    s = NpyStream(_save(tmp_path, array), chunk_bytes=16 * 100)
    expected = torch.from_numpy(array)
    assert torch.equal(s.read_rows(37, 101), expected[37:138])
    assert s.read_rows(300, 0).shape == (0, 4)
    spans = [(250, 50), (0, 7), (100, 0), (7, 93)]
    got = list(s.read_ahead(spans))
    assert [len(x) for x in got] == [50, 7, 0, 93]
    assert torch.equal(torch.cat(got), torch.cat([expected[250:], expected[:100]]))
    g = torch.Generator().manual_seed(2)
    perms = [torch.randperm(count, generator=g) for _, count in spans]
    shuffled = list(s.read_ahead(spans, torch.Generator().manual_seed(2)))
    for (first, count), perm, x in zip(spans, perms, shuffled):
        assert torch.equal(x, expected[first:first + count][perm])
    for first, count in [(-1, 2), (299, 2), (0, -1), (301, 0)]:
        with pytest.raises(IndexError, match="out of range"):
            s.read_rows(first, count)
        with pytest.raises(IndexError, match="out of range"):
            s.read_ahead([(0, 1), (first, count)])  # at once, not at the first next()
    assert not _read_threads()


def test_nan_in_the_last_chunk_names_the_file_row(tmp_path):
    array = ARRAYS["float32"].copy()
    array[287, 3] = np.nan
    array[290, 0] = np.inf
    path = _save(tmp_path, array)
    s = NpyStream(path, chunk_bytes=40 * 50)  # 6 chunks of 50 rows
    message = f"{path}: contains 2 non-finite values (NaN or infinity) in rows 250 to"
    with pytest.raises(DataError, match="the first in row 287 ") as err:
        s.read(5)
    assert str(err.value).startswith(message)
    assert s.read(4).shape == (50, 10)  # the other chunks are fine

    before = threading.active_count()
    seen = []
    with pytest.raises(DataError, match="the first in row 287 ") as err:
        for chunk in s.epoch(range(6), torch.Generator().manual_seed(0)):
            seen.append(len(chunk))  # the error comes from the read-ahead thread
    assert str(err.value).startswith(message)
    assert len(seen) == 5
    assert threading.active_count() == before and not _read_threads()
    with pytest.raises(DataError, match="row 287 "):
        s.head(300)
    assert len(s.head(287)) == 287


def test_whole_file_chunk_message_matches_check_inputs(tmp_path):
    array = ARRAYS["float32"].copy()
    array[12, 0] = np.nan
    path = _save(tmp_path, array)
    with pytest.raises(DataError) as err:
        NpyStream(path).read(0)
    assert str(err.value) == (f"{path}: contains 1 non-finite value (NaN or infinity),"
                              " the first in row 12 (counting from 0); remove or replace"
                              " them")


def test_values_outside_0_1(tmp_path):
    array = ARRAYS["float32"].copy()
    array[123, 4] = 1.5
    path = _save(tmp_path, array)
    s = NpyStream(path, chunk_bytes=40 * 100)
    with pytest.raises(DataError, match=r"\[0, 1\]") as err:
        list(s.epoch(range(3)))
    message = str(err.value)
    assert message.startswith(f"{path}: has values from ")
    assert "to 1.5 in rows 100 to 199" in message and "row 123" in message
    assert "--loss squared-error" in message and "\n" not in message
    ok = NpyStream(path, loss="squared-error", chunk_bytes=40 * 100)
    assert torch.equal(_all(ok), torch.from_numpy(array))

    array[123, 4] = -0.25
    path = _save(tmp_path, array, "negative.npy")
    with pytest.raises(DataError, match=r"from -0\.25 to"):
        NpyStream(path).head(300)
    with pytest.raises(ValueError, match="unknown loss"):
        NpyStream(path, loss="hinge")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _npy_with_header(path, header: dict, data: bytes, version=(1, 0)):
    with open(path, "wb") as f:
        if version == (1, 0):
            np.lib.format.write_array_header_1_0(f, header)
        else:
            np.lib.format.write_array_header_2_0(f, header)
        f.write(data)
    return path


def _bad_files(tmp_path):
    good = np.arange(60, dtype=np.float32).reshape(6, 10) / 60
    raw = np.lib.format
    truncated = _save(tmp_path, good, "truncated.npy")
    truncated.write_bytes(truncated.read_bytes()[:-5])
    version = _save(tmp_path, good, "version.npy")
    version.write_bytes(version.read_bytes()[:6] + b"\x09\x00" + version.read_bytes()[8:])
    (tmp_path / "folder.npy").mkdir()
    return {
        "missing": (tmp_path / "missing.npy", "no such file"),
        "directory": (tmp_path / "folder.npy", "directory"),
        "empty": (_write(tmp_path / "empty.npy", b""), "empty"),
        "not npy": (_write(tmp_path / "text.npy", b"1,2,3\n4,5,6\n"), "not a .npy"),
        "version": (version, "version (9, 0)"),
        "bad header": (_write(tmp_path / "header.npy", raw.magic(1, 0) + b"\x10\x00{'descr': <f4\n"
                              + b" " * 5), "not a valid .npy"),
        "object": (_save(tmp_path, np.array([[1, "a"]], dtype=object), "object.npy"),
                   "Python objects"),
        "str": (_save(tmp_path, np.array([["a", "b"]]), "str.npy"), "numbers"),
        "complex": (_save(tmp_path, np.ones((3, 2), np.complex64), "complex.npy"), "numbers"),
        "record": (_save(tmp_path, np.zeros((3, 2), "f4,i4"), "record.npy"), "numbers"),
        "fortran": (_save(tmp_path, np.asfortranarray(good), "fortran.npy"), "C order"),
        "1-d": (_save(tmp_path, good.ravel(), "flat.npy"), "shape (60,)"),
        "4-d": (_save(tmp_path, good.reshape(1, 2, 3, 10), "four.npy"), "(n, d)"),
        "0-d": (_save(tmp_path, np.float32(1), "scalar.npy"), "shape ()"),
        "zero rows": (_save(tmp_path, np.zeros((0, 10), np.float32), "rows.npy"), "empty"),
        "zero cols": (_save(tmp_path, np.zeros((10, 0), np.float32), "cols.npy"), "empty"),
        "zero width": (_save(tmp_path, np.zeros((10, 3, 0), np.float32), "w.npy"), "empty"),
        "truncated": (truncated, "truncated .npy data"),
        "forged shape": (_npy_with_header(tmp_path / "forged.npy", {
            "descr": "<f4", "fortran_order": False, "shape": (2**40, 2**20)}, b"\0" * 64),
            "truncated .npy data"),
    }


def test_bad_headers(tmp_path):
    for kind, (path, words) in _bad_files(tmp_path).items():
        with pytest.raises(DataError) as err:
            NpyStream(path)
        message = str(err.value)
        assert message.startswith(f"{path}: "), kind
        assert words in message, (kind, message)
        assert "\n" not in message, kind


def test_file_truncated_after_it_was_opened(tmp_path):
    path = _save(tmp_path, ARRAYS["float32"])
    s = NpyStream(path, chunk_bytes=40 * 100)
    assert len(s.read(2)) == 100
    path.write_bytes(path.read_bytes()[:-40 * 30])
    assert len(s.read(1)) == 100
    with pytest.raises(DataError, match="truncated .npy data: rows 200 to 299") as err:
        s.read(2)
    assert str(err.value).startswith(f"{path}: ")
    with pytest.raises(DataError, match="truncated"):
        list(s.epoch([0, 1, 2]))
    assert not _read_threads()


def test_init_reads_the_header_only(tmp_path):
    # 4 GB of NaNs according to the header, of which only 64 KiB exist: the header
    # check refuses it; with the right size but garbage data, __init__ succeeds.
    path = _npy_with_header(tmp_path / "garbage.npy", {
        "descr": "<f4", "fortran_order": False, "shape": (500, 8, 4)}, b"\xff" * 64000,
        version=(2, 0))
    s = NpyStream(path, chunk_bytes=3200)
    assert (s.n_rows, s.n_cols, s.image_shape, s.chunk_rows, s.n_chunks) == (
        500, 32, (8, 4), 25, 20)
    assert s.dtype == np.float32
    with pytest.raises(DataError, match="non-finite .* the first in row 0 "):
        s.read(0)
    with pytest.raises(DataError, match="the first in row 475 "):
        s.read(19)


def test_reads_ahead_in_the_background(tmp_path, monkeypatch):
    s = NpyStream(_save(tmp_path, ARRAYS["float32"]), chunk_bytes=40 * 100)
    started = []
    real = NpyStream.read_rows

    def spy(self, first, count):
        started.append((first, threading.current_thread().name))
        return real(self, first, count)

    monkeypatch.setattr(NpyStream, "read_rows", spy)
    chunks = s.epoch([0, 1, 2])
    next(chunks)
    deadline = time.monotonic() + 10
    while len(started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [first for first, _ in started] == [0, 100]  # 100: before it is asked for
    assert all(name.startswith("dae-npy-read") for _, name in started)
    chunks.close()
    assert not _read_threads()


def test_stopping_early_ends_the_read_ahead_thread(tmp_path):
    s = NpyStream(_save(tmp_path, ARRAYS["float32"]), chunk_bytes=40 * 20)
    before = threading.active_count()
    for _chunk in s.epoch(range(s.n_chunks)):
        assert _read_threads()  # reading the next chunk
        break
    assert threading.active_count() == before and not _read_threads()

    chunks = s.epoch(range(s.n_chunks), torch.Generator().manual_seed(1))
    next(chunks), next(chunks)
    chunks.close()
    assert threading.active_count() == before

    with pytest.raises(RuntimeError, match="caller"):
        for i, _chunk in enumerate(s.epoch(range(s.n_chunks))):
            if i == 3:
                raise RuntimeError("caller failed")
    assert threading.active_count() == before

    unstarted = s.epoch(range(s.n_chunks))
    assert threading.active_count() == before  # nothing runs before the first next()
    del unstarted


def test_never_loads_or_maps_the_file(tmp_path, monkeypatch):
    array = ARRAYS["float64-big-endian"]
    path = _save(tmp_path, array)

    def refuse(*args, **kwargs):
        raise AssertionError("the stream must not load or memory-map the file")

    for owner, name in [(np, "load"), (np, "memmap"), (np, "fromfile"),
                        (np.lib.format, "read_array"), (np.lib.format, "open_memmap"),
                        (mmap, "mmap"), (torch, "from_file")]:
        monkeypatch.setattr(owner, name, refuse)
    s = NpyStream(path, chunk_bytes=500)
    assert s.n_chunks > 3
    data = torch.cat([_all(s), _all(s, generator=torch.Generator().manual_seed(0))[:0],
                      s.head(5)[:0]])
    monkeypatch.undo()
    assert torch.equal(data, _expected(np.load(path)))


# --- training on a stream ---------------------------------------------------------------


def _digits(tmp_path, n=1200):
    from dae import load_mnist

    path = tmp_path / "digits.npy"
    np.save(path, load_mnist().train.x[:n].numpy())
    return path


def _record_blocks(monkeypatch):
    """The rows each call of the hand-written dA step trains on, in order."""
    from dae.steps import DAStep

    seen = []
    real_call = DAStep.__call__

    def spy(self, block, generator):
        seen.append(block[0].clone())
        return real_call(self, block, generator)

    monkeypatch.setattr(DAStep, "__call__", spy)
    return seen


def test_training_on_a_stream_in_order_is_training_in_memory_bit_for_bit(tmp_path):
    from dae import DenoisingAutoencoder, train

    path = _digits(tmp_path, 1210)
    x = torch.from_numpy(np.load(path))
    # Chunks of 70 rows: not a multiple of the batch size (20), nor of the in-memory blocks.
    stream = NpyStream(path, chunk_bytes=70 * 784 * 4)
    assert stream.chunk_rows == 70
    models, costs = [], []
    for rows in (x, stream):
        model = DenoisingAutoencoder(784, 32, corruption_level=0.3, generator=torch.Generator().manual_seed(5))
        costs.append([r.cost for r in train(model, rows, epochs=2, batch_size=20, shuffle=False, generator=7)])
        models.append(model)
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.equal(p, q), name
    assert costs[1] == pytest.approx(costs[0], rel=1e-6)  # the same terms, summed in other groups


@pytest.mark.parametrize("chunk_rows", [70, 20, 1210])
def test_training_on_a_stream_uses_every_row_but_the_last_partial_minibatch(tmp_path, monkeypatch, chunk_rows):
    from dae import DenoisingAutoencoder, train

    path = _digits(tmp_path, 1210)
    seen = _record_blocks(monkeypatch)
    stream = NpyStream(path, chunk_bytes=chunk_rows * 784 * 4)
    model = DenoisingAutoencoder(784, 8, generator=torch.Generator().manual_seed(0))
    train(model, stream, epochs=1, batch_size=20, shuffle=False, generator=0)
    assert torch.equal(torch.cat(seen), torch.from_numpy(np.load(path))[:1200])  # 1210 // 20 minibatches, in order
    assert all(len(block) % 20 == 0 for block in seen)


@pytest.mark.parametrize("shuffle", [True, None])  # None: a stream is shuffled, a tensor is not
def test_a_shuffled_stream_visits_every_row_once_per_epoch(tmp_path, monkeypatch, shuffle):
    from dae import DenoisingAutoencoder, train

    path = _digits(tmp_path, 1000)
    seen = _record_blocks(monkeypatch)
    stream = NpyStream(path, chunk_bytes=100 * 784 * 4, rows_multiple=20)
    model = DenoisingAutoencoder(784, 8, generator=torch.Generator().manual_seed(0))
    train(model, stream, epochs=1, batch_size=20, shuffle=shuffle, order_seed=3)
    visited = torch.cat(seen)
    original = torch.from_numpy(np.load(path))
    assert not torch.equal(visited, original)  # shuffled ...
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(visited) == key(original)  # ... but every row exactly once


def test_dae_train_streams_a_npy_file_and_reports_bad_values_in_one_line(tmp_path, capsys):
    from dae.cli import main

    path = _digits(tmp_path, 600)
    assert main(["train", "--data", str(path), "--stream", "--hidden", "16", "--epochs", "2", "--out",
                 str(tmp_path / "run"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["streamed"] is True and summary["shuffle"] is True and summary["n_train"] == 600
    assert (tmp_path / "run" / "reconstructions.png").is_file()
    x = np.load(path)
    x[555, 3] = np.nan
    np.save(tmp_path / "bad.npy", x)
    assert main(["train", "--data", str(tmp_path / "bad.npy"), "--stream", "--hidden", "4", "--epochs", "1",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dae: error: ") and err.count("\n") == 1 and "row 555" in err
    assert not (tmp_path / "bad").exists()  # the run's new folder went with it
    assert main(["train", "--data", "mnist", "--stream", "--out", str(tmp_path / "m")]) == 2
    assert "--stream reads .npy files" in capsys.readouterr().err


def test_a_run_that_fails_keeps_a_folder_the_user_made_but_removes_its_own(tmp_path, capsys):
    from dae.cli import main

    x = np.random.default_rng(0).random((100, 4)).astype(np.float32)
    x[70, 1] = np.inf
    np.save(tmp_path / "bad.npy", x)
    argv = ["train", "--data", str(tmp_path / "bad.npy"), "--stream", "--hidden", "2", "--epochs", "1"]
    (tmp_path / "mine").mkdir()
    assert main([*argv, "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())
    assert main([*argv, "--out", str(tmp_path / "new" / "run")]) == 2
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "run").exists()
    assert "row 70" in capsys.readouterr().err
