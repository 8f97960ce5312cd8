"""Pictures of what a denoising autoencoder learned.

* Images, as NumPy arrays written with Pillow:

  * :func:`tile_raster_images` lays many small images out in a grid, as the tutorial's
    ``utils.tile_raster_images`` does (the 2-D case; written afresh here).
  * :func:`save_filters` shows the rows of ``W.T``: each hidden unit's weights, drawn as an
    image of the input, like the tutorial's ``filters_corruption_*.png``.
  * :func:`save_reconstructions` shows clean inputs, their corrupted versions and what the
    dA made of them.
  * :func:`save_worst_reconstructions` shows badly reconstructed inputs (anomalies), their
    reconstructions and where their errors lie.
  * :func:`save_compared_reconstructions` shows inputs and several models' reconstructions
    of them (``dae deep``: the deep autoencoder's and PCA's).

* Charts, with matplotlib (a private ``Figure`` on the Agg canvas, never pyplot, so it is
  thread-safe and needs no display): :func:`save_learning_curve` draws cost against epoch;
  :func:`save_code_scatter` draws 2-D codes coloured by label.

Every PNG is rendered to memory first and then written with :func:`dae.files.write_bytes`,
so a failure while drawing never leaves a file (or half a file) behind.
"""

from __future__ import annotations

import io
import math
import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from dae.files import write_bytes

__all__ = [
    "png_bytes",
    "save_code_scatter",
    "save_compared_reconstructions",
    "save_filters",
    "save_learning_curve",
    "save_reconstructions",
    "save_worst_reconstructions",
    "scale_to_unit_interval",
    "tile_raster_images",
]

# Data that are not images are drawn as 1-pixel-high strips, stretched so they can be seen.
STRIP_HEIGHT = 4  # pixels per strip
STRIP_MIN_WIDTH = 64  # narrow inputs are widened (nearest neighbour) to at least this


# --------------------------------------------------------------------------- helpers


def _to_numpy(x) -> np.ndarray:
    """A numpy array from a numpy array, a list or a torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as PNG in memory: (H, W) is grayscale ('L'), (H, W, 3) is RGB."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"png_bytes wants uint8 pixels, got {array.dtype}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"png_bytes wants (H, W) or (H, W, 3|4) pixels, got shape {array.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def _save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    # Encode fully in memory, then write atomically: an encoding error leaves nothing.
    write_bytes(path, png_bytes(array))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> 0..255 bytes (rounded; NaN -> 0; out-of-range values clipped)."""
    img = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ tiling (tutorial)


def scale_to_unit_interval(ndar: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Shift and scale `ndar` so that it spans [0, 1] (a copy).

    As the tutorial's ``utils.scale_to_unit_interval``: subtract the minimum, then divide by
    the new maximum plus `eps` (so a constant array becomes all zeros, not NaN).
    """
    ndar = np.array(ndar, dtype=np.float64, copy=True)
    ndar -= ndar.min()
    ndar *= 1.0 / (ndar.max() + eps)
    return ndar


def tile_raster_images(
    X,
    img_shape: tuple[int, int],
    tile_shape: tuple[int, int],
    tile_spacing: tuple[int, int] = (0, 0),
    scale_rows_to_unit_interval: bool = True,
    output_pixel_vals: bool = True,
) -> np.ndarray:
    """Lay the rows of `X` out as a grid of images (the tutorial's ``tile_raster_images``).

    X: (n, h*w) array (or torch tensor); row i is reshaped to ``img_shape = (h, w)`` and put
    in tile i of a ``tile_shape = (rows, cols)`` grid, filled row-major. ``tile_spacing =
    (sh, sw)`` pixels of 0 separate the tiles (none after the last row / column), so the
    result has shape ``((h + sh) * rows - sh, (w + sw) * cols - sw)``. Tiles past row n
    stay 0; rows past rows*cols are ignored.

    scale_rows_to_unit_interval: scale each image on its own to [0, 1]
    (:func:`scale_to_unit_interval`). output_pixel_vals: return uint8 0..255 (value * 255),
    else floats.

    Example (the tutorial's MNIST filters): 100 filters, (28, 28), (10, 10), spacing (1, 1)
    gives a 289 x 289 picture.
    """
    X = _to_numpy(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, h*w), got shape {X.shape}")
    h, w = (int(s) for s in img_shape)
    rows, cols = (int(s) for s in tile_shape)
    sh, sw = (int(s) for s in tile_spacing)
    if X.shape[1] != h * w:
        raise ValueError(f"rows of X have {X.shape[1]} values, img_shape {img_shape} needs {h * w}")

    out_shape = ((h + sh) * rows - sh, (w + sw) * cols - sw)
    out = np.zeros(out_shape, dtype=np.float64)
    for i in range(min(X.shape[0], rows * cols)):
        r, c = divmod(i, cols)  # row-major, as the tutorial's tile_row * tile_shape[1] + tile_col
        img = X[i].reshape(h, w).astype(np.float64)
        if scale_rows_to_unit_interval:
            img = scale_to_unit_interval(img)
        out[r * (h + sh) : r * (h + sh) + h, c * (w + sw) : c * (w + sw) + w] = img

    if output_pixel_vals:
        # The tutorial casts value * 255 to uint8 (truncating; wrapping when out of [0, 1]);
        # we round and clip instead, so that a row's maximum really becomes 255.
        return _to_uint8(out)
    return out


def _grid(n: int) -> tuple[int, int]:
    """A roughly square (rows, cols) grid with room for n tiles: 100 -> (10, 10)."""
    n = max(int(n), 1)
    rows = math.ceil(math.sqrt(n))
    return rows, math.ceil(n / rows)


def _as_strips(X: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Rows of X (n, d) as images of STRIP_HEIGHT identical pixel rows, widened if narrow."""
    d = X.shape[1]
    widen = max(1, math.ceil(STRIP_MIN_WIDTH / max(d, 1)))
    row = np.repeat(X, widen, axis=1)  # nearest-neighbour widening
    return np.tile(row, (1, STRIP_HEIGHT)), (STRIP_HEIGHT, d * widen)


# ----------------------------------------------------------------------------- filters


def save_filters(path: str | os.PathLike, W, image_shape: tuple[int, int] | None, n: int = 100) -> None:
    """Save the first `n` filters of a dA as a grayscale PNG, like the tutorial's figures.

    W: (n_visible, n_hidden) weights (torch or numpy). Filter j is column j of W (row j of
    ``W.T``): the input pattern hidden unit j responds to most. Each filter is scaled to
    [0, 1] on its own and drawn as an `image_shape` image in a roughly square grid with
    1-pixel spacing (100 MNIST filters -> 10 x 10 tiles, 289 x 289 px).

    image_shape None (inputs that are not images): each filter is a horizontal strip,
    one per line.
    """
    W = _to_numpy(W)
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D (n_visible, n_hidden), got shape {W.shape}")
    n_visible, n_hidden = W.shape
    n = max(0, min(int(n), n_hidden))
    filters = W.T[:n].astype(np.float64)  # the tutorial plots W.T: one row per hidden unit
    if image_shape is None:
        filters, shape = _as_strips(filters)
        tiles = (max(n, 1), 1)
    else:
        shape = (int(image_shape[0]), int(image_shape[1]))
        if shape[0] * shape[1] != n_visible:
            raise ValueError(f"image_shape {image_shape} does not hold {n_visible} inputs")
        tiles = _grid(n)
    pixels = tile_raster_images(filters, shape, tiles, tile_spacing=(1, 1))
    _save_png(path, pixels)


# ---------------------------------------------------------------------- reconstructions


def save_reconstructions(
    path: str | os.PathLike,
    clean,
    corrupted,
    reconstructed,
    image_shape: tuple[int, int] | None,
) -> None:
    """Save a PNG with k clean inputs, their corrupted versions and the dA's reconstructions.

    clean, corrupted, reconstructed: (k, d) arrays (torch or numpy) with values in [0, 1];
    they are drawn as they are (not rescaled per image, so the three rows compare), clipped
    to [0, 1] (a squared-error dA may reconstruct slightly outside it). Three labelled bands
    ("clean", "corrupted", "reconstructed"), each the k images side by side with 1-pixel
    spacing, then the whole picture is enlarged x2 (nearest neighbour).

    image_shape None (inputs that are not images): each band is k horizontal strips, one per
    line.
    """
    _save_bands(path, {"clean": clean, "corrupted": corrupted, "reconstructed": reconstructed}, image_shape)


def save_worst_reconstructions(path: str | os.PathLike, inputs, reconstructions, errors,
                               image_shape: tuple[int, int] | None) -> None:
    """Save a PNG of badly reconstructed rows: the inputs, their reconstructions and their error maps.

    inputs, reconstructions, errors: (k, d) arrays (torch or numpy), the rows in the order
    given (``dae score --per-feature`` passes the worst-scored first); errors holds each
    feature's reconstruction error.  Inputs and reconstructions are drawn as
    :func:`save_reconstructions` draws them; the error maps are the errors divided by the
    largest of all k rows, so that they compare (white: the largest error shown, black: none).
    """
    errors = np.nan_to_num(np.asarray(_to_numpy(errors), dtype=np.float64), nan=0.0)
    largest = errors.max() if errors.size else 0.0
    _save_bands(path, {"input": inputs, "reconstruction": reconstructions,
                       "error": errors / largest if largest > 0 else np.zeros_like(errors)}, image_shape)


def save_compared_reconstructions(path: str | os.PathLike, originals, reconstructions: Mapping[str, object],
                                  image_shape: tuple[int, int] | None) -> None:
    """Save a PNG of k inputs and, band under band, each model's reconstructions of them
    (``dae deep``: the deep autoencoder's and PCA's with as many components as its code, as in
    Hinton & Salakhutdinov (2006), fig. 2B).  reconstructions: band label -> (k, d) array; drawn as
    :func:`save_reconstructions` draws its bands."""
    _save_bands(path, {"original": originals, **reconstructions}, image_shape)


def _save_bands(path: str | os.PathLike, bands: Mapping[str, object], image_shape: tuple[int, int] | None) -> None:
    """One labelled band per entry of ``bands``, each its k images (values in [0, 1], clipped) side
    by side with 1-pixel spacing (or k strips, one per line, if image_shape is None), enlarged x2."""
    labels = list(bands)
    groups = [np.asarray(_to_numpy(a), dtype=np.float64) for a in bands.values()]
    if groups[0].ndim != 2 or any(g.shape != groups[0].shape for g in groups):
        raise ValueError(
            f"{', '.join(labels)} must have the same (k, d) shape, got {[g.shape for g in groups]}"
        )
    k, d = groups[0].shape
    zoom = 2

    blocks = []
    for g in groups:
        g = np.clip(np.nan_to_num(g, nan=0.0), 0.0, 1.0)
        if image_shape is None:
            g, shape = _as_strips(g)
            tiles = (max(k, 1), 1)
        else:
            shape = (int(image_shape[0]), int(image_shape[1]))
            if shape[0] * shape[1] != d:
                raise ValueError(f"image_shape {image_shape} does not hold {d} inputs")
            tiles = (1, max(k, 1))
        block = tile_raster_images(g, shape, tiles, (1, 1), scale_rows_to_unit_interval=False)
        blocks.append(np.repeat(np.repeat(block, zoom, axis=0), zoom, axis=1))

    try:
        font = ImageFont.load_default(size=12)
    except ImportError:  # Pillow built without FreeType: the small bitmap font
        font = ImageFont.load_default()
    boxes = [font.getbbox(s) for s in labels]
    label_w = math.ceil(max(right - left for left, _, right, _ in boxes))
    box = font.getbbox("corrupted")  # a word without descenders, for centring
    label_h = math.ceil(box[3] - box[1])
    bh, bw = blocks[0].shape
    gap = max(zoom, label_h + 6 - bh)  # 1 px (x2) between bands, more if labels would touch
    pad = 6
    left = pad + label_w + pad
    height = len(blocks) * bh + (len(blocks) - 1) * gap
    canvas = Image.new("L", (left + bw, height), color=255)
    draw = ImageDraw.Draw(canvas)
    for i, (label, block) in enumerate(zip(labels, blocks)):
        top = i * (bh + gap)
        canvas.paste(Image.fromarray(block), (left, top))
        if i < len(blocks) - 1:  # the spacing between bands is black, as between tiles
            draw.rectangle([left, top + bh, left + bw - 1, top + bh + gap - 1], fill=0)
        draw.text((pad, top + bh / 2), label, fill=0, font=font, anchor="lm")
    _save_png(path, np.asarray(canvas))


# ------------------------------------------------------------------------ learning curve


def save_learning_curve(
    path: str | os.PathLike,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str = "epoch",
    ylabel: str = "cost",
    title: str | None = None,
    logy: bool = False,
) -> None:
    """Save a line chart (800 x 500 px PNG) of one or more curves, e.g. cost per epoch.

    series: name -> list of (x, y) points, e.g. ``{"corruption 0%": [(1, 62.4), (2, 57.1)],
    "corruption 30%": [...]}``. Each curve gets its own colour, a marker at every point and
    an entry in the legend. Points with a NaN, infinite or huge (>= 1e300) value, and with
    `logy` y <= 0, are skipped: the line breaks there. A single point, a constant curve or no points at all
    still give a chart. The x ticks are whole numbers when all x are. logy: log-scale y axis.
    """
    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to fig: savefig renders with Agg
    ax = fig.add_subplot()
    all_x = []
    for name, points in series.items():
        xy = np.array(points, dtype=np.float64).reshape(-1, 2)
        bad = ~(np.abs(xy) < 1e300).all(axis=1)  # NaN, inf, or too huge for matplotlib
        if logy:
            bad |= xy[:, 1] <= 0
        xy[bad] = np.nan  # matplotlib leaves a gap at a NaN
        all_x.extend(xy[~bad, 0])
        ax.plot(xy[:, 0], xy[:, 1], marker="o", markersize=4 if len(xy) <= 50 else 2, label=str(name))
    if all_x and all(float(x).is_integer() for x in all_x):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------ codes


def save_code_scatter(path: str | os.PathLike, codes, labels=None, *, title: str | None = None) -> None:
    """Save a scatter plot (800 x 800 px PNG) of 2-D codes, one colour per label, as
    Hinton & Salakhutdinov (2006), fig. 3B, show the 2-D codes of MNIST digits.

    codes: (n, 2) array (torch or numpy); labels: (n,) integers, or None for one colour.  Rows
    with a NaN or infinite code are left out.
    """
    codes = np.asarray(_to_numpy(codes), dtype=np.float64)
    if codes.ndim != 2 or codes.shape[1] != 2:
        raise ValueError(f"codes must have shape (n, 2), got {codes.shape}")
    labels = np.zeros(len(codes), dtype=np.int64) if labels is None else np.asarray(_to_numpy(labels))
    if labels.shape != (len(codes),):
        raise ValueError(f"labels must have shape ({len(codes)},), got {labels.shape}")
    finite = np.isfinite(codes).all(axis=1)
    fig = Figure(figsize=(8, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    classes = np.unique(labels)
    for i, c in enumerate(classes):
        rows = finite & (labels == c)
        ax.scatter(codes[rows, 0], codes[rows, 1], s=4, alpha=0.6, color=_colour(i, len(classes)),
                   label=str(c.item()), rasterized=True)
    if len(classes) > 1:
        ax.legend(loc="best", markerscale=3, title="label")
    ax.set(xlabel="code 1", ylabel="code 2", title=title or "")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes(path, buf.getvalue())


def _colour(i: int, n: int):
    """Colour i of n: matplotlib's tab10 for up to ten labels, else evenly along viridis."""
    from matplotlib import colormaps

    return colormaps["tab10"](i) if n <= 10 else colormaps["viridis"](i / max(n - 1, 1))
