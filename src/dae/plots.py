"""Pictures of what a denoising autoencoder learned, drawn with Pillow only.

* :func:`tile_raster_images` lays many small images out in a grid, as the tutorial's
  ``utils.tile_raster_images`` does (the 2-D case; written afresh here).
* :func:`save_filters` shows the rows of ``W.T``: each hidden unit's weights, drawn as an
  image of the input, like the tutorial's ``filters_corruption_*.png``.
* :func:`save_reconstructions` shows clean inputs, their corrupted versions and what the
  dA made of them.
* :func:`save_learning_curve` draws cost against epoch as a small line chart.

Every PNG is rendered to memory first and then written with :func:`dae.files.write_bytes`,
so a failure while drawing never leaves a file (or half a file) behind.
"""

from __future__ import annotations

import io
import math
import os
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dae.files import write_bytes

__all__ = [
    "png_bytes",
    "save_filters",
    "save_learning_curve",
    "save_reconstructions",
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


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` pixels (needs FreeType; else the small bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except Exception:  # Pillow built without FreeType
        return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(math.ceil(right - left)), int(math.ceil(bottom - top))


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
    groups = [np.asarray(_to_numpy(a), dtype=np.float64) for a in (clean, corrupted, reconstructed)]
    if groups[0].ndim != 2 or any(g.shape != groups[0].shape for g in groups):
        raise ValueError(
            f"clean, corrupted, reconstructed must have the same (k, d) shape, got {[g.shape for g in groups]}"
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

    labels = ("clean", "corrupted", "reconstructed")
    font = _font(12)
    label_w = max(_text_size(font, s)[0] for s in labels)
    _, label_h = _text_size(font, "corrupted")  # letters with no descender, for centring
    bh, bw = blocks[0].shape
    gap = max(zoom, label_h + 6 - bh)  # 1 px (x2) between bands, more if labels would touch
    pad = 6
    left = pad + label_w + pad
    height = 3 * bh + 2 * gap
    canvas = Image.new("L", (left + bw, height), color=255)
    draw = ImageDraw.Draw(canvas)
    for i, (label, block) in enumerate(zip(labels, blocks)):
        top = i * (bh + gap)
        canvas.paste(Image.fromarray(block), (left, top))
        if i < 2:  # the spacing between bands is black, as between tiles
            draw.rectangle([left, top + bh, left + bw - 1, top + bh + gap - 1], fill=0)
        draw.text((pad, top + bh / 2), label, fill=0, font=font, anchor="lm")
    _save_png(path, np.asarray(canvas))


# ------------------------------------------------------------------------ learning curve

# Matplotlib's default "tab10" colour cycle (just the RGB values; no matplotlib needed).
_COLOURS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


def _axis(lo: float, hi: float, integer: bool = False) -> tuple[float, float, list[float]]:
    """Axis limits for data in [lo, hi], and 4-6 round ticks (1, 2 or 5 x 10^k apart).

    As matplotlib does by default, the limits are the data range plus a 5 % margin each
    side, so no point sits on the frame, and the ticks are the multiples of the step inside
    them. When no step gives 4-6 ticks inside (1 to 15 epochs: step 2 gives 7, step 5 only
    3), the axis is stretched to the next multiples of the step, on the cheaper side first;
    the step that stretches it least wins, then the one nearest 5 ticks.

    A zero-width range is widened first (by 10 % of the value, or by 1 around 0 or for
    integer data). `integer`: no step below 1 (epochs are whole numbers), and a short
    integer axis keeps its 2 or 3 ticks rather than be stretched.
    """
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        if integer:
            pad = max(pad, 1.0)
        lo, hi = lo - pad, hi + pad
    margin = 0.05 * (hi - lo)
    lo, hi = lo - margin, hi + margin
    e0 = math.floor(math.log10(hi - lo))
    best = None
    for e in range(e0 - 2, e0 + 2):
        for m in (1, 2, 5):
            step = m * 10.0**e
            if integer and step < 1:
                continue
            first = math.ceil(lo / step - 1e-9)
            last = math.floor(hi / step + 1e-9)
            if last - first + 1 > 6:
                continue
            while last - first + 1 < 4 and not (integer and step == 1):
                if lo - (first - 1) * step <= (last + 1) * step - hi:
                    first -= 1
                else:
                    last += 1
            a, b = min(lo, first * step), max(hi, last * step)
            key = ((b - a) / (hi - lo), abs(last - first + 1 - 5))
            if best is None or key < best[0]:
                best = (key, a, b, [k * step for k in range(first, last + 1)])
    _, a, b, ticks = best
    return a, b, ticks


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels with just enough decimals for the step between ticks: 0, 0.5, 1, 1.5 ..."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    biggest = max(abs(t) for t in ticks)
    if decimals > 6 or biggest >= 1e7:
        return [f"{t:.6g}" for t in ticks]
    # `+ 0.0` and the rounding turn -0.0 into 0.0, so no "-0" label appears.
    return [f"{round(t, decimals) + 0.0:.{decimals}f}" for t in ticks]


def _finite_runs(points) -> list[list[tuple[float, float]]]:
    """Split a series at non-finite points (NaN, inf, or too huge to plot): the runs between."""
    runs: list[list[tuple[float, float]]] = [[]]
    for p in points:
        x, y = float(p[0]), float(p[1])
        if math.isfinite(x) and math.isfinite(y) and abs(x) < 1e300 and abs(y) < 1e300:
            runs[-1].append((x, y))
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def save_learning_curve(
    path: str | os.PathLike,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str = "epoch",
    ylabel: str = "cost",
    title: str | None = None,
) -> None:
    """Save a line chart (about 800 x 500 px RGB PNG) of one or more curves, e.g. cost per epoch.

    series: name -> list of (x, y) points, e.g. ``{"corruption 0%": [(1, 62.4), (2, 57.1)],
    "corruption 30%": [...]}``. Each curve gets its own colour, a marker at every point and
    an entry in the legend. Points with a NaN or infinite value are skipped (the line breaks
    there). A single point, a constant curve or no points at all still give a chart.
    """
    S = 2  # draw at twice the size, then shrink with a good filter: cheap antialiasing
    width, height = 800 * S, 500 * S
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    f_tick, f_label, f_title, f_legend = _font(12 * S), _font(14 * S), _font(16 * S), _font(12 * S)
    ink, grid_ink, frame_ink = (0, 0, 0), (225, 225, 225), (60, 60, 60)

    runs = {name: _finite_runs(points) for name, points in series.items()}
    xs = [x for rs in runs.values() for r in rs for x, _ in r]
    ys = [y for rs in runs.values() for r in rs for _, y in r]
    integer_x = bool(xs) and all(float(x).is_integer() for x in xs)
    xlo, xhi, xticks = _axis(min(xs), max(xs), integer=integer_x) if xs else _axis(0.0, 1.0)
    ylo, yhi, yticks = _axis(min(ys), max(ys)) if ys else _axis(0.0, 1.0)
    xlabels, ylabels = _tick_labels(xticks), _tick_labels(yticks)

    # Margins, from the sizes of the texts around the plot area.
    tick_len, gap = 5 * S, 6 * S
    tick_h = _text_size(f_tick, "0123456789")[1]
    label_h = _text_size(f_label, "Hg")[1]
    ytick_w = max(_text_size(f_tick, s)[0] for s in ylabels)
    top = 14 * S + ((_text_size(f_title, title)[1] + 12 * S) if title else 0)
    bottom = height - (tick_len + gap + tick_h + gap + (label_h + gap if xlabel else 0) + 8 * S)
    left = 10 * S + (label_h + gap if ylabel else 0) + ytick_w + gap + tick_len
    # Room on the right for half of the last x tick label.
    right = width - max(20 * S, _text_size(f_tick, xlabels[-1])[0] // 2 + 8 * S)

    def px(x: float) -> float:
        return left + (x - xlo) / (xhi - xlo) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - ylo) / (yhi - ylo) * (bottom - top)

    # Grid, frame, ticks and their labels.
    for t, s in zip(xticks, xlabels):
        x = px(t)
        draw.line([(x, top), (x, bottom)], fill=grid_ink, width=S)
        draw.line([(x, bottom), (x, bottom + tick_len)], fill=frame_ink, width=S)
        draw.text((x, bottom + tick_len + gap), s, fill=ink, font=f_tick, anchor="mt")
    for t, s in zip(yticks, ylabels):
        y = py(t)
        draw.line([(left, y), (right, y)], fill=grid_ink, width=S)
        draw.line([(left - tick_len, y), (left, y)], fill=frame_ink, width=S)
        draw.text((left - tick_len - gap, y), s, fill=ink, font=f_tick, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline=frame_ink, width=S)

    # Axis labels and title.
    if xlabel:
        draw.text(((left + right) / 2, height - 8 * S), xlabel, fill=ink, font=f_label, anchor="md")
    if ylabel:
        w, h = _text_size(f_label, ylabel)
        label = Image.new("RGB", (w + 4 * S, h + 8 * S), "white")
        ImageDraw.Draw(label).text((2 * S, 2 * S), ylabel, fill=ink, font=f_label, anchor="lt")
        label = label.rotate(90, expand=True)
        img.paste(label, (10 * S - 2 * S, int((top + bottom) / 2 - label.height / 2)))
    if title:
        draw.text(((left + right) / 2, 12 * S), title, fill=ink, font=f_title, anchor="mt")

    # The curves: lines, then markers on top. Many points -> smaller markers, then none.
    pixel_points, radii = [], []
    for i, rs in enumerate(runs.values()):
        colour = _COLOURS[i % len(_COLOURS)]
        n_points = sum(len(r) for r in rs)
        radius = 4 * S if n_points <= 40 else 2 * S if n_points <= 150 else 0
        radii.append(radius)
        for r in rs:
            pts = [(px(x), py(y)) for x, y in r]
            pixel_points.extend(pts)
            for (xa, ya), (xb, yb) in zip(pts, pts[1:]):  # and along the lines, for the legend
                pixel_points.extend((xa + (xb - xa) * t / 8, ya + (yb - ya) * t / 8) for t in range(1, 8))
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2 * S, joint="curve")
            for x, y in pts:
                if radius or len(pts) == 1:  # a lone point is always marked, or it is invisible
                    rad = radius or 2 * S
                    draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=colour, outline="white", width=S)

    # Legend, in the corner of the plot area that covers the fewest points.
    if runs:
        names = list(runs)
        sw, sh = 28 * S, _text_size(f_legend, "Hg")[1]
        row_h = sh + 6 * S
        box_w = 10 * S + sw + 8 * S + max(_text_size(f_legend, n)[0] for n in names) + 10 * S
        box_h = 8 * S + row_h * len(names) + 2 * S
        m = 10 * S
        corners = [
            (right - m - box_w, top + m),  # upper right
            (left + m, top + m),  # upper left
            (right - m - box_w, bottom - m - box_h),  # lower right
            (left + m, bottom - m - box_h),  # lower left
        ]

        def covered(corner):
            x0, y0 = corner
            return sum(x0 - 8 * S <= x <= x0 + box_w + 8 * S and y0 - 8 * S <= y <= y0 + box_h + 8 * S
                       for x, y in pixel_points)  # fmt: skip

        bx, by = min(corners, key=covered)  # first corner wins ties: upper right
        draw.rounded_rectangle([bx, by, bx + box_w, by + box_h], radius=4 * S, fill="white",
                               outline=(180, 180, 180), width=S)  # fmt: skip
        for i, name in enumerate(names):
            colour = _COLOURS[i % len(_COLOURS)]
            cy = by + 8 * S + row_h * i + row_h / 2 - 2 * S
            x0 = bx + 10 * S
            draw.line([(x0, cy), (x0 + sw, cy)], fill=colour, width=2 * S)
            r = radii[i]
            if r:  # the same marker as on the curve, if it has markers
                draw.ellipse([x0 + sw / 2 - r, cy - r, x0 + sw / 2 + r, cy + r], fill=colour, outline="white", width=S)
            draw.text((x0 + sw + 8 * S, cy), name, fill=ink, font=f_legend, anchor="lm")

    img = img.resize((width // S, height // S), Image.Resampling.LANCZOS)
    _save_png(path, np.asarray(img))
