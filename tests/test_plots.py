"""Tests for dae.plots: tiling as in the tutorial, and PNGs that are whole or absent."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dae import plots
from dae.plots import (
    png_bytes,
    save_filters,
    save_learning_curve,
    save_reconstructions,
    tile_raster_images,
)

TAB_BLUE, TAB_ORANGE = (31, 119, 180), (255, 127, 14)  # the first two series colours


def scaled(v) -> np.ndarray:
    """The tutorial's scale_to_unit_interval, written out independently, as 0..255."""
    v = np.asarray(v, dtype=np.float64)
    v = v - v.min()
    return np.rint(v / (v.max() + 1e-8) * 255)


def open_png(path) -> Image.Image:
    img = Image.open(path)
    img.load()
    assert img.format == "PNG"
    return img


# ------------------------------------------------------------------ tile_raster_images


def test_tile_mnist_shape_is_289_square_uint8():
    X = np.random.default_rng(0).normal(size=(100, 784))
    out = tile_raster_images(X, (28, 28), (10, 10), tile_spacing=(1, 1))
    assert out.shape == (289, 289)
    assert out.dtype == np.uint8


def test_tile_output_shape_formula_with_uneven_spacing():
    out = tile_raster_images(np.ones((6, 12)), (3, 4), (2, 3), tile_spacing=(2, 1))
    assert out.shape == ((3 + 2) * 2 - 2, (4 + 1) * 3 - 1)


def test_spacing_pixels_are_zero_and_tiles_are_not():
    X = np.ones((100, 784))
    out = tile_raster_images(X, (28, 28), (10, 10), (1, 1), scale_rows_to_unit_interval=False)
    spacing = np.zeros(out.shape, dtype=bool)
    spacing[28::29, :] = True
    spacing[:, 28::29] = True
    assert (out[spacing] == 0).all()
    assert (out[~spacing] == 255).all()


def test_row_is_scaled_to_the_full_0_255_range():
    a, b = -3.0, 5.0
    row = np.linspace(a, b, 16)
    np.random.default_rng(1).shuffle(row)
    out = tile_raster_images(row[None, :], (4, 4), (1, 1))
    assert out.min() == 0 and out.max() == 255
    np.testing.assert_allclose(out, scaled(row).reshape(4, 4), atol=1)


def test_each_row_is_scaled_on_its_own():
    X = np.stack([np.linspace(0, 1, 4), np.linspace(100, 300, 4)])
    out = tile_raster_images(X, (2, 2), (1, 2), (0, 0), output_pixel_vals=False)
    np.testing.assert_allclose(out[:, :2], out[:, 2:], atol=1e-7)
    assert out.max() == pytest.approx(1.0, abs=1e-7)


def test_tiles_are_laid_out_row_major():
    # Tile i holds the constant i / 10: find each at (i // cols, i % cols).
    rows, cols, h, w = 2, 3, 2, 2
    X = np.repeat((np.arange(6) / 10)[:, None], h * w, axis=1)
    out = tile_raster_images(X, (h, w), (rows, cols), (1, 1), scale_rows_to_unit_interval=False, output_pixel_vals=False)
    for i in range(6):
        r, c = divmod(i, cols)
        tile = out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w]
        np.testing.assert_allclose(tile, i / 10)


def test_a_single_distinct_tile_lands_in_its_place():
    X = np.zeros((6, 4))
    X[4] = 1.0  # tile 4 of a 2 x 3 grid: second row, second column
    out = tile_raster_images(X, (2, 2), (2, 3), (1, 1), scale_rows_to_unit_interval=False)
    expected = np.zeros((5, 8), dtype=np.uint8)
    expected[3:5, 3:5] = 255
    np.testing.assert_array_equal(out, expected)


def test_fewer_rows_than_tiles_leaves_zeros():
    X = np.ones((3, 4))
    out = tile_raster_images(X, (2, 2), (2, 3), (1, 1), scale_rows_to_unit_interval=False)
    assert (out[:2, :] != 0).any()
    assert (out[3:, :] == 0).all()  # tiles 3, 4, 5 (the whole second row) are empty


def test_constant_row_gives_zeros_not_nan():
    X = np.full((2, 4), 7.5)
    out = tile_raster_images(X, (2, 2), (1, 2), (0, 0), output_pixel_vals=False)
    assert not np.isnan(out).any()
    assert (out == 0).all()
    assert (tile_raster_images(X, (2, 2), (1, 2)) == 0).all()


def test_float_output_and_torch_input():
    X = torch.randn(4, 9, requires_grad=True)
    out = tile_raster_images(X, (3, 3), (2, 2), (1, 1), output_pixel_vals=False)
    assert out.dtype.kind == "f"
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[:3, :3] * 255, scaled(X[0].detach().numpy()).reshape(3, 3), atol=1)


def test_wrong_row_length_is_an_error():
    with pytest.raises(ValueError):
        tile_raster_images(np.zeros((2, 10)), (3, 3), (1, 2))


# ------------------------------------------------------------------------- save_filters


def test_save_filters_mnist_picture(tmp_path):
    W = torch.randn(784, 500)
    path = tmp_path / "filters.png"
    save_filters(path, W, (28, 28))
    img = open_png(path)
    assert img.size == (289, 289)
    assert img.mode == "L"
    pixels = np.asarray(img).astype(np.float64)
    # The filters are the columns of W (rows of W.T), not its rows.
    np.testing.assert_allclose(pixels[:28, :28], scaled(W[:, 0].numpy()).reshape(28, 28), atol=1)
    np.testing.assert_allclose(pixels[:28, 29:57], scaled(W[:, 1].numpy()).reshape(28, 28), atol=1)
    np.testing.assert_allclose(pixels[29:57, :28], scaled(W[:, 10].numpy()).reshape(28, 28), atol=1)


def test_save_filters_fewer_hidden_units_than_n(tmp_path):
    W = np.random.default_rng(2).normal(size=(784, 7))
    path = tmp_path / "f.png"
    save_filters(path, W, (28, 28), n=100)
    pixels = np.asarray(open_png(path))
    assert pixels.shape == (3 * 29 - 1, 3 * 29 - 1)  # 7 filters: a 3 x 3 grid
    assert pixels[58:, 29:].max() == 0  # tiles 7 and 8 are empty
    assert pixels[58:, :28].max() == 255  # tile 6 is not


def test_save_filters_wrong_image_shape_is_an_error(tmp_path):
    with pytest.raises(ValueError):
        save_filters(tmp_path / "f.png", np.zeros((784, 10)), (20, 20))
    assert list(tmp_path.iterdir()) == []


def test_save_filters_non_image_data_are_strips(tmp_path):
    n_visible, n_hidden = 20, 5
    W = np.random.default_rng(3).normal(size=(n_visible, n_hidden))
    path = tmp_path / "strips.png"
    save_filters(path, W, None)
    img = open_png(path)
    assert img.mode == "L"
    pixels = np.asarray(img).astype(np.float64)
    h = plots.STRIP_HEIGHT
    assert h >= 2
    assert pixels.shape[0] == n_hidden * (h + 1) - 1
    assert pixels.shape[1] % n_visible == 0
    widen = pixels.shape[1] // n_visible
    for j in range(n_hidden):
        strip = pixels[j * (h + 1) : j * (h + 1) + h]
        assert (strip == strip[0]).all()  # every pixel row of a strip is the same
        np.testing.assert_allclose(strip[0, ::widen], scaled(W[:, j]), atol=1)


# ---------------------------------------------------------------- save_reconstructions


def test_save_reconstructions_mnist(tmp_path):
    k = 10
    rng = np.random.default_rng(4)
    clean = rng.random((k, 784))
    clean[0] = 0.5  # not rescaled per image: stays mid-grey, not 0
    corrupted = clean * (rng.random(clean.shape) > 0.3)
    reconstructed = rng.random((k, 784))
    reconstructed[1, :392] = -0.5  # clipped to 0, not wrapped around
    reconstructed[1, 392:] = 1.5  # clipped to 1
    path = tmp_path / "rec.png"
    save_reconstructions(path, torch.from_numpy(clean), corrupted, reconstructed, (28, 28))
    img = open_png(path)
    assert img.mode == "L"
    pixels = np.asarray(img).astype(np.float64)
    band_h, band_w = 2 * 28, 2 * (29 * k - 1)  # enlarged x2
    assert pixels.shape[0] == 3 * band_h + 2 * 2
    assert band_w + 30 < pixels.shape[1] < band_w + 200  # room for the labels at the left
    picture = pixels[:, -band_w:]

    def tile(band, i):
        top, left = band * (band_h + 2), i * 2 * 29
        return picture[top : top + band_h : 2, left : left + 2 * 28 : 2].reshape(-1)

    np.testing.assert_array_equal(tile(0, 0), 128)
    np.testing.assert_allclose(tile(0, 3), np.rint(clean[3] * 255), atol=1)
    np.testing.assert_allclose(tile(1, 3), np.rint(corrupted[3] * 255), atol=1)
    np.testing.assert_allclose(tile(2, 3), np.rint(reconstructed[3] * 255), atol=1)
    np.testing.assert_array_equal(tile(2, 1)[:392], 0)
    np.testing.assert_array_equal(tile(2, 1)[392:], 255)
    # x2 nearest neighbour: each pixel is a 2 x 2 block.
    block = picture[:band_h, :56]
    np.testing.assert_array_equal(block[::2, ::2], block[1::2, 1::2])
    # The label area has dark text on a light background.
    labels = pixels[:, : pixels.shape[1] - band_w]
    assert labels.max() == 255 and labels.min() < 100


@pytest.mark.parametrize("k", [1, 3])
def test_save_reconstructions_non_image_data(tmp_path, k):
    x = np.random.default_rng(5).random((k, 20))
    path = tmp_path / "rec.png"
    save_reconstructions(path, x, np.zeros_like(x), x, None)
    img = open_png(path)
    assert img.mode == "L"
    assert img.height >= 3 * 2 * k * plots.STRIP_HEIGHT
    assert img.width > 2 * 20


def test_save_reconstructions_shape_mismatch_is_an_error(tmp_path):
    with pytest.raises(ValueError):
        save_reconstructions(tmp_path / "r.png", np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((2, 4)), (2, 2))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ save_learning_curve


def colour_present(pixels: np.ndarray, colour, tol: int = 10) -> bool:
    return bool((np.abs(pixels.astype(int) - np.array(colour)).max(axis=2) <= tol).any())


def test_learning_curve_two_series(tmp_path):
    series = {
        "corruption 0%": [(e, 60 * math.exp(-e / 5) + 10) for e in range(1, 16)],
        "corruption 30%": [(e, 75 * math.exp(-e / 6) + 12) for e in range(1, 16)],
    }
    path = tmp_path / "curve.png"
    save_learning_curve(path, series, title="dA on MNIST")
    img = open_png(path)
    assert img.mode == "RGB"
    assert 600 <= img.width <= 1000 and 400 <= img.height <= 700
    pixels = np.asarray(img)
    assert (pixels == 255).all(axis=2).mean() > 0.5  # a white background
    assert colour_present(pixels, TAB_BLUE) and colour_present(pixels, TAB_ORANGE)


def test_learning_curve_has_no_second_colour_with_one_series(tmp_path):
    path = tmp_path / "curve.png"
    save_learning_curve(path, {"only": [(1, 3.0), (2, 2.0), (3, 1.5)]})
    pixels = np.asarray(open_png(path))
    assert colour_present(pixels, TAB_BLUE) and not colour_present(pixels, TAB_ORANGE)


@pytest.mark.parametrize(
    "series",
    [
        {"single point": [(1, 62.4)]},
        {"constant": [(1, 5.0), (2, 5.0), (3, 5.0)]},
        {"zero": [(1, 0.0), (2, 0.0)]},
        {"nan and inf": [(1, 3.0), (2, float("nan")), (3, float("inf")), (4, 1.0), (float("-inf"), 2.0)]},
        {"all nan": [(1, float("nan")), (2, float("nan"))]},
        {"empty": []},
        {},
        {"tiny": [(0.001, 1e-9), (0.002, 3e-9)], "huge": [(1e6, 1e12), (2e6, -1e12)]},
        {"many": [(i, 1.0 / (i + 1)) for i in range(2000)]},
    ],
    ids=lambda s: ",".join(s) or "no series",
)
def test_learning_curve_edge_cases(tmp_path, series):
    path = tmp_path / "curve.png"
    save_learning_curve(path, series, xlabel="step", ylabel="cross-entropy", title="edge case")
    img = open_png(path)
    assert img.size == (800, 500)
    pixels = np.asarray(img)
    assert (pixels < 100).all(axis=2).any()  # axes and labels were drawn


def test_learning_curve_draws_lines_in_the_series_colour(tmp_path):
    # 200 points: no markers, so the colour in the middle of the chart is the line's.
    path = tmp_path / "curve.png"
    save_learning_curve(path, {"diagonal": [(i, float(i)) for i in range(200)]})
    pixels = np.asarray(open_png(path))
    assert colour_present(pixels[200:300, 300:500], TAB_BLUE)


def test_learning_curve_legend_goes_where_the_data_are_not(tmp_path):
    # A falling line leaves the upper right corner free: the legend (and its blue swatch) goes there.
    path = tmp_path / "falling.png"
    save_learning_curve(path, {"falling": [(1, 1.0), (2, 0.0)]})
    pixels = np.asarray(open_png(path))
    assert colour_present(pixels[:100, 620:], TAB_BLUE)
    # A V leaves both lower corners free; the upper ones are taken: lower right it is.
    path = tmp_path / "v.png"
    save_learning_curve(path, {"v": [(1, 1.0), (2, 0.0), (3, 1.0)]})
    pixels = np.asarray(open_png(path))
    assert colour_present(pixels[380:445, 620:], TAB_BLUE)


def test_learning_curve_draws_finite_points_around_a_nan(tmp_path):
    path = tmp_path / "curve.png"
    save_learning_curve(path, {"a": [(1, 1.0), (2, float("nan")), (3, 2.0)]})
    assert colour_present(np.asarray(open_png(path)), TAB_BLUE)


@pytest.mark.parametrize(
    "lo, hi, integer",
    [(0.0, 1.0, False), (1.0, 15.0, True), (11.7, 75.3, False), (-2e-4, 1e-3, False),
     (62.4, 62.4, False), (0.0, 0.0, False), (1.0, 1.0, True), (1e6, 3.7e9, False), (-5.0, -4.99, False),
     (1.0, 2.0, True), (1.0, 100.0, True), (3e-9, 7e-9, False)],
)  # fmt: skip
def test_axis_ticks_are_few_round_and_cover_the_data(lo, hi, integer):
    a, b, ticks = plots._axis(lo, hi, integer=integer)
    assert a <= lo and b >= hi and a < b
    assert 4 <= len(ticks) <= 6 or (integer and hi - lo < 3)
    assert all(a - 1e-9 * abs(a) <= t <= b + 1e-9 * abs(b) for t in ticks)
    step = ticks[1] - ticks[0]
    np.testing.assert_allclose(np.diff(ticks), step, rtol=1e-6)
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-6
    if integer:
        assert step >= 1
    if lo != hi:
        assert b - a <= 1.1 * (hi - lo) + 2 * step  # not much wider than needed


def test_tick_labels_are_short_and_never_minus_zero():
    assert plots._tick_labels([-0.2, 0.0, 0.2, 0.4]) == ["-0.2", "0.0", "0.2", "0.4"]
    assert plots._tick_labels([0, 5, 10, 15]) == ["0", "5", "10", "15"]
    _, _, ticks = plots._axis(-1.0, 1.0)
    labels = plots._tick_labels(ticks)
    assert "0.0" in labels
    assert all(not s.startswith("-") for s in labels if float(s) == 0)


# ------------------------------------------------------------------------- atomicity


def _draw_all():
    x = np.random.default_rng(6).random((2, 4))
    return [
        lambda p: save_filters(p, x.T, (2, 2)),
        lambda p: save_reconstructions(p, x, x, x, (2, 2)),
        lambda p: save_learning_curve(p, {"a": [(1, 2.0), (2, 1.0)]}),
    ]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["filters", "reconstructions", "curve"])
def test_failed_encoding_leaves_no_file(tmp_path, monkeypatch, which):
    def broken_save(self, *args, **kwargs):
        raise OSError("encoder broke")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    draw = _draw_all()[which]
    with pytest.raises(OSError, match="encoder broke"):
        draw(tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []  # neither the PNG nor a temporary file


@pytest.mark.parametrize("which", [0, 1, 2], ids=["filters", "reconstructions", "curve"])
def test_failed_write_leaves_no_temporary_file_and_keeps_the_old_png(tmp_path, monkeypatch, which):
    path = tmp_path / "out.png"
    path.write_bytes(b"old picture")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("dae.files.os.fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        _draw_all()[which](path)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert path.read_bytes() == b"old picture"


def test_png_bytes_round_trip():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    for a, mode in ((gray, "L"), (rgb, "RGB")):
        img = Image.open(io.BytesIO(png_bytes(a)))
        assert img.format == "PNG" and img.mode == mode
        np.testing.assert_array_equal(np.asarray(img), a)
    with pytest.raises(TypeError):
        png_bytes(np.zeros((2, 2)))
