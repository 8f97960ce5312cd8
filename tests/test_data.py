"""Specification of dae.data: the bundled MNIST, IDX files and the user's own data."""

from __future__ import annotations

import gzip
import io
import shutil
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dae import data
from dae.data import (
    DataError,
    Dataset,
    Split,
    check_inputs,
    load_data,
    load_mnist,
    read_idx,
)

# Facts about MNIST (counts per digit 0..9, first labels, pixel statistics), from the
# original files; the mean/std are the well-known normalisation constants 0.1307/0.3081.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FIRST_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]

IDX_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C,
             "float32": 0x0D, "float64": 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode `array` as an IDX file: magic, big-endian dims, big-endian data."""
    code = IDX_CODES[array.dtype.name]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I",
                                                             *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array: np.ndarray, gz: bool = False):
    payload = idx_bytes(array)
    path.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return path


def expect_data_error(call, *args, match: str, **kwargs) -> str:
    """Run call(*args, **kwargs); it must raise exactly DataError with a one-line
    message containing `match`."""
    with pytest.raises(Exception) as info:
        call(*args, **kwargs)
    assert type(info.value) is DataError, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert match in message
    assert "\n" not in message and "\r" not in message
    return message


# --------------------------------------------------------------------------------------
# The bundled MNIST
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_mnist()


def test_mnist_splits_have_the_tutorial_shapes_and_dtypes(mnist):
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = mnist[:3]
    assert train_x.shape == (50000, 784) and train_y.shape == (50000,)
    assert valid_x.shape == (10000, 784) and valid_y.shape == (10000,)
    assert test_x.shape == (10000, 784) and test_y.shape == (10000,)
    for x in (train_x, valid_x, test_x):
        assert x.dtype == torch.float32
    for y in (train_y, valid_y, test_y):
        assert y.dtype == torch.int64
    assert mnist.image_shape == (28, 28)
    assert mnist.name == "mnist"


def test_mnist_pixels_are_in_unit_interval_and_use_it(mnist):
    for split in mnist[:3]:
        assert float(split.x.min()) == 0.0
        assert float(split.x.max()) == 1.0


def test_mnist_label_counts(mnist):
    train_y = torch.cat([mnist.train.y, mnist.valid.y])
    assert torch.bincount(train_y, minlength=10).tolist() == TRAIN_COUNTS
    assert torch.bincount(mnist.test.y, minlength=10).tolist() == TEST_COUNTS


def test_mnist_first_training_labels(mnist):
    assert mnist.train.y[:10].tolist() == FIRST_LABELS


def test_mnist_pixel_mean_and_std(mnist):
    n = 0
    total = 0.0
    squares = 0.0
    for x in (mnist.train.x, mnist.valid.x):
        n += x.numel()
        total += float(x.sum(dtype=torch.float64))
        squares += float((x * x).sum(dtype=torch.float64))
    mean = total / n
    std = (squares / n - mean**2) ** 0.5
    assert n == 60000 * 784
    assert round(mean, 4) == 0.1307
    assert round(std, 4) == 0.3081


def test_mnist_valid_is_the_last_10000_training_images(mnist):
    folder = data._bundled_mnist_dir()
    images = read_idx(folder / "train-images-idx3-ubyte.gz")
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    pixels = torch.from_numpy(images.reshape(60000, 784))
    assert torch.equal(mnist.valid.x, pixels[50000:].float() / 255)
    assert torch.equal(mnist.train.x, pixels[:50000].float() / 255)
    assert mnist.valid.y.tolist() == labels[50000:].tolist()


def test_load_data_mnist_is_the_bundled_set(mnist):
    dataset = load_data("mnist")
    assert dataset.name == "mnist" and dataset.image_shape == (28, 28)
    for mine, bundled in zip(dataset[:3], mnist[:3]):
        assert torch.equal(mine.x, bundled.x) and torch.equal(mine.y, bundled.y)


def test_corrupt_bundled_file_fails_the_checksum(tmp_path, monkeypatch):
    copy = tmp_path / "mnist"
    shutil.copytree(data._bundled_mnist_dir(), copy)
    target = copy / "t10k-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    content = bytearray(target.read_bytes())
    content[1000] ^= 0x01
    target.write_bytes(bytes(content))
    monkeypatch.setattr(data, "_bundled_mnist_dir", lambda: copy)
    message = expect_data_error(load_mnist, match="corrupt")
    assert "t10k-labels-idx1-ubyte.gz" in message and "sha256" in message


def test_missing_bundled_file_is_a_data_error(tmp_path, monkeypatch):
    copy = tmp_path / "mnist"
    shutil.copytree(data._bundled_mnist_dir(), copy)
    (copy / "train-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setattr(data, "_bundled_mnist_dir", lambda: copy)
    expect_data_error(load_mnist, match="train-labels-idx1-ubyte.gz")


# --------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------

SHAPES = [(7,), (3, 5), (4, 3, 2), (2, 3, 1, 4)]


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", list(IDX_CODES))
def test_read_idx_round_trips(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        if dtype.startswith("float"):
            array = rng.normal(size=shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, size=shape, endpoint=True,
                                 dtype=dtype)
        result = read_idx(write_idx(tmp_path / f"a{len(shape)}", array, gz=gz))
        assert result.shape == shape
        assert result.dtype == np.dtype(dtype)
        assert result.dtype.isnative
        assert result.flags.writeable
        np.testing.assert_array_equal(result, array)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_named_plain = write_idx(tmp_path / "plain.gz", array, gz=False)
    plain_named_gz = write_idx(tmp_path / "compressed-ubyte", array, gz=True)
    np.testing.assert_array_equal(read_idx(gz_named_plain), array)
    np.testing.assert_array_equal(read_idx(plain_named_gz), array)


def test_read_idx_allows_zero_length_dimensions(tmp_path):
    path = write_idx(tmp_path / "empty-ubyte", np.zeros((0, 5), dtype=np.uint8))
    assert read_idx(path).shape == (0, 5)


VALID_IDX = idx_bytes(np.arange(24, dtype=np.int16).reshape(2, 3, 4))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"\x00\x00", "truncated IDX header"),
        (VALID_IDX[:10], "truncated IDX header"),
        (b"\x01\x02" + VALID_IDX[2:], "not an IDX file"),
        (b"PNG\x89" + VALID_IDX[4:], "not an IDX file"),
        (b"\x00\x00\x0a\x03" + VALID_IDX[4:], "unknown IDX data type 0x0A"),
        (b"\x00\x00\x0b\x00" + VALID_IDX[4:], "0 dimensions"),
        (b"\x00\x00\x0b\x05" + VALID_IDX[4:], "5 dimensions"),
        (VALID_IDX[:-1], "truncated"),
        (VALID_IDX[:16], "truncated"),
        (VALID_IDX + b"\x00", "unexpected bytes"),
        (b"\x00\x00\x08\x04" + b"\xff" * 16 + b"\x00" * 10, "truncated"),
    ],
    ids=["empty", "short-magic", "short-dims", "bad-magic", "png", "type", "ndim0",
         "ndim5", "short-payload", "no-payload", "trailing", "huge-dims"],
)
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_refuses_malformed_files(tmp_path, content, match, gz):
    path = tmp_path / "bad-ubyte"
    path.write_bytes(gzip.compress(content, mtime=0) if gz else content)
    message = expect_data_error(read_idx, path, match=match)
    assert str(path) in message


def test_read_idx_refuses_corrupt_gzip(tmp_path):
    compressed = bytearray(gzip.compress(VALID_IDX * 1, mtime=0))
    damaged = compressed.copy()
    damaged[-6] ^= 0xFF  # inside the CRC32 trailer
    (tmp_path / "crc.gz").write_bytes(bytes(damaged))
    expect_data_error(read_idx, tmp_path / "crc.gz", match="corrupt gzip")
    (tmp_path / "cut.gz").write_bytes(bytes(compressed[:-10]))
    expect_data_error(read_idx, tmp_path / "cut.gz", match="ends early")
    (tmp_path / "junk.gz").write_bytes(b"\x1f\x8b" + b"junk" * 10)
    expect_data_error(read_idx, tmp_path / "junk.gz", match="gzip")


def test_read_idx_missing_file_and_directory(tmp_path):
    expect_data_error(read_idx, tmp_path / "nope-ubyte", match="no such file")
    expect_data_error(read_idx, tmp_path, match="is a directory")


# --------------------------------------------------------------------------------------
# load_data: arrays
# --------------------------------------------------------------------------------------


def test_npy_matrix_is_training_data_with_square_image_shape(tmp_path):
    array = np.random.default_rng(1).random((5, 16))
    np.save(tmp_path / "m.npy", array)
    dataset = load_data(tmp_path / "m.npy")
    assert dataset.train.x.dtype == torch.float32
    assert dataset.train.y is None and dataset.valid is None and dataset.test is None
    assert dataset.image_shape == (4, 4)
    assert dataset.name == "m"
    np.testing.assert_allclose(dataset.train.x.numpy(), array, rtol=1e-6)


@pytest.mark.parametrize(("d", "image_shape"), [(10, None), (1, None), (4, (2, 2))])
def test_image_shape_is_only_guessed_for_perfect_squares(tmp_path, d, image_shape):
    np.save(tmp_path / "m.npy", np.zeros((3, d)))
    assert load_data(str(tmp_path / "m.npy")).image_shape == image_shape


def test_npy_uint8_images_are_flattened_and_scaled_by_255(tmp_path):
    images = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5) * 8
    np.save(tmp_path / "img.npy", images)
    dataset = load_data(tmp_path / "img.npy")
    assert dataset.train.x.shape == (2, 15)
    assert dataset.image_shape == (3, 5)
    expected = torch.from_numpy(images.reshape(2, 15)).float() / 255
    assert torch.equal(dataset.train.x, expected)


def test_integer_and_bool_arrays_become_float32_unscaled(tmp_path):
    np.save(tmp_path / "i.npy", np.array([[0, 7], [3, -2]], dtype=np.int16))
    x = load_data(tmp_path / "i.npy", loss="squared-error").train.x
    assert x.dtype == torch.float32 and x.tolist() == [[0, 7], [3, -2]]
    np.save(tmp_path / "b.npy", np.array([[True, False]]))
    assert load_data(tmp_path / "b.npy").train.x.tolist() == [[1.0, 0.0]]


def test_npz_with_split_keys(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(
        tmp_path / "s.npz",
        x_train=rng.random((6, 3, 3)),
        y_train=np.arange(6, dtype=np.uint8),
        x_test=rng.random((2, 9)),
        y_test=np.array([1.0, 2.0]),
    )
    dataset = load_data(tmp_path / "s.npz")
    assert dataset.train.x.shape == (6, 9) and dataset.image_shape == (3, 3)
    assert dataset.train.y.dtype == torch.int64 and dataset.train.y.tolist() == list(
        range(6))
    assert dataset.valid is None
    assert dataset.test.x.shape == (2, 9) and dataset.test.y.tolist() == [1, 2]


def test_npz_with_a_single_array_of_any_name(tmp_path):
    np.savez_compressed(tmp_path / "one.npz", digits=np.zeros((4, 25), dtype=np.uint8))
    dataset = load_data(tmp_path / "one.npz")
    assert dataset.train.x.shape == (4, 25) and dataset.image_shape == (5, 5)
    assert dataset.test is None and dataset.train.y is None


def test_npz_with_ambiguous_keys_lists_them(tmp_path):
    np.savez(tmp_path / "two.npz", images=np.zeros((2, 4)), targets=np.zeros(2))
    message = expect_data_error(load_data, tmp_path / "two.npz", match="x_train")
    assert "'images'" in message and "'targets'" in message


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({}, "no arrays"),
        ({"x_train": np.zeros((3, 4)), "x_test": np.zeros((2, 5))}, "x_train has 4"),
        ({"x_train": np.zeros((3, 4)), "y_train": np.zeros(2)}, "2 labels for 3"),
        ({"x_train": np.zeros((3, 4)), "y_train": np.array([0, -2, 2])}, ">= -1 (-1: unlabelled), found -2"),
        ({"x_train": np.zeros((3, 4)), "x_valid": np.zeros((2, 4)), "y_valid": np.array([0, -1])}, ">= 0"),
        ({"x_train": np.zeros((3, 4)), "y_train": np.array([0, 0.5, 1])}, "whole"),
        ({"x_train": np.zeros((3, 4)), "y_valid": np.zeros(3)}, "no x_valid"),
        ({"x_train": np.zeros((3, 4)), "x_test": np.full((1, 4), np.nan)}, "test data"),
    ],
    ids=["empty", "width", "n-labels", "negative", "unlabelled-valid", "fractional", "y-only", "nan-test"],
)
def test_npz_problems(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    expect_data_error(load_data, tmp_path / "bad.npz", match=match)


def test_npz_that_is_not_a_zip(tmp_path):
    np.save(tmp_path / "real.npy", np.zeros((2, 2)))
    (tmp_path / "fake.npz").write_bytes((tmp_path / "real.npy").read_bytes())
    expect_data_error(load_data, tmp_path / "fake.npz", match="not a .npz archive")


# --------------------------------------------------------------------------------------
# load_data: CSV
# --------------------------------------------------------------------------------------


def test_csv_without_header(tmp_path):
    (tmp_path / "d.csv").write_text("0,0.5,1,0.25\n1,1,0,0\n\n0.125, 0.5 ,0,1\n")
    dataset = load_data(tmp_path / "d.csv")
    assert dataset.train.x.tolist() == [[0, 0.5, 1, 0.25], [1, 1, 0, 0],
                                        [0.125, 0.5, 0, 1]]
    assert dataset.image_shape == (2, 2) and dataset.name == "d"


def test_csv_header_line_is_skipped(tmp_path):
    (tmp_path / "h.csv").write_bytes(b"\xef\xbb\xbfa,b,c\r\n1,2,3\r\n4,5,6\r\n")
    x = load_data(tmp_path / "h.csv", loss="squared-error").train.x
    assert x.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_csv_single_column_is_n_by_1(tmp_path):
    (tmp_path / "c.csv").write_text("0.5\n0.25\n")
    assert load_data(tmp_path / "c.csv").train.x.shape == (2, 1)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x,y\n1,2\n3,oops\n", "line 3, column 2: 'oops' is not a number"),
        ("1,2\n3,\n", "line 2, column 2"),
        ("1,2\n\n3,4,5\n", "line 3 has 3 values but line 1 has 2"),
        ("", "no data"),
        ("\n  \n", "no data"),
        ("a,b\n", "header line but no data"),
    ],
    ids=["bad-cell", "empty-cell", "ragged", "empty", "blank", "header-only"],
)
def test_csv_problems(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    message = expect_data_error(load_data, tmp_path / "bad.csv", match=match)
    assert "bad.csv" in message


def test_csv_that_is_binary(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01")
    expect_data_error(load_data, tmp_path / "bin.csv", match="not a text file")


# --------------------------------------------------------------------------------------
# load_data: IDX files and MNIST-format folders
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["imgs-idx3-ubyte", "imgs-idx3-ubyte.gz", "x.idx"])
def test_single_idx_file(tmp_path, name):
    images = np.full((3, 4, 4), 51, dtype=np.uint8)
    path = write_idx(tmp_path / name, images, gz=name.endswith(".gz"))
    dataset = load_data(path)
    assert dataset.train.x.shape == (3, 16) and dataset.image_shape == (4, 4)
    assert torch.allclose(dataset.train.x, torch.full((3, 16), 0.2))
    assert dataset.valid is None and dataset.test is None


def test_idx_label_file_is_not_training_data(tmp_path):
    path = write_idx(tmp_path / "labels-idx1-ubyte", np.arange(5, dtype=np.uint8))
    expect_data_error(load_data, path, match="one example per row")


def make_mnist_folder(folder, gz: bool, n_train: int = 60, n_test: int = 10):
    """A fake MNIST-format folder: image k is filled with the value k, label k % 10."""
    folder.mkdir()
    suffix = ".gz" if gz else ""
    train = np.repeat(np.arange(n_train, dtype=np.uint8), 4 * 3).reshape(n_train, 4, 3)
    test = np.repeat(np.arange(n_test, dtype=np.uint8), 4 * 3).reshape(n_test, 4, 3)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", train, gz)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}",
              np.arange(n_train, dtype=np.uint8) % 10, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", test, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}",
              np.arange(n_test, dtype=np.uint8) % 10, gz)
    return folder


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_mnist_format_folder(tmp_path, gz):
    folder = make_mnist_folder(tmp_path / "fashion", gz)
    dataset = load_data(folder)
    assert dataset.name == "fashion" and dataset.image_shape == (4, 3)
    assert dataset.train.x.shape == (50, 12) and dataset.train.x.dtype == torch.float32
    assert dataset.valid.x.shape == (10, 12) and dataset.test.x.shape == (10, 12)
    # The validation split is the last sixth of the training images, in order.
    assert dataset.valid.x[:, 0].mul(255).round().tolist() == list(range(50, 60))
    assert dataset.valid.y.tolist() == [k % 10 for k in range(50, 60)]
    assert dataset.train.y.dtype == torch.int64
    assert dataset.test.y.tolist() == list(range(10))
    assert load_mnist(folder).train.x.shape == (50, 12)


def test_mnist_format_folder_keeps_one_sixth_for_validation(tmp_path):
    folder = make_mnist_folder(tmp_path / "small", gz=False, n_train=13, n_test=2)
    dataset = load_mnist(folder)
    assert len(dataset.train.x) == 11 and len(dataset.valid.x) == 2


def test_mnist_format_folder_problems(tmp_path):
    folder = make_mnist_folder(tmp_path / "f", gz=True)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    expect_data_error(load_data, folder, match="missing t10k-labels-idx1-ubyte[.gz]")
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(9, dtype=np.uint8))
    expect_data_error(load_data, folder, match="holds 9 labels")
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros((10, 2), dtype=np.uint8))
    expect_data_error(load_data, folder, match="1-D array of labels")
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(10, dtype=np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((10, 12), np.uint8), True)
    expect_data_error(load_data, folder, match="(n, height, width)")
    expect_data_error(load_mnist, tmp_path / "absent", match="no such directory")


# --------------------------------------------------------------------------------------
# load_data: bad paths and bad content
# --------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere.npy"
    message = expect_data_error(load_data, missing, match="no such file")
    assert message.startswith(str(missing)) and not message.startswith("dae")
    expect_data_error(load_data, "", match="no data path")


def test_garbage_with_unknown_extension(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    expect_data_error(load_data, tmp_path / "photo.png", match="unsupported file type")


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv", "-ubyte"])
def test_garbage_content(tmp_path, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xff" + bytes(range(256)))
    expect_data_error(load_data, path, match="junk")


def test_object_npy_is_refused_without_unpickling(tmp_path):
    array = np.empty((2, 2), dtype=object)
    array[:] = [[1, 2], [3, 4]]
    np.save(tmp_path / "obj.npy", array, allow_pickle=True)
    expect_data_error(load_data, tmp_path / "obj.npy", match="dtype object")


@pytest.mark.parametrize("dtype", ["<U3", "complex64", "datetime64[s]"])
def test_non_numeric_npy_is_refused(tmp_path, dtype):
    np.save(tmp_path / "s.npy", np.zeros((2, 2), dtype=dtype))
    expect_data_error(load_data, tmp_path / "s.npy", match="needs numbers")


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((100, 10)))
    content = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(content[:-8])
    expect_data_error(load_data, tmp_path / "t.npy", match="truncated")
    (tmp_path / "t.npy").write_bytes(content[:20])
    expect_data_error(load_data, tmp_path / "t.npy", match="t.npy")


@pytest.mark.parametrize(
    ("bad", "match"),
    [(np.nan, "1 non-finite value (NaN or infinity), the first in row 2"),
     (np.inf, "non-finite"),
     (-np.inf, "non-finite")],
)
def test_non_finite_values(tmp_path, bad, match):
    array = np.zeros((4, 3), dtype=np.float32)
    array[2, 1] = bad
    np.save(tmp_path / "nf.npy", array)
    for loss in ("cross-entropy", "squared-error"):
        message = expect_data_error(load_data, tmp_path / "nf.npy", loss=loss,
                                    match=match)
        assert "nf.npy" in message


def test_out_of_range_values_need_squared_error(tmp_path):
    np.save(tmp_path / "big.npy", np.array([[0.0, 2.5], [-1.0, 0.5]]))
    message = expect_data_error(
        load_data, tmp_path / "big.npy",
        match="scale the data to [0, 1] or use --loss squared-error",
    )
    assert "-1" in message and "2.5" in message
    x = load_data(tmp_path / "big.npy", loss="squared-error").train.x
    assert x.tolist() == [[0.0, 2.5], [-1.0, 0.5]]


@pytest.mark.parametrize(
    ("shape", "match"),
    [((0, 5), "empty"), ((3, 0), "empty"), ((0, 2, 2), "empty"),
     ((5,), "one example per row"), ((), "one example per row"),
     ((2, 2, 2, 2), "one example per row")],
)
def test_unusable_shapes(tmp_path, shape, match):
    np.save(tmp_path / "s.npy", np.zeros(shape, dtype=np.float32))
    expect_data_error(load_data, tmp_path / "s.npy", match=match)


def test_unknown_loss_is_a_programming_error(tmp_path):
    np.save(tmp_path / "ok.npy", np.zeros((2, 2)))
    with pytest.raises(ValueError) as info:
        load_data(tmp_path / "ok.npy", loss="hinge")
    assert type(info.value) is ValueError
    with pytest.raises(ValueError, match="hinge"):
        check_inputs(torch.zeros(2, 2), loss="hinge", what="x")


def test_check_inputs_directly():
    check_inputs(torch.rand(3, 4), loss="cross-entropy", what="ok data")
    check_inputs(torch.randn(3, 4) * 10, loss="squared-error", what="ok data")
    message = expect_data_error(
        check_inputs, torch.zeros(3, 4, 2), loss="squared-error", what="the batch",
        match="the batch has shape (3, 4, 2)",
    )
    assert "2-D" in message
    expect_data_error(check_inputs, torch.zeros(0, 4), loss="squared-error",
                      what="the batch", match="empty")
    x = torch.zeros(5, 2)
    x[3, 0] = float("nan")
    x[4, 1] = float("inf")
    expect_data_error(check_inputs, x, loss="squared-error", what="w",
                      match="2 non-finite values (NaN or infinity), the first in row 3")
    expect_data_error(check_inputs, torch.tensor([[0.0, 255.0]]), loss="cross-entropy",
                      what="w", match="values from 0 to 255")


def test_split_and_dataset_unpack_like_the_tutorial():
    split = Split(torch.zeros(2, 3))
    assert split.y is None
    dataset = Dataset(split, None, None, None, "x")
    (train_x, train_y), valid, test = dataset[:3]
    assert train_x is split.x and train_y is None and valid is None and test is None
    assert issubclass(DataError, ValueError)


# --------------------------------------------------------------------------------------
# Fuzzing: damaged files only ever raise DataError
# --------------------------------------------------------------------------------------


def _npz_seed(compressed: bool) -> bytes:
    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buffer, x_train=np.linspace(0, 1, 12).reshape(3, 4), y_train=np.arange(3))
    return buffer.getvalue()


def _npy_seed() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 2, 2))
    return buffer.getvalue()


IDX_SEEDS = [
    idx_bytes(np.arange(18, dtype=np.uint8).reshape(2, 3, 3)),
    gzip.compress(idx_bytes(np.arange(18, dtype=np.uint8).reshape(2, 9)), mtime=0),
    idx_bytes(np.linspace(0, 1, 6).astype(np.float32).reshape(3, 2)),
]
SEEDS = IDX_SEEDS + [
    _npy_seed(),
    _npz_seed(False),
    _npz_seed(True),
    b"a,b,c\n0,0.5,1\n1,0,0.25\n",
    b"0.1,0.2\n0.3,0.4\n",
]


@st.composite
def mutated(draw, seeds):
    """A valid file, damaged by a few byte flips, truncations, insertions or cuts."""
    content = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        position = draw(st.integers(0, max(len(content) - 1, 0)))
        if op == "flip" and content:
            content[position] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and content:
            content[position] = draw(st.integers(0, 255))
        elif op == "truncate":
            del content[position:]
        elif op == "insert":
            content[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del content[position:position + draw(st.integers(1, 16))]
    return bytes(content)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


FUZZ_SETTINGS = settings(max_examples=200, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])


@FUZZ_SETTINGS
@given(content=st.one_of(st.binary(max_size=64), mutated(IDX_SEEDS)))
def test_read_idx_only_raises_data_error(fuzz_dir, content):
    path = fuzz_dir / "fuzz-ubyte"
    path.write_bytes(content)
    try:
        array = read_idx(path)
    except DataError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(array, np.ndarray) and 1 <= array.ndim <= 4


# Found by fuzzing: an unbalanced .npy header makes numpy raise tokenize.TokenError.
GARBLED_NPY_HEADER = _npy_seed().replace(b"{", b"z", 1)


@pytest.mark.parametrize("name", ["f.npy", "f.npz", "f.csv", "f-ubyte", "f.bin"])  # 200 examples for each reader
@FUZZ_SETTINGS
@example(content=GARBLED_NPY_HEADER, loss="squared-error")
@given(
    content=st.one_of(st.binary(max_size=64), mutated(SEEDS)),
    loss=st.sampled_from(["cross-entropy", "squared-error"]),
)
def test_load_data_only_raises_data_error(fuzz_dir, content, name, loss):
    path = fuzz_dir / name
    path.write_bytes(content)
    try:
        dataset = load_data(path, loss=loss)
    except DataError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(dataset, Dataset)
        assert dataset.train.x.dtype == torch.float32 and dataset.train.x.ndim == 2
