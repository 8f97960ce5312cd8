"""A folder of image files as data: classes from subfolders, grey levels as Pillow makes them, one
common size, and a clear error naming any file that cannot be read."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dae import LadderRunConfig, SdARunConfig, TrainRunConfig, load_data, load_model
from dae.cli import main
from dae.config import ConfigError, DeepRunConfig, from_dict, load_config_file, to_dict
from dae.data import is_image_folder

from test_data import expect_data_error, make_mnist_folder


def save(path, pixels, **kwargs):
    """Write the array ``pixels`` as an image file at ``path`` (its folders made); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path, **kwargs)
    return path


def constant(value, height=4, width=6):
    return np.full((height, width), value, np.uint8)


def random_images(folder, n, height, width, seed=0):
    """``n`` random grey PNG images of ``height`` x ``width`` pixels in ``folder``."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        save(folder / f"{k:03d}.png", rng.integers(0, 256, (height, width), dtype=np.uint8))
    return folder


def levels(dataset):
    """The training rows back as 0..255 grey levels."""
    return (dataset.train.x * 255).round().to(torch.int64)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- what is read, and in which order -------------------------------------------------------------


def test_subfolders_are_classes_in_sorted_order_and_hidden_or_other_files_are_ignored(tmp_path):
    root = tmp_path / "parts"
    # Each image is filled with its own grey level, to tell the rows apart.
    for cls, name, value in [("ok", "2.png", 30), ("ok", "10.png", 20), ("dented", "b.png", 50),
                             ("dented", "a.PNG", 40), ("scratched", "x.png", 60), ("scratched", "deeper/y.png", 70)]:
        save(root / cls / name, constant(value))
    save(root / ".thumbnails" / "t.png", constant(255))
    save(root / "ok" / ".hidden.png", constant(255))
    (root / "ok" / "notes.txt").write_text("not an image")
    (root / "README").write_text("not a class either")

    dataset = load_data(root)
    assert dataset.classes == ("dented", "ok", "scratched")  # sorted names are the labels 0..K-1
    assert dataset.train.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert dataset.train.y.dtype == torch.int64
    # Within a class, files in sorted order ("10.png" before "2.png"), subfolders after files.
    assert levels(dataset)[:, 0].tolist() == [40, 50, 20, 30, 60, 70]
    assert (levels(dataset) == levels(dataset)[:, :1]).all()  # each row is one constant image
    assert dataset.name == "parts" and dataset.image_shape == (4, 6)
    assert dataset.train.x.shape == (6, 24) and dataset.train.x.dtype == torch.float32
    assert dataset.valid is None and dataset.test is None  # the whole folder is the training split
    assert is_image_folder(root)


def test_images_directly_in_the_folder_are_unlabelled(tmp_path):
    for k in range(3):
        save(tmp_path / "photos" / f"{k}.png", constant(10 * k))
    dataset = load_data(tmp_path / "photos")
    assert dataset.train.y is None and dataset.classes is None
    assert levels(dataset)[:, 0].tolist() == [0, 10, 20]


def test_grey_levels_are_pillows_convert_L_divided_by_255(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "mixed"
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    files = [save(folder / "1_grey.png", rng.integers(0, 256, (5, 7), dtype=np.uint8)),
             save(folder / "2_colour.jpg", rgb, quality=90),
             save(folder / "3_alpha.png", rgba),
             save(folder / "4_bitmap.bmp", rgb)]
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(folder / "5_palette.gif")
    files.append(folder / "5_palette.gif")
    dataset = load_data(folder)
    for row, path in zip(dataset.train.x, files, strict=True):
        with Image.open(path) as im:
            expected = np.asarray(im.convert("L"), np.float32).reshape(-1) / 255
        assert torch.equal(row, torch.from_numpy(expected)), path.name
    assert 0 <= float(dataset.train.x.min()) and float(dataset.train.x.max()) <= 1
    # A colour image really is made grey: a pure red image is the luma of red (299/1000), not 0 or 1.
    save(tmp_path / "red" / "r.png", np.broadcast_to(np.array([255, 0, 0], np.uint8), (2, 2, 3)))
    assert levels(load_data(tmp_path / "red")).unique().tolist() == [76]


def test_16_bit_images_are_scaled_to_8_bits_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896], [65535, 1000, 60000]], np.uint16)
    path = save(tmp_path / "deep" / "i16.png", values)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # Pillow reads it as 16-bit integers
    grey = levels(load_data(tmp_path / "deep"))
    assert grey.tolist() == [[0, 1, 128, 255, 4, 233]]  # v / 257, rounded: 65535 -> 255


# --- one common size ------------------------------------------------------------------------------


def test_the_default_size_is_the_first_images_and_others_are_resized_to_it(tmp_path):
    folder = tmp_path / "sizes"
    save(folder / "a.png", constant(90, height=4, width=6))
    save(folder / "b.png", constant(200, height=9, width=5))  # another size and aspect ratio
    halves = np.zeros((8, 12), np.uint8)
    halves[:, 6:] = 255  # dark left half, bright right half
    save(folder / "c.png", halves)
    dataset = load_data(folder)
    assert dataset.image_shape == (4, 6) and dataset.train.x.shape == (3, 24)
    grey = levels(dataset).reshape(3, 4, 6)
    assert (grey[1] == 200).all()  # a constant image stays constant when resized
    assert (grey[2][:, :2] == 0).all() and (grey[2][:, -2:] == 255).all()  # the halves stay where they were


def test_image_size_resizes_every_image(tmp_path):
    folder = random_images(tmp_path / "r", 3, 6, 8)
    dataset = load_data(folder, image_size=(3, 5))
    assert dataset.image_shape == (3, 5) and dataset.train.x.shape == (3, 15)
    same = load_data(folder, image_size=(6, 8))  # the images' own size: nothing changes
    assert torch.equal(same.train.x, load_data(folder).train.x)
    with pytest.raises(ValueError, match="image_size"):
        load_data(folder, image_size=(0, 5))
    expect_data_error(load_data, folder, image_size=(10**6, 10**6), match="more pixels than Pillow opens")


# --- mistakes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content", [
    ("garbage.png", b"these bytes are not an image"),
    ("empty.jpg", b""),
    ("header_only.png", b"\x89PNG\r\n\x1a\n" + bytes(30)),
])
def test_a_file_that_is_not_a_readable_image_is_a_data_error_naming_it(tmp_path, name, content):
    folder = random_images(tmp_path / "imgs", 2, 4, 4)
    (folder / name).write_bytes(content)
    message = expect_data_error(load_data, folder, match=name)
    assert message.startswith(str(folder / name))


def test_a_truncated_image_is_a_data_error_naming_it(tmp_path):
    folder = random_images(tmp_path / "imgs", 2, 30, 30)
    whole = (folder / "001.png").read_bytes()
    (folder / "001.png").write_bytes(whole[: len(whole) // 2])
    message = expect_data_error(load_data, folder, match="001.png")
    assert message.startswith(str(folder / "001.png"))


def test_folders_without_images_and_ambiguous_folders_are_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    expect_data_error(load_data, tmp_path / "empty", match="is empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("hello")
    message = expect_data_error(load_data, tmp_path / "text", match="no image files")
    assert ".png" in message and "MNIST-format" in message  # says what dae reads
    save(tmp_path / "classes" / "a" / "1.png", constant(1))
    (tmp_path / "classes" / "b").mkdir()
    expect_data_error(load_data, tmp_path / "classes", match=f"{tmp_path / 'classes' / 'b'}: a class subfolder")
    save(tmp_path / "mixed" / "top.png", constant(1))
    save(tmp_path / "mixed" / "cls" / "1.png", constant(1))
    expect_data_error(load_data, tmp_path / "mixed", match="both directly (top.png) and in a subfolder (cls)")


def test_image_size_with_data_that_is_not_a_folder_of_images_is_a_data_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 9), np.float32))
    expect_data_error(load_data, tmp_path / "x.npy", image_size=(3, 3), match="not a folder of images")
    expect_data_error(load_data, "mnist", image_size=(3, 3), match="not a folder of images")
    folder = make_mnist_folder(tmp_path / "fashion", gz=False)
    expect_data_error(load_data, folder, image_size=(3, 3), match="not a folder of images")


def test_an_mnist_format_folder_is_still_mnist_even_with_images_beside(tmp_path):
    folder = make_mnist_folder(tmp_path / "fashion", gz=True)
    save(folder / "preview.png", constant(1))
    assert not is_image_folder(folder) and not is_image_folder("mnist")
    dataset = load_data(folder)
    assert dataset.image_shape == (4, 3) and dataset.test is not None and dataset.classes is None


# --- the command line -------------------------------------------------------------------------------


def test_dae_train_on_a_folder_of_images_draws_filters_of_the_image_shape(tmp_path, capsys):
    folder = random_images(tmp_path / "imgs", 40, 5, 7)
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", folder, "--epochs", 1, "--hidden", 4, "--batch-size", 10,
                       "--out", out, "--quiet")
    assert code == 0, err
    with Image.open(out / "filters.png") as im:
        assert im.size == (7 * 2 + 1, 5 * 2 + 1)  # 4 filters of 5x7 (height x width) in a 2x2 grid
    assert json.loads((out / "config.json").read_text())["image_shape"] == [5, 7]
    assert json.loads((out / "summary.json").read_text())["n_visible"] == 35

    resized = tmp_path / "resized"
    code, _, err = run(capsys, "train", "--data", folder, "--image-size", "3,4", "--epochs", 1, "--hidden", 4,
                       "--batch-size", 10, "--out", resized, "--quiet")
    assert code == 0, err
    assert json.loads((resized / "config.json").read_text())["image_shape"] == [3, 4]
    assert json.loads((resized / "run_config.json").read_text())["image_size"] == [3, 4]
    assert load_model(resized).n_visible == 12


@pytest.fixture
def resized_model(tmp_path, capsys):
    """A dA trained on 5x7 images resized to 3x4, and its folder of images."""
    folder = random_images(tmp_path / "imgs", 20, 5, 7)
    out = tmp_path / "model"
    assert run(capsys, "train", "--data", folder, "--image-size", "3,4", "--epochs", 1, "--hidden", 3,
               "--batch-size", 10, "--out", out, "--quiet")[0] == 0
    return out, folder


def test_score_and_encode_read_a_folder_of_images_at_the_models_image_size(tmp_path, capsys, resized_model):
    model, folder = resized_model
    code, out, err = run(capsys, "score", "--model", model, "--data", folder, "--out", tmp_path / "s.npy")
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape == (20,)
    code, out, err = run(capsys, "encode", "--model", model, "--data", folder, "--image-size", "3,4",
                         "--out", tmp_path / "c.npy")
    assert code == 0, err
    codes = np.load(tmp_path / "c.npy")
    x = load_data(folder, image_size=(3, 4)).train.x
    with torch.no_grad():
        expected = load_model(model).encode(x).numpy()
    np.testing.assert_allclose(codes, expected, rtol=1e-6)
    # Another size does not fit the model: one line, exit 2.
    code, _, err = run(capsys, "score", "--model", model, "--data", folder, "--image-size", "5,7",
                       "--out", tmp_path / "t.npy")
    assert code == 2 and err.startswith("dae: error: ") and err.count("\n") == 1 and "values per row" in err


def test_dae_sda_learns_the_classes_of_subfolders_and_keeps_their_names(tmp_path, capsys):
    for k, cls in enumerate(("bolt", "nut")):
        random_images(tmp_path / "parts" / cls, 15, 4, 4, seed=k)
    out = tmp_path / "sda"
    code, _, err = run(capsys, "sda", "--data", tmp_path / "parts", "--hidden", 3, "--pretrain-epochs", 1,
                       "--finetune-epochs", 2, "--batch-size", 5, "--out", out, "--quiet")
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())
    assert saved["classes"] == ["bolt", "nut"] and saved["n_classes"] == 2 and saved["image_shape"] == [4, 4]


@pytest.mark.parametrize("argv, phrase", [
    (["train", "--data", "{damaged}"], "bad.png: not an image Pillow can read"),
    (["train", "--data", "{empty}"], "is empty"),
    (["train", "--data", "{npy}", "--image-size", "3"], "x.npy: not a folder of images"),
    (["train", "--data", "{npy}", "--image-size", "3", "--stream"], "x.npy: not a folder of images"),
    (["sda", "--image-size", "3,3"], "the bundled MNIST: not a folder of images"),
    (["ladder", "--data", "{mnist_like}", "--image-size", "3,3"], "not a folder of images"),
    (["train", "--data", "{images}", "--image-size", "0"], "--image-size: expected H,W or N"),
    (["train", "--data", "{images}", "--image-size", "3,4,5"], "--image-size: expected H,W or N"),
    (["train", "--data", "{images}", "--image-size", "big"], "--image-size: expected H,W or N"),
    (["score", "--model", "{npy}", "--data", "{images}", "--image-size", "-2", "--out", "{out}.npy"],
     "--image-size: expected H,W or N"),
])
def test_image_mistakes_on_the_command_line_get_one_line_and_exit_status_2(tmp_path, capsys, argv, phrase):
    files = {"damaged": random_images(tmp_path / "damaged", 2, 3, 3), "empty": tmp_path / "empty",
             "npy": tmp_path / "x.npy", "images": random_images(tmp_path / "images", 2, 3, 3),
             "mnist_like": make_mnist_folder(tmp_path / "mnist_like", gz=False), "out": tmp_path / "out"}
    (files["damaged"] / "bad.png").write_bytes(b"garbage")
    files["empty"].mkdir()
    np.save(files["npy"], np.zeros((20, 9), np.float32))
    argv = [a.format(**files) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(files["out"])]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("dae: error: ") and err.count("\n") == 1, err
    assert phrase in err
    assert not files["out"].exists()


# --- the setting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [TrainRunConfig, SdARunConfig, LadderRunConfig, DeepRunConfig])
def test_image_size_round_trips_through_a_config_and_is_checked(cls, tmp_path):
    assert cls().image_size is None  # the first image's size
    config = cls(image_size=(3, 4))
    again = from_dict(cls, json.loads(json.dumps(to_dict(config))))
    assert again == config and again.image_size == (3, 4)
    (tmp_path / "c.toml").write_text("image_size = [5, 6]\n")
    assert load_config_file(tmp_path / "c.toml", cls).image_size == (5, 6)
    for bad in [(0, 4), (3,), (3, 4, 5), (3.0, 4), "3,4", 3]:
        with pytest.raises(ConfigError, match="image_size"):
            cls(image_size=bad)
