"""Loading training data: the bundled MNIST digits and the user's own files.

Everything a denoising autoencoder needs is a matrix with one example per row: ``n``
examples of ``d`` values each, as a float32 :class:`torch.Tensor`. This module turns the
formats people actually have into that matrix:

* the bundled MNIST database (``load_mnist()``, or ``load_data("mnist")``);
* a folder in MNIST's own IDX format (Fashion-MNIST, KMNIST, ...);
* a folder of image files (PNG, JPEG, ...), one subfolder per class as in torchvision's
  ``ImageFolder``, read with Pillow as grey levels of one common size;
* a single ``.npy`` array, a ``.npz`` archive, a numeric ``.csv`` file or an IDX file.

Every problem with a user's data raises :class:`DataError`, whose message is one line
naming the file and saying what is wrong. Files are never unpickled: ``np.load`` is
always called with ``allow_pickle=False``, so a data file cannot run code.

IDX is the format of the MNIST files (http://yann.lecun.com/exdb/mnist/): a 4-byte
"magic number" (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import math
import os
import re
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .autoencoder import LOSSES
from .config import VALIDATION_FRACTION

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "Dataset",
    "Split",
    "check_inputs",
    "is_image_folder",
    "load_data",
    "load_mnist",
    "read_idx",
]

# The reconstruction losses (dae.autoencoder.LOSSES). Cross-entropy treats every value as
# the probability of a pixel being "on", so it needs values in [0, 1]; squared error
# accepts any real number.


# The label of an unlabelled training example in y_train: scikit-learn's convention
# (sklearn.semi_supervised).
UNLABELLED = -1


class DataError(ValueError):
    """A problem with the user's data: missing, unreadable, damaged or unusable.

    The message is a single line meant for a person, e.g.
    ``"digits.npy: holds Python objects (dtype object); ..."``. Line breaks in the
    message (which could come from a wrapped library error) are replaced by spaces.
    """

    def __init__(self, message: object) -> None:
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


class Split(NamedTuple):
    """One part of a data set: examples ``x`` (n, d) float32, labels ``y`` (n,) int64.

    ``y`` is None when the data has no labels (a denoising autoencoder does not need
    them; only supervised fine-tuning of a stacked autoencoder does).
    """

    x: torch.Tensor
    y: torch.Tensor | None = None


class Dataset(NamedTuple):
    """Training, validation and test splits, plus what is known about the examples.

    ``image_shape`` is ``(height, width)`` when the rows are images (used to draw
    filters and reconstructions), else None. ``classes`` names the labels of a folder of
    images in class subfolders: label ``k`` is the subfolder ``classes[k]``; None for other
    data. The first three fields unpack like the tutorial's ``datasets``::

        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = load_mnist()[:3]
    """

    train: Split
    valid: Split | None
    test: Split | None
    image_shape: tuple[int, int] | None
    name: str
    classes: tuple[str, ...] | None = None


# --------------------------------------------------------------------------------------
# Errors raised by the libraries we read files with.
# --------------------------------------------------------------------------------------

# gzip, zlib, zipfile and numpy report a damaged file with many different exception
# types: OSError (gzip.BadGzipFile is one), EOFError (gzip stream cut short),
# zlib.error, zipfile.BadZipFile, lzma.LZMAError (zip members may be LZMA-compressed),
# NotImplementedError (zip: unknown compression method), RuntimeError (zip: encrypted
# member), struct.error, ValueError (numpy: bad header, pickled data refused),
# tokenize.TokenError and SyntaxError (numpy parses a .npy header as a Python literal)
# and MemoryError (a header declaring an absurd size). We catch exactly these around the
# calls that parse a file and turn them into DataError.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    zipfile.BadZipFile,
    lzma.LZMAError,
    NotImplementedError,
    RuntimeError,
    MemoryError,
    OverflowError,
    struct.error,
    tokenize.TokenError,
    SyntaxError,
)


def _reason(err: BaseException) -> str:
    """A short, one-line description of a library exception."""
    if isinstance(err, (tokenize.TokenError, SyntaxError)):
        return "its header is not a valid Python literal"
    if isinstance(err, OSError) and err.strerror and not isinstance(
        err, gzip.BadGzipFile
    ):
        text = err.strerror[:1].lower() + err.strerror[1:]
    else:
        text = str(err) or type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def _open_error(path: object, err: OSError) -> DataError:
    """The DataError for a file that could not be opened or read at all."""
    if isinstance(err, FileNotFoundError):
        return DataError(f"{path}: no such file or directory")
    if isinstance(err, IsADirectoryError):
        return DataError(f"{path}: is a directory, not a file")
    if isinstance(err, PermissionError):
        return DataError(f"{path}: permission denied (check the file's permissions)")
    return DataError(f"{path}: cannot read the file ({_reason(err)})")


# --------------------------------------------------------------------------------------
# IDX files.
# --------------------------------------------------------------------------------------

# Type codes of the IDX format (third byte of the magic number), as defined on
# http://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT"). The data is big-endian.
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),  # unsigned byte
    0x09: np.dtype(">i1"),  # signed byte
    0x0B: np.dtype(">i2"),  # short (2 bytes)
    0x0C: np.dtype(">i4"),  # int (4 bytes)
    0x0D: np.dtype(">f4"),  # float (4 bytes)
    0x0E: np.dtype(">f8"),  # double (8 bytes)
}
_IDX_TYPE_NAMES = ", ".join(f"0x{code:02X} {t.name}" for code, t in _IDX_TYPES.items())

# Every gzip stream starts with these two bytes (RFC 1952, section 2.3.1).
_GZIP_MAGIC = b"\x1f\x8b"

# Read large payloads in pieces so that we never allocate more than the file holds.
_CHUNK = 1 << 24


def _read_up_to(f: BinaryIO, n: int) -> bytes:
    """Read at most `n` bytes (fewer at end of file), allocating only what is read."""
    parts = []
    while n > 0:
        chunk = f.read(min(n, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _parse_idx(f: BinaryIO, path: object, size: int | None) -> np.ndarray:
    """Parse an IDX stream. `size` is the file's length if known (uncompressed file)."""
    magic = _read_up_to(f, 4)
    if not magic:
        raise DataError(f"{path}: the file is empty")
    if len(magic) < 4:
        raise DataError(
            f"{path}: truncated IDX header ({len(magic)} bytes, the magic number alone"
            " needs 4)"
        )
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (it starts with bytes {magic[:2].hex(' ')},"
            " an IDX file starts with 00 00)"
        )
    code, ndim = magic[2], magic[3]
    if code not in _IDX_TYPES:
        raise DataError(
            f"{path}: unknown IDX data type 0x{code:02X} (known: {_IDX_TYPE_NAMES})"
        )
    if not 1 <= ndim <= 4:
        raise DataError(
            f"{path}: the IDX header declares {ndim} dimensions; dae reads 1 to 4"
        )
    raw_dims = _read_up_to(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(
            f"{path}: truncated IDX header: {ndim} dimensions need {4 + 4 * ndim}"
            f" header bytes, the file has {4 + len(raw_dims)}"
        )
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = _IDX_TYPES[code]
    # Python integers cannot overflow, so a forged header (e.g. four dimensions of
    # 2**32 - 1) gives a huge number here, which we compare with the real length
    # before allocating anything.
    expected = math.prod(dims) * dtype.itemsize
    shape = "x".join(map(str, dims))
    if size is not None:
        actual = size - (4 + 4 * ndim)
        if actual < expected:
            raise DataError(
                f"{path}: truncated IDX file: shape {shape} of {dtype.name} needs"
                f" {expected} data bytes, the file has {actual}"
            )
        if actual > expected:
            raise DataError(
                f"{path}: {actual - expected} unexpected bytes after the IDX data"
                f" (shape {shape} of {dtype.name} needs {expected} bytes)"
            )
    # One byte more than expected tells us about trailing data, and for gzip it makes
    # the reader reach the end of the stream, where it checks the CRC.
    payload = _read_up_to(f, expected + 1)
    if len(payload) < expected:
        raise DataError(
            f"{path}: truncated IDX file: shape {shape} of {dtype.name} needs"
            f" {expected} data bytes, the file has {len(payload)}"
        )
    if len(payload) > expected:
        raise DataError(
            f"{path}: unexpected bytes after the IDX data (shape {shape} of"
            f" {dtype.name} needs {expected} bytes)"
        )
    # frombuffer reads the big-endian values without a Python loop; astype makes a
    # writable copy in the machine's native byte order.
    array = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (as used by MNIST), raw or gzip-compressed, into a NumPy array.

    Compression is recognised by the gzip magic bytes ``1f 8b``, not by the file name.
    The header is checked (two zero bytes, a known type code, 1 to 4 dimensions) and
    the data must have exactly the declared size: a truncated file or extra bytes at
    the end raise :class:`DataError`. The result has the declared shape, in native
    byte order, e.g. ``(60000, 28, 28)`` uint8 for MNIST's training images.
    """
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    return _parse_idx(f, path, None)
            return _parse_idx(raw, path, os.fstat(raw.fileno()).st_size)
    except DataError:
        raise
    except (gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: corrupt gzip data ({_reason(err)})") from err
    except EOFError as err:
        raise DataError(
            f"{path}: the gzip data ends early (the file is truncated; download it"
            " again)"
        ) from err
    except OSError as err:
        raise _open_error(path, err) from err


# --------------------------------------------------------------------------------------
# MNIST.
# --------------------------------------------------------------------------------------

# The four files of an MNIST-format data set, by role.
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# sha256 of the bundled files, as listed in datasets/mnist/README.md (the original
# files published by Yann LeCun, Corinna Cortes and Christopher J.C. Burges).
_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    ),
}


def _bundled_mnist_dir() -> Path:
    """The folder holding the four bundled MNIST files (package data of `dae`)."""
    return Path(__file__).resolve().parent / "datasets" / "mnist"


def _check_sha256(folder: Path, expected: Mapping[str, str]) -> None:
    """Raise DataError unless each file `folder/name` has sha256 `expected[name]`."""
    for name, digest in expected.items():
        path = folder / name
        try:
            with open(path, "rb") as f:
                actual = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as err:
            raise DataError(
                f"{path}: cannot read the bundled MNIST file ({_reason(err)});"
                " reinstall dae"
            ) from err
        if actual != digest:
            raise DataError(
                f"{path}: the bundled MNIST file is corrupt (sha256 {actual},"
                f" expected {digest}); reinstall dae"
            )


def _find_mnist_files(folder: Path) -> dict[str, Path]:
    """Locate the four MNIST-format files in `folder`, each raw or with ``.gz``."""
    found, missing = {}, []
    for role, base in _MNIST_FILES.items():
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            missing.append(f"{base}[.gz]")
    if missing:
        raise DataError(
            f"{folder}: not an MNIST-format folder: missing {', '.join(missing)}"
        )
    return found


def _load_mnist_folder(folder: Path, name: str, *, verify: bool) -> Dataset:
    """Read an MNIST-format folder and split it the way the tutorial does."""
    files = _find_mnist_files(folder)
    arrays = {role: read_idx(path) for role, path in files.items()}

    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        image_path, label_path = files[f"{part}_images"], files[f"{part}_labels"]
        if images.ndim != 3:
            raise DataError(
                f"{image_path}: expected images of shape (n, height, width), found"
                f" shape {images.shape}"
            )
        if labels.ndim != 1:
            raise DataError(
                f"{label_path}: expected a 1-D array of labels, found shape"
                f" {labels.shape}"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{label_path}: holds {len(labels)} labels but {image_path} holds"
                f" {len(images)} images"
            )
    train_images, test_images = arrays["train_images"], arrays["test_images"]
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{files['test_images']}: test images are"
            f" {'x'.join(map(str, test_images.shape[1:]))} but training images are"
            f" {'x'.join(map(str, train_images.shape[1:]))}"
        )

    x, image_shape = _examples(train_images, files["train_images"])
    x = _as_float_tensor(x, files["train_images"])
    y = _as_labels(arrays["train_labels"], len(x), files["train_labels"])
    test_x = _as_float_tensor(_examples(test_images, files["test_images"])[0],
                              files["test_images"])
    test_y = _as_labels(arrays["test_labels"], len(test_x), files["test_labels"])
    if verify:
        check_inputs(x, loss="squared-error", what=f"training data from {folder}")
        check_inputs(test_x, loss="squared-error", what=f"test data from {folder}")

    # The tutorial's mnist.pkl.gz (deeplearning.net) kept the first 50,000 of MNIST's
    # 60,000 training images for training and the last 10,000 for validation: 1/6.
    n_valid = len(x) // 6
    n_train = len(x) - n_valid
    train = Split(x[:n_train], y[:n_train])
    valid = Split(x[n_train:], y[n_train:]) if n_valid else None
    return Dataset(train, valid, Split(test_x, test_y), image_shape, name)


def load_mnist(directory: str | os.PathLike | None = None) -> Dataset:
    """Load MNIST (bundled) or any data set in MNIST's format, split like the tutorial.

    Without an argument, the bundled files are used after checking their sha256.
    With a `directory`, it must hold ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``): Fashion-MNIST and
    KMNIST come this way.

    The last sixth of the training images is the validation split (10,000 of 60,000,
    as in the tutorial's ``mnist.pkl.gz``); the ``t10k`` files are the test split.
    Pixels (uint8, 0..255) are divided by 255, giving float32 values in [0, 1]; ``x``
    has shape (n, height * width) and ``y`` is int64.
    """
    if directory is None:
        folder = _bundled_mnist_dir()
        _check_sha256(folder, _MNIST_SHA256)
        return _load_mnist_folder(folder, "mnist", verify=False)
    folder = Path(directory)
    if not folder.exists():
        raise DataError(f"{directory}: no such directory")
    if not folder.is_dir():
        raise DataError(
            f"{directory}: not a directory (expected an MNIST-format folder)"
        )
    return _load_mnist_folder(folder, folder.resolve().name, verify=True)


# --------------------------------------------------------------------------------------
# Converting arrays to examples.
# --------------------------------------------------------------------------------------


def _examples(array: np.ndarray, source: object) -> tuple[np.ndarray, tuple | None]:
    """Flatten images to one row per example; guess the image shape of a matrix."""
    if array.ndim == 3:
        n, h, w = array.shape
        return array.reshape(n, h * w), (h, w)
    if array.ndim == 2:
        d = array.shape[1]
        side = math.isqrt(d)
        return array, ((side, side) if side > 1 and side * side == d else None)
    raise DataError(
        f"{source}: array of shape {array.shape}; expected one example per row, i.e."
        " shape (n, d) or (n, height, width)"
    )


def _check_numeric(dtype: np.dtype, source: object) -> None:
    """Refuse dtypes that are not plain numbers (objects, strings, complex, records)."""
    if dtype.hasobject:
        raise DataError(
            f"{source}: holds Python objects (dtype object); dae reads numbers only and"
            " never unpickles: save a numeric array, e.g. x.astype('float32')"
        )
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise DataError(
            f"{source}: holds {dtype} values; dae needs numbers (bool, integer or"
            " float)"
        )


def _as_float_tensor(array: np.ndarray, source: object) -> torch.Tensor:
    """Convert a 2-D array to float32. uint8 is taken as pixels and divided by 255."""
    _check_numeric(array.dtype, source)
    if array.dtype == np.uint8:
        x = array.astype(np.float32)
        x /= 255  # 0..255 pixel intensities -> [0, 1]
    else:
        # Floats beyond float32's range become inf; check_inputs reports them.
        with np.errstate(over="ignore", invalid="ignore"):
            x = array.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x))


def _as_labels(array: np.ndarray, n: int, source: object, unlabelled: bool = False) -> torch.Tensor:
    """Check class labels (1-D, one per example, integers >= 0, or :data:`UNLABELLED` where
    ``unlabelled``) and make them int64."""
    if array.ndim != 1:
        raise DataError(
            f"{source}: labels must be a 1-D array, found shape {array.shape}"
        )
    if len(array) != n:
        raise DataError(f"{source}: {len(array)} labels for {n} examples")
    _check_numeric(array.dtype, source)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise DataError(f"{source}: labels must be whole numbers")
        if array.size and array.max() >= 2**62:
            raise DataError(f"{source}: labels must be below 2**62")
    labels = array.astype(np.int64)
    low = UNLABELLED if unlabelled else 0
    if labels.size and labels.min() < low:
        raise DataError(f"{source}: labels must be >= {low}{' (-1: unlabelled)' if unlabelled else ''}, "
                        f"found {labels.min()}")
    return torch.from_numpy(labels)


# --------------------------------------------------------------------------------------
# .npy, .npz and .csv files.
# --------------------------------------------------------------------------------------

_NPY_MAGIC = b"\x93NUMPY"
# A .npz file is a zip archive: local file header, or end of central directory when
# the archive is empty (APPNOTE.TXT, sections 4.3.7 and 4.3.16).
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _check_npy_header(
    f: BinaryIO, size: int, source: object
) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read a .npy header from `f` and check it against the `size` bytes available.

    This refuses object arrays and forged shapes before NumPy allocates anything.
    Returns the header's (shape, fortran_order, dtype); `f` is left at the data.
    """
    if size == 0:
        raise DataError(f"{source}: the file is empty")
    if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
        raise DataError(
            f"{source}: not a .npy file (no NumPy magic bytes at the start)"
        )
    f.seek(0)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        # Version 3.0 only differs by allowing UTF-8 in field names, which we refuse.
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise DataError(f"{source}: unsupported .npy format version {version}")
    _check_numeric(dtype, source)
    if any(dim < 0 for dim in shape):
        raise DataError(f"{source}: corrupt .npy header (negative shape {shape})")
    expected = math.prod(shape) * dtype.itemsize
    available = size - f.tell()
    if expected > available:
        raise DataError(
            f"{source}: truncated .npy data: shape {shape} of {dtype} needs"
            f" {expected} bytes, {available} follow the header"
        )
    return shape, fortran_order, dtype


def _load_npy(path: Path) -> np.ndarray:
    """Load one array from a .npy file, refusing pickles, objects and damage."""
    try:
        with open(path, "rb") as f:
            _check_npy_header(f, os.fstat(f.fileno()).st_size, path)
        return np.load(path, allow_pickle=False)
    except DataError:
        raise
    except OSError as err:
        if err.strerror:
            raise _open_error(path, err) from err
        raise DataError(f"{path}: not a valid .npy file ({_reason(err)})") from err
    except _READ_ERRORS as err:
        raise DataError(f"{path}: not a valid .npy file ({_reason(err)})") from err


def _npz_member(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """Read array `key` of an open .npz archive after checking its header."""
    names = npz.zip.namelist()
    member = f"{key}.npy" if f"{key}.npy" in names else key
    source = f"{path} [{key}]"
    with npz.zip.open(member) as f:
        _check_npy_header(f, npz.zip.getinfo(member).file_size, source)
    value = npz[key]
    if not isinstance(value, np.ndarray):
        raise DataError(f"{source}: not a .npy array")
    return value


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read a .npz archive: the x_/y_ split arrays, or its only array (as x_train)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if not head:
            raise DataError(f"{path}: the file is empty")
        if head not in _ZIP_MAGICS:
            raise DataError(
                f"{path}: not a .npz archive (a .npz file is a zip archive as written"
                " by numpy.savez)"
            )
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if "x_train" in keys:
                wanted = [
                    k
                    for k in ("x_train", "y_train", "x_valid", "y_valid", "x_test",
                              "y_test")
                    if k in keys
                ]
                return {k: _npz_member(npz, k, path) for k in wanted}
            if len(keys) == 1:
                return {"x_train": _npz_member(npz, keys[0], path)}
    except DataError:
        raise
    except OSError as err:
        if err.strerror:
            raise _open_error(path, err) from err
        raise DataError(f"{path}: not a valid .npz archive ({_reason(err)})") from err
    except _READ_ERRORS as err:
        raise DataError(f"{path}: not a valid .npz archive ({_reason(err)})") from err
    if not keys:
        raise DataError(f"{path}: the .npz archive holds no arrays")
    shown = ", ".join(repr(k) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
    raise DataError(
        f"{path}: cannot tell which array to use among {shown}; name the training"
        " data 'x_train' (optionally with x_valid, x_test, y_train, y_valid, y_test)"
    )


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_csv_rows(path: Path, rows: list[tuple[int, str]]) -> np.ndarray:
    """Parse CSV rows cell by cell, reporting the first bad line (slow but precise)."""
    width = None
    values = []
    for number, line in rows:
        cells = line.split(",")
        if width is None:
            width, first = len(cells), number
        elif len(cells) != width:
            raise DataError(
                f"{path}: line {number} has {len(cells)} values but line {first} has"
                f" {width}"
            )
        row = []
        for column, cell in enumerate(cells, start=1):
            try:
                row.append(float(cell))
            except ValueError:
                shown = cell.strip()
                shown = shown if len(shown) <= 30 else shown[:27] + "..."
                raise DataError(
                    f"{path}: line {number}, column {column}: {shown!r} is not a"
                    " number"
                ) from None
        values.append(row)
    return np.array(values, dtype=np.float64).reshape(len(values), width or 0)


def _load_csv(path: Path) -> np.ndarray:
    """Read a numeric, comma-separated file with one example per line."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise _open_error(path, err) from err
    try:
        text = data.decode("utf-8-sig")  # "-sig" drops a byte-order mark if present
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not a text file (invalid UTF-8 at byte {err.start})"
        ) from err
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    rows = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    if not rows:
        raise DataError(f"{path}: the file holds no data")
    if not all(_is_number(cell) for cell in rows[0][1].split(",")):
        rows = rows[1:]  # a first line that is not numeric is a header
        if not rows:
            raise DataError(f"{path}: the file holds a header line but no data")
    try:
        # NumPy's C parser is fast; on any complaint, parse again in Python to find
        # and name the offending line.
        return np.loadtxt(
            [line for _, line in rows],
            delimiter=",",
            dtype=np.float64,
            comments=None,
            ndmin=2,
        )
    except ValueError:
        return _parse_csv_rows(path, rows)


# --------------------------------------------------------------------------------------
# Folders of images.
# --------------------------------------------------------------------------------------

# The file names read as images (case-insensitive): the formats of torchvision's
# ImageFolder (IMG_EXTENSIONS) and GIF, all of which Pillow reads. Other files, and
# hidden ones (a name starting with "."), are ignored, so that a README or a .DS_Store
# beside the images does no harm.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")

# The resizing filter: bilinear, the default of torchvision.transforms.Resize. Pillow
# widens a filter's support when it shrinks an image, so this averages every source pixel
# (no aliasing); unlike Lanczos, it cannot overshoot into rings around edges.
_RESAMPLE = Image.Resampling.BILINEAR

# 16-bit grey levels 0..65535 become 8-bit ones 0..255: 65535 / 255 = 257.
_16_TO_8_BITS = 257

# What Pillow raises on a damaged file besides OSError (UnidentifiedImageError is one):
# its decoders also report bad data as SyntaxError, ValueError, struct.error, EOFError,
# zlib.error, IndexError, KeyError or TypeError, and a file declaring an absurd size as
# DecompressionBombError or MemoryError.
_IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error, IndexError, KeyError, TypeError,
    MemoryError, Image.DecompressionBombError,
)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _is_mnist_folder(folder: Path) -> bool:
    """True when `folder` holds any of the four MNIST-format files (it must then hold all)."""
    return any((folder / base).is_file() or (folder / f"{base}.gz").is_file() for base in _MNIST_FILES.values())


def is_image_folder(path: str | os.PathLike) -> bool:
    """True when :func:`load_data` reads `path` as a folder of images: a folder without MNIST-format files."""
    if isinstance(path, str) and path == "mnist":  # the bundled MNIST, even beside a folder of that name
        return False
    p = Path(path)
    return p.is_dir() and not _is_mnist_folder(p)


def _list_error(err: OSError) -> DataError:
    return DataError(f"{err.filename}: cannot list the folder ({_reason(err)})")


def _raise(err: OSError) -> None:
    raise err


def _images_under(folder: Path) -> list[Path]:
    """The image files in `folder` and its subfolders (hidden ones skipped), in sorted order."""
    found = []
    try:
        for root, dirs, files in os.walk(folder, onerror=_raise):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(root, name) for name in sorted(files) if _is_image_name(name)]
    except OSError as err:
        raise _list_error(err) from err
    return found


def _image_files(folder: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None]:
    """The images of a folder of images, their labels and the class names.

    Image files directly in `folder` are unlabelled (labels and classes None). Else every
    subfolder (its own subfolders included) is a class, as in torchvision's ImageFolder: the
    sorted names are the labels 0..K-1. Both at once is refused rather than guessed.
    """
    try:
        entries = sorted(e for e in folder.iterdir() if not e.name.startswith("."))
    except OSError as err:
        raise _list_error(err) from err
    subfolders = [e for e in entries if e.is_dir()]
    top = [e for e in entries if not e.is_dir() and _is_image_name(e.name)]
    classes = [(d, _images_under(d)) for d in subfolders]
    labelled = [(d, files) for d, files in classes if files]
    if top and labelled:
        raise DataError(f"{folder}: holds images both directly ({top[0].name}) and in a subfolder"
                        f" ({labelled[0][0].name}); put every image in a class subfolder, or all directly in"
                        " the folder")
    if top:
        return top, None, None
    if not labelled:
        what = "is empty" if not entries else "holds no image files, directly or in subfolders,"
        raise DataError(f"{folder}: {what} and no MNIST-format files; dae reads a folder of MNIST-format IDX"
                        f" files ({', '.join(f'{b}[.gz]' for b in _MNIST_FILES.values())}) or of images"
                        f" ({' '.join(IMAGE_EXTENSIONS)}), optionally in one subfolder per class")
    empty = next((d for d, files in classes if not files), None)
    if empty is not None:
        raise DataError(f"{empty}: a class subfolder without image files ({' '.join(IMAGE_EXTENSIONS)});"
                        " remove it or add its images")
    files = [f for _, fs in classes for f in fs]
    labels = [k for k, (_, fs) in enumerate(classes) for _ in fs]
    return files, labels, tuple(d.name for d, _ in classes)


def _grey(im: Image.Image, path: Path) -> Image.Image:
    """`im` as 8-bit grey levels (Pillow mode "L")."""
    if im.mode.startswith("I"):
        # Integer grey levels, 16-bit (mode I;16, or I for a PNG in older Pillow) or 32-bit:
        # convert("L") would clip them at 255, so they are scaled from 0..65535 instead.
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"{path}: integer grey levels from {values.min()} to {values.max()}; dae reads"
                            " 8-bit images and 16-bit ones (0 to 65535)")
        return Image.fromarray(np.round(values / _16_TO_8_BITS).astype(np.uint8))
    if im.mode == "F":
        raise DataError(f"{path}: floating-point grey levels (Pillow mode F) have no fixed range; save the"
                        " image with 8 or 16 bits")
    # RGB and palette colours become the ITU-R 601-2 luma L = 0.299 R + 0.587 G + 0.114 B
    # (Pillow's convert("L")); an alpha channel is dropped, not blended with a background.
    return im.convert("L")


def _read_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image as a (height, width) uint8 array of grey levels, resized to `size` if given."""
    try:
        with Image.open(path) as im:  # a GIF or TIFF of several frames: its first
            grey = _grey(im, path)
            if size is not None and grey.size != (size[1], size[0]):  # Pillow's sizes are (width, height)
                grey = grey.resize((size[1], size[0]), _RESAMPLE)
            return np.asarray(grey, dtype=np.uint8)
    except DataError:
        raise
    except UnidentifiedImageError as err:
        raise DataError(f"{path}: not an image Pillow can read (damaged, or not really a"
                        f" {path.suffix.lower()} file)") from err
    except _IMAGE_ERRORS as err:
        if isinstance(err, OSError) and err.strerror:  # could not open or read the file at all
            raise _open_error(path, err) from err
        text = " ".join((str(err) or type(err).__name__).split())
        raise DataError(f"{path}: damaged image ({text[:200]})") from err


def _load_image_folder(folder: Path, image_size: tuple[int, int] | None) -> Dataset:
    """Read a folder of images into a training split, one grey image per row (see load_data)."""
    files, labels, classes = _image_files(folder)
    first = _read_image(files[0], image_size)
    height, width = first.shape
    try:
        pixels = np.empty((len(files), height, width), np.uint8)  # filled image by image
    except MemoryError:
        raise DataError(f"{folder}: {len(files)} images of {height}x{width} pixels do not fit in memory; choose a "
                        "smaller --image-size") from None
    pixels[0] = first
    for k, path in enumerate(files[1:], start=1):
        pixels[k] = _read_image(path, (height, width))
    x = _as_float_tensor(pixels.reshape(len(files), height * width), folder)
    y = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    return Dataset(Split(x, y), None, None, (height, width), folder.resolve().name, classes)


# --------------------------------------------------------------------------------------
# Validation and the entry point.
# --------------------------------------------------------------------------------------


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")


def check_inputs(x: torch.Tensor, *, loss: str, what: str) -> None:
    """Check that `x` can be fed to an autoencoder trained with `loss`.

    `x` must be a non-empty 2-D tensor (one example per row) of finite values; with
    the cross-entropy loss, which reads each value as a probability, every value must
    lie in [0, 1]. `what` names the data in messages, e.g. "training data from
    foo.npy". Raises :class:`DataError`; an unknown `loss` is a ValueError.
    """
    _check_loss(loss)
    if x.ndim != 2:
        raise DataError(
            f"{what} has shape {tuple(x.shape)}; expected a 2-D array with one example"
            " per row"
        )
    n, d = x.shape
    if n == 0 or d == 0:
        raise DataError(
            f"{what} is empty (shape {tuple(x.shape)}); it needs at least one example"
            " of at least one value"
        )
    values = x if x.is_floating_point() else x.to(torch.float64)
    bad = ~torch.isfinite(values)
    count = int(bad.sum())
    if count:
        row = int(bad.any(dim=1).nonzero()[0, 0])
        raise DataError(
            f"{what} contains {count} non-finite value{'s' if count > 1 else ''} (NaN"
            f" or infinity), the first in row {row} (counting from 0); remove or"
            " replace them"
        )
    if loss == "cross-entropy":
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise DataError(
                f"{what} has values from {low:g} to {high:g}, but the cross-entropy"
                " loss needs values in [0, 1]: scale the data to [0, 1] or use --loss"
                " squared-error"
            )


def _single_array(array: np.ndarray, path: Path) -> Dataset:
    """A Dataset whose training split is `array` (no labels, no valid/test)."""
    x, image_shape = _examples(array, path)
    return Dataset(Split(_as_float_tensor(x, path)), None, None, image_shape, path.stem)


def _npz_dataset(arrays: dict[str, np.ndarray], path: Path) -> Dataset:
    """A Dataset from the x_/y_ arrays of a .npz archive."""
    for part in ("valid", "test"):
        if f"y_{part}" in arrays and f"x_{part}" not in arrays:
            raise DataError(f"{path}: has y_{part} but no x_{part}")
    splits: dict[str, Split | None] = {}
    image_shape = None
    width = None
    for part in ("train", "valid", "test"):
        if f"x_{part}" not in arrays:
            splits[part] = None
            continue
        source = f"{path} [x_{part}]"
        x, shape = _examples(arrays[f"x_{part}"], source)
        if part == "train":
            image_shape, width = shape, x.shape[1]
        elif x.shape[1] != width:
            raise DataError(
                f"{source}: {x.shape[1]} values per example, but x_train has {width}"
            )
        x_tensor = _as_float_tensor(x, source)
        y = arrays.get(f"y_{part}")
        y_tensor = None if y is None else _as_labels(y, len(x), f"{path} [y_{part}]", unlabelled=part == "train")
        splits[part] = Split(x_tensor, y_tensor)
    return Dataset(splits["train"], splits["valid"], splits["test"], image_shape,
                   path.stem)


def _looks_like_idx(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(("-ubyte", ".idx")) or "idx" in name


def load_data(path: str | os.PathLike, *, loss: str = "cross-entropy",
              image_size: tuple[int, int] | None = None) -> Dataset:
    """Load the data behind ``dae train --data PATH``, checked for the given `loss`.

    `path` may be:

    * ``"mnist"``: the bundled MNIST digits (see :func:`load_mnist`);
    * a folder in MNIST's format (Fashion-MNIST, KMNIST, ...): a folder holding any of the
      four MNIST file names is read as one;
    * any other folder: a folder of images (see below);
    * a ``.npy`` file, a numeric ``.csv`` file (comma-separated, optional header line)
      or an IDX file (raw or gzipped): all of it is training data, without labels;
    * a ``.npz`` archive: ``x_train`` (and ``x_valid``, ``x_test``, ``y_train``,
      ``y_valid``, ``y_test`` if present), or its only array.

    Each row is one example; an array of images (n, height, width) is flattened to
    (n, height * width). uint8 data is taken as pixel intensities and divided by 255;
    other numbers are converted to float32 as they are. Every split is then checked
    with :func:`check_inputs`. Problems raise :class:`DataError`.

    A folder of images is read with Pillow, all of it as the training split. Image files
    (:data:`IMAGE_EXTENSIONS`, any case) directly in the folder are unlabelled; else each
    subfolder is a class, as in torchvision's ``ImageFolder``: the sorted subfolder names
    are the labels 0..K-1, kept in ``Dataset.classes``, and the rows come class by class
    (shuffle them when training). Both at once is an error; hidden files and files of other
    types are ignored; files are read in sorted order. Each image becomes grey levels
    (Pillow's ``convert("L")``: the luma of colours and palettes; alpha dropped; 16-bit
    images scaled to 8 bits; the first frame of an animation; EXIF orientation not applied),
    resized with a bilinear filter to `image_size` = (height, width), by default the size of
    the first image, and divided by 255. ``image_shape`` is that size. A file that Pillow
    cannot read is a :class:`DataError` naming it. `image_size` with any other data is
    a :class:`DataError` too.
    """
    _check_loss(loss)
    if image_size is not None and not (isinstance(image_size, tuple) and len(image_size) == 2
                                       and all(isinstance(n, int) and n >= 1 for n in image_size)):
        raise ValueError(f"image_size must be a (height, width) pair of positive integers, got {image_size!r}")
    if image_size is not None and image_size[0] * image_size[1] > (Image.MAX_IMAGE_PIXELS or math.inf):
        raise DataError(f"image size {image_size[0]},{image_size[1]}: more pixels than Pillow opens in one image "
                        f"({Image.MAX_IMAGE_PIXELS}); choose a smaller --image-size")
    if isinstance(path, str) and path == "mnist":
        if image_size is not None:
            raise _image_size_error("the bundled MNIST")
        dataset = load_mnist()
        source = "the bundled MNIST"
    else:
        if isinstance(path, str) and not path:
            raise DataError("no data path given")
        p = Path(path)
        try:
            is_dir, exists = p.is_dir(), p.exists()
        except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
            raise DataError(f"{path}: cannot access the path ({_reason(err)})") from err
        if not exists:
            raise DataError(f"{path}: no such file or directory")
        source = str(path)
        suffix = p.suffix.lower()
        if is_dir and not _is_mnist_folder(p):
            dataset = _load_image_folder(p, image_size)
        elif image_size is not None:
            raise _image_size_error(path)
        elif is_dir:
            dataset = load_mnist(p)
        elif suffix == ".npy":
            dataset = _single_array(_load_npy(p), p)
        elif suffix == ".npz":
            dataset = _npz_dataset(_load_npz(p), p)
        elif suffix == ".csv":
            dataset = _single_array(_load_csv(p), p)
        else:
            try:
                array = read_idx(p)
            except DataError as err:
                if _looks_like_idx(p):
                    raise
                reason = str(err).removeprefix(f"{p}: ")
                raise DataError(
                    f"{path}: unsupported file type; dae reads .npy, .npz and .csv"
                    f" files, IDX files (raw or .gz), MNIST-format folders and folders of"
                    f" images (read as IDX: {reason})"
                ) from err
            dataset = _single_array(array, p)

    names = ("training", "validation", "test")
    for split, name in zip(dataset[:3], names):
        if split is not None:
            check_inputs(split.x, loss=loss, what=f"{name} data from {source}")
    return dataset


def _image_size_error(what: object) -> DataError:
    return DataError(f"{what}: not a folder of images, so image_size (--image-size) does not apply")


# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


def labelled_splits(data: Dataset, source: str, seed: int):
    """(train, valid, test-or-None) as (x, y) pairs.  Data without a validation split give a
    sixth of their training examples to it (MNIST's 10,000 of 60,000), drawn at random from
    ``seed``: the one rule, for the command line and the estimators alike."""
    if data.train.y is None:
        raise DataError(f"{source}: dae sda needs labels (y_train in an .npz, an MNIST-format folder, or "
                        "a folder of images in one subfolder per class)")
    x, y = data.train
    if data.valid is not None and data.valid.y is not None:
        train, valid = (x, y), tuple(data.valid)
    else:
        train, valid = split_validation(x, y, VALIDATION_FRACTION, seed)
        if valid is None:
            raise DataError(f"{source}: too few training examples ({len(x)}) to split off a validation set")
    test = tuple(data.test) if data.test is not None and data.test.y is not None else None
    return train, valid, test


def reconstruction_splits(data: Dataset, seed: int) -> tuple[Split, Split | None, Split | None]:
    """(train, valid, test) Splits for learning to reconstruct, labels kept where the data have
    them: the data's own validation split, or else a sixth of the training rows drawn from
    ``seed`` (the rule of :func:`labelled_splits`), or None if too few."""
    if data.valid is not None:
        return data.train, data.valid, data.test
    train, valid = split_validation(*data.train, VALIDATION_FRACTION, seed)
    return Split(*train), None if valid is None else Split(*valid), data.test


def split_validation(x, y, fraction: float, seed: int):
    """((x, y) to train on, (x, y) held out or None): a random ``fraction`` of the rows, from
    ``seed``; ``y`` may be None."""
    n_valid = int(len(x) * fraction)
    if n_valid < 1 or n_valid >= len(x):
        return (x, y), None
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    keep, held = order[n_valid:].sort().values, order[:n_valid].sort().values
    return (x[keep], None if y is None else y[keep]), (x[held], None if y is None else y[held])


class SemiSupervised(NamedTuple):
    """The data of a run with few labels (see :func:`semi_supervised_splits`)."""

    x: torch.Tensor  # every training image, to be used unlabelled
    labelled: torch.Tensor  # the indices, into the training split, of the labelled examples
    x_labelled: torch.Tensor
    y_labelled: torch.Tensor
    valid: tuple | None  # (x, y): only when every label is used (to show, never to select on)
    test: tuple | None
    n_classes: int


def semi_supervised_splits(data: Dataset, labels: int | None, label_seed: int, source: str) -> SemiSupervised:
    """The unlabelled and labelled data of a run that learns from ``labels`` labels.

    ``labels=N``: N training examples drawn balanced over the classes from ``label_seed``
    (:func:`draw_labelled`); every training image (the validation split's too) is unlabelled
    data, and no label other than the N is read, not even the validation split's.  ``labels=None``:
    every labelled training example (those not marked :data:`UNLABELLED`); with a fully labelled
    training split, the validation split is returned to be shown.
    """
    if data.train.y is None:
        raise DataError(f"{source}: needs labels (y_train in an .npz, an MNIST-format folder, or a folder "
                        "of images in one subfolder per class)")
    x, y = data.train
    partial = bool((y == UNLABELLED).any())
    n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise DataError(f"{source}: labels must be integers 0..K-1 with K >= 2")
    test = tuple(data.test) if data.test is not None and data.test.y is not None else None
    if test is not None and int(test[1].max()) >= n_classes:
        raise DataError(f"{source}: the test labels must be within the training labels' range 0..{n_classes - 1}")
    indices = draw_labelled(y, labels, label_seed, source)
    valid = None
    if labels is None and not partial:
        if data.valid is not None and data.valid.y is not None:
            valid = tuple(data.valid)
            if int(valid[1].max()) >= n_classes:
                raise DataError(f"{source}: the validation labels must be within the training labels' range "
                                f"0..{n_classes - 1}")
    elif data.valid is not None:
        x = torch.cat([x, data.valid.x])  # its images are unlabelled data; its labels stay unread
    return SemiSupervised(x, indices, data.train.x[indices], y[indices], valid, test, n_classes)


def draw_labelled(y: torch.Tensor, n: int | None, seed: int, source: object = "data") -> torch.Tensor:
    """The sorted indices of ``n`` labelled examples of ``y``, balanced over the classes, drawn
    from ``seed`` (``n // K`` of each of the K classes; the first ``n % K`` classes one more).
    Rows labelled :data:`UNLABELLED` are never drawn; ``n=None`` takes every labelled row."""
    labelled = torch.nonzero(y != UNLABELLED).flatten()
    if n is None:
        return labelled
    classes = torch.unique(y[labelled])
    if n < len(classes) or n > len(labelled):
        raise DataError(f"{source}: cannot draw {n} labels balanced over {len(classes)} classes from "
                        f"{len(labelled)} labelled examples")
    g = torch.Generator().manual_seed(seed)
    picked = []
    for k, c in enumerate(classes.tolist()):
        rows = labelled[y[labelled] == c]
        want = n // len(classes) + (k < n % len(classes))
        if want > len(rows):
            raise DataError(f"{source}: class {c} has {len(rows)} labelled examples, fewer than the {want} "
                            f"a balanced draw of {n} needs")
        picked.append(rows[torch.randperm(len(rows), generator=g)[:want]])
    return torch.cat(picked).sort().values


def hold_out_labelled(indices: torch.Tensor, y: torch.Tensor, fraction: float, seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out): ``fraction`` of each class's ``indices`` (rounded down, at least one where
    the class has two and ``fraction`` > 0), drawn from ``seed``; the labels that early stopping
    may look at."""
    g = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for c in torch.unique(y[indices]).tolist():
        rows = indices[y[indices] == c]
        rows = rows[torch.randperm(len(rows), generator=g)]
        k = max(int(len(rows) * fraction), 1) if fraction > 0 and len(rows) >= 2 else 0
        held.append(rows[:k])
        kept.append(rows[k:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values
