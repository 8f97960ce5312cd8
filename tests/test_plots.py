"""Tests for dae.plots: tiling as in the tutorial, matplotlib charts, and PNGs that are whole or absent."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from dae import plots
from dae.plots import (
    png_bytes,
    save_filters,
    save_learning_curve,
    save_reconstructions,
    tile_raster_images,
)

TAB_BLUE, TAB_ORANGE = (31, 119, 180), (255, 127, 14)  # matplotlib's first two colours (C0, C1)


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


def chart(path) -> np.ndarray:
    """The RGB pixels of a chart PNG, which must be 800 x 500."""
    img = open_png(path)
    assert img.size == (800, 500)
    return np.asarray(img.convert("RGB"))


def colour_mask(pixels: np.ndarray, colour, tol: int = 10) -> np.ndarray:
    return np.abs(pixels.astype(int) - np.array(colour)).max(axis=2) <= tol


def colour_present(pixels: np.ndarray, colour, tol: int = 10) -> bool:
    return bool(colour_mask(pixels, colour, tol).any())


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib Figures that get saved, to look at what was drawn."""
    saved = []
    savefig = Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        saved.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return saved


def test_learning_curve_two_series(tmp_path, figures):
    series = {
        "corruption 0%": [(e, 60 * math.exp(-e / 5) + 10) for e in range(1, 16)],
        "corruption 30%": [(e, 75 * math.exp(-e / 6) + 12) for e in range(1, 16)],
    }
    path = tmp_path / "curve.png"
    save_learning_curve(path, series, title="dA on MNIST", ylabel="cross-entropy")
    pixels = chart(path)
    assert (pixels == 255).all(axis=2).mean() > 0.5  # a white background
    assert (pixels < 100).all(axis=2).any()  # dark axes and text
    # Two curves in two colours, both with plenty of pixels (lines, markers, legend swatches).
    assert colour_mask(pixels, TAB_BLUE).sum() > 500 and colour_mask(pixels, TAB_ORANGE).sum() > 500

    (fig,) = figures
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(series)
    assert ax.get_title() == "dA on MNIST"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "cross-entropy")
    assert ax.get_yscale() == "linear"
    lines = ax.get_lines()
    assert len(lines) == 2 and lines[0].get_color() != lines[1].get_color()
    assert all(line.get_marker() not in (None, "", "None") for line in lines)
    np.testing.assert_allclose(lines[1].get_ydata(), [y for _, y in series["corruption 30%"]])


def test_learning_curve_has_no_second_colour_with_one_series(tmp_path):
    path = tmp_path / "curve.png"
    save_learning_curve(path, {"only": [(1, 3.0), (2, 2.0), (3, 1.5)]})
    pixels = chart(path)
    assert colour_present(pixels, TAB_BLUE) and not colour_present(pixels, TAB_ORANGE)


def test_learning_curve_draws_the_legend_names_and_title(tmp_path):
    points = [(1, 3.0), (2, 2.0), (3, 1.5)]
    save_learning_curve(tmp_path / "a.png", {"a": points})
    save_learning_curve(tmp_path / "b.png", {"a much longer name in the legend": points})
    save_learning_curve(tmp_path / "c.png", {"a": points}, title="a title")
    a, b, c = (chart(tmp_path / f"{n}.png") for n in "abc")
    assert (a != b).any()  # the name is drawn
    assert (a != c).any()  # so is the title
    assert (a[:40] != c[:40]).any()  # ... at the top


def test_learning_curve_integer_epochs_get_integer_ticks(tmp_path, figures):
    for points in ([(1, 2.0), (2, 1.0), (3, 0.5)], [(1, 62.4)], [(i, 1.0 / i) for i in range(1, 16)]):
        save_learning_curve(tmp_path / "curve.png", {"cost": points})
        ax = figures[-1].axes[0]
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    # Fractional x keep fractional ticks.
    save_learning_curve(tmp_path / "curve.png", {"cost": [(0.1, 2.0), (0.2, 1.0), (0.3, 0.5)]})
    ax = figures[-1].axes[0]
    assert not all(float(t).is_integer() for t in ax.get_xticks())


def test_learning_curve_logy(tmp_path, figures):
    points = [(e, 100 * 10.0**-e) for e in range(1, 8)]  # 10 down to 1e-5
    save_learning_curve(tmp_path / "lin.png", {"cost": points})
    save_learning_curve(tmp_path / "log.png", {"cost": points}, logy=True)
    assert [f.axes[0].get_yscale() for f in figures] == ["linear", "log"]
    lin, log = chart(tmp_path / "lin.png"), chart(tmp_path / "log.png")
    assert (lin != log).any()
    # On a log axis the points of a geometric series are evenly spaced from top to bottom.
    ax = figures[1].axes[0]
    x, y = ax.transData.transform(ax.get_lines()[0].get_xydata()).T  # display pixels, y upwards
    np.testing.assert_allclose(np.diff(y), np.diff(y)[0], rtol=1e-6)
    assert np.ptp(y) > 300
    # ... and the image shows it: at epoch 4 (1e-2) the blue line is in the middle of the
    # chart, while on the linear axis it lies at the bottom.
    row, col = 500 - round(y[3]), round(x[3])
    assert 150 < row < 350
    assert colour_present(log[row - 3 : row + 4, col - 3 : col + 4], TAB_BLUE)
    assert not colour_present(lin[row - 30 : row + 30, col - 3 : col + 4], TAB_BLUE)


def test_learning_curve_logy_skips_points_that_are_not_positive(tmp_path, figures):
    path = tmp_path / "curve.png"
    save_learning_curve(path, {"a": [(1, 10.0), (2, 0.0), (3, -1.0), (4, 0.1)], "b": [(1, 0.0)]}, logy=True)
    chart(path)
    ax = figures[-1].axes[0]
    assert ax.get_yscale() == "log"
    lo, hi = ax.get_ylim()
    assert 0 < lo <= 0.1 and 10 <= hi < 1000
    # The line breaks there, as at a NaN (rather than diving to the bottom of the chart).
    save_learning_curve(tmp_path / "zero.png", {"a": [(1, 10.0), (2, 0.0), (3, 0.1)]}, logy=True)
    save_learning_curve(tmp_path / "nan.png", {"a": [(1, 10.0), (2, float("nan")), (3, 0.1)]}, logy=True)
    zero, nan = (chart(tmp_path / f"{n}.png") for n in ("zero", "nan"))
    assert colour_mask(zero, TAB_BLUE).sum() == colour_mask(nan, TAB_BLUE).sum()


def test_learning_curve_breaks_the_line_at_a_nan(tmp_path):
    save_learning_curve(tmp_path / "whole.png", {"a": [(1, 1.0), (2, 1.5), (3, 2.0)]})
    save_learning_curve(tmp_path / "nan.png", {"a": [(1, 1.0), (2, float("nan")), (3, 2.0)]})
    save_learning_curve(tmp_path / "inf.png", {"a": [(1, 1.0), (2, float("inf")), (3, 2.0)]})
    whole, nan, inf = (colour_mask(chart(tmp_path / f"{n}.png"), TAB_BLUE).sum() for n in ("whole", "nan", "inf"))
    # Both finite points are still drawn (markers), but not the line between them.
    assert 0 < nan < whole / 2
    assert inf == nan


@pytest.mark.parametrize("logy", [False, True], ids=["linear", "logy"])
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
        {"too huge": [(1, 1e308), (2, -1e308), (3, 1.0), (4, 2.0)]},
        {"many": [(i, 1.0 / (i + 1)) for i in range(2000)]},
    ],
    ids=lambda s: ",".join(s) or "no series",
)
def test_learning_curve_edge_cases(tmp_path, series, logy):
    path = tmp_path / "curve.png"
    save_learning_curve(path, series, xlabel="step", ylabel="cross-entropy", title="edge case", logy=logy)
    pixels = chart(path)
    assert (pixels < 100).all(axis=2).any()  # axes and labels were drawn
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_learning_curve_single_point_is_visible(tmp_path):
    path = tmp_path / "curve.png"
    save_learning_curve(path, {"a": [(1, 62.4)]})
    plot_area = chart(path)[50:430, 60:600]  # away from the legend
    assert colour_present(plot_area, TAB_BLUE)


def test_learning_curve_can_be_drawn_from_threads(tmp_path):
    def draw(i):
        path = tmp_path / f"curve{i}.png"
        save_learning_curve(path, {f"run {i}": [(e, 1.0 / (e + i)) for e in range(1, 20)]}, title=f"run {i}")
        return path

    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(draw, range(8)))
    for path in paths:
        assert colour_present(chart(path), TAB_BLUE)


def test_learning_curve_uses_no_pyplot(tmp_path):
    code = (
        "import sys; from dae.plots import save_learning_curve; "
        f"save_learning_curve({str(tmp_path / 'c.png')!r}, {{'a': [(1, 1.0), (2, 0.5)]}}); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    chart(tmp_path / "c.png")


# ------------------------------------------------------------------------- atomicity


def _draw_all():
    x = np.random.default_rng(6).random((2, 4))
    return [
        lambda p: save_filters(p, x.T, (2, 2)),
        lambda p: save_reconstructions(p, x, x, x, (2, 2)),
        lambda p: save_learning_curve(p, {"a": [(1, 2.0), (2, 1.0)]}),
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["filters", "reconstructions"])
def test_failed_encoding_leaves_no_file(tmp_path, monkeypatch, which):
    def broken_save(self, *args, **kwargs):
        raise OSError("encoder broke")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    draw = _draw_all()[which]
    with pytest.raises(OSError, match="encoder broke"):
        draw(tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []  # neither the PNG nor a temporary file


@pytest.mark.parametrize("broken", ["savefig", "draw line"])
def test_failed_chart_drawing_leaves_no_file_and_keeps_the_old_png(tmp_path, monkeypatch, broken):
    def fail(*args, **kwargs):
        raise RuntimeError("drawing broke")

    if broken == "savefig":
        monkeypatch.setattr(Figure, "savefig", fail)
    else:  # an error in the middle of rendering, inside savefig
        monkeypatch.setattr(Line2D, "draw", fail)
    with pytest.raises(RuntimeError, match="drawing broke"):
        save_learning_curve(tmp_path / "new.png", {"a": [(1, 2.0), (2, 1.0)]})
    assert list(tmp_path.iterdir()) == []  # neither the PNG nor a temporary file

    old = tmp_path / "old.png"
    old.write_bytes(b"old picture")
    with pytest.raises(RuntimeError, match="drawing broke"):
        save_learning_curve(old, {"a": [(1, 2.0), (2, 1.0)]})
    assert [p.name for p in tmp_path.iterdir()] == ["old.png"]
    assert old.read_bytes() == b"old picture"


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
