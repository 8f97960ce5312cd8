"""The `dae` command: its outputs, and a clean one-line error for every user mistake."""

import json
import subprocess
import sys

import numpy as np
import torch
import pytest
from PIL import Image

from dae import load_model
from dae.cli import main


@pytest.fixture
def tiny_npy(tmp_path):
    """400 binary 'images' of 6x6 pixels."""
    x = (np.random.default_rng(0).random((400, 36)) < 0.3).astype(np.float32)
    path = tmp_path / "tiny.npy"
    np.save(path, x)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_every_output(tmp_path, tiny_npy, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--data", tiny_npy, "--hidden", 16, "--epochs", 3, "--out", out)
    assert code == 0, err
    assert "Training epoch 1, cost " in stdout and "Training epoch 3, cost " in stdout
    assert "ran for" in stdout
    names = {p.name for p in out.iterdir()}
    assert names == {"filters.png", "reconstructions.png", "learning_curve.png", "metrics.jsonl",
                     "summary.json", "model.safetensors", "config.json", "checkpoint.safetensors"}
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert all({"epoch", "cost", "seconds"} <= m.keys() for m in metrics)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_cost"] == metrics[-1]["cost"]
    assert summary["epochs"] == 3 and summary["n_hidden"] == 16 and summary["n_train"] == 400
    assert summary["corruption_level"] == 0.3 and summary["train_seconds"] > 0
    model = load_model(out)
    assert model.n_visible == 36 and model.n_hidden == 16
    with Image.open(out / "filters.png") as im:
        assert im.size == (6 * 4 + 3, 6 * 4 + 3)  # 16 filters of 6x6 in a 4x4 grid, 1-pixel spacing


def test_train_on_mnist_makes_the_tutorials_289_pixel_filter_picture(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--epochs", 1, "--hidden", 100, "--out", out, "--quiet")
    assert code == 0, err
    with Image.open(out / "filters.png") as im:
        assert im.size == (289, 289)
    assert json.loads((out / "summary.json").read_text())["n_train"] == 50000


def test_tutorial_runs_end_to_end_on_a_small_setting(tmp_path, tiny_npy, capsys):
    out = tmp_path / "tut"
    code, stdout, err = run(capsys, "tutorial", "--data", tiny_npy, "--hidden", 9, "--epochs", 2, "--out", out)
    assert code == 0, err
    assert (out / "filters_corruption_0.png").is_file() and (out / "filters_corruption_30.png").is_file()
    assert (out / "learning_curve.png").is_file()
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert [r["corruption_level"] for r in runs] == [0.0, 0.3]
    assert all(r["final_cost"] > 0 and r["train_seconds"] > 0 for r in runs)
    assert stdout.count("Training epoch 2, cost") == 2


@pytest.mark.parametrize("noise", ["gaussian", "salt-and-pepper"])
def test_every_noise_process_can_be_chosen_from_the_command_line(tmp_path, tiny_npy, capsys, noise):
    out = tmp_path / noise
    code, _, err = run(capsys, "train", "--data", tiny_npy, "--noise", noise, "--hidden", 5, "--epochs", 2,
                       "--out", out, "--quiet")
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["noise"] == noise
    assert load_model(out).noise == noise


def test_same_seed_same_model_from_the_command_line(tmp_path, tiny_npy, capsys):
    for name in ("a", "b"):
        assert run(capsys, "train", "--data", tiny_npy, "--hidden", 5, "--epochs", 2, "--out", tmp_path / name,
                   "--quiet")[0] == 0
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    assert all(np.array_equal(p.detach(), q.detach()) for p, q in zip(a.parameters(), b.parameters()))


def _bad_data(tmp_path):
    rng = np.random.default_rng(0)
    files = {}
    x = rng.random((50, 16)).astype(np.float32)
    x[3, 4] = np.nan
    np.save(files.setdefault("nan", tmp_path / "nan.npy"), x)
    np.save(files.setdefault("inf", tmp_path / "inf.npy"), np.full((50, 16), np.inf, np.float32))
    np.save(files.setdefault("range", tmp_path / "range.npy"), rng.random((50, 16)).astype(np.float32) * 3)
    np.save(files.setdefault("empty", tmp_path / "empty.npy"), np.zeros((0, 16), np.float32))
    np.save(files.setdefault("flat", tmp_path / "flat.npy"), np.zeros(16, np.float32))
    files.setdefault("garbage", tmp_path / "garbage.npy").write_bytes(b"not an array at all")
    files.setdefault("csv", tmp_path / "bad.csv").write_text("0.1,0.2\n0.3,oops\n")
    files.setdefault("notdir", tmp_path / "a_file")
    files["notdir"].write_text("x")
    return files


BAD_CALLS = [
    (["train", "--corruption", "1.0"], "corruption"),
    (["train", "--corruption", "-0.1"], "corruption"),
    (["train", "--corruption", "nan"], "corruption"),
    (["train", "--corruption", "lots"], "corruption"),
    (["train", "--hidden", "0"], "positive integer"),
    (["train", "--hidden", "-3"], "positive integer"),
    (["train", "--hidden", "2.5"], "positive integer"),
    (["train", "--epochs", "0"], "positive integer"),
    (["train", "--batch-size", "0"], "positive integer"),
    (["train", "--lr", "0"], "positive number"),
    (["train", "--lr", "-0.1"], "positive number"),
    (["train", "--lr", "nan"], "positive number"),
    (["train", "--lr", "inf"], "positive number"),
    (["train", "--seed", "-1"], "seed"),
    (["train", "--loss", "hinge"], "loss"),
    (["train", "--activation", "softmax"], "activation"),
    (["train", "--noise", "pink"], "noise"),
    (["train", "--bogus"], "unrecognized"),
    (["fly"], "invalid choice"),
    ([], "required"),
    (["train", "--data", "{missing}"], "no such"),
    (["train", "--data", "{nan}"], "non-finite"),
    (["train", "--data", "{inf}"], "non-finite"),
    (["train", "--data", "{range}"], "--loss squared-error"),
    (["train", "--data", "{empty}"], "empty"),
    (["train", "--data", "{flat}"], "row"),
    (["train", "--data", "{garbage}"], "garbage.npy"),
    (["train", "--data", "{csv}"], "bad.csv"),
    (["train", "--data", "{range}", "--batch-size", "60", "--loss", "squared-error"], "larger than"),
    (["train", "--out", "{notdir}"], "not a folder"),
    (["train", "--out", "{nonempty}"], "not empty"),
    (["tutorial", "--data", "{nan}"], "non-finite"),
    (["tutorial", "--epochs", "-1"], "positive integer"),
]


@pytest.mark.parametrize("argv, phrase", BAD_CALLS, ids=[" ".join(a) or "nothing" for a, _ in BAD_CALLS])
def test_user_mistakes_get_one_clean_line_and_exit_status_2(tmp_path, capsys, argv, phrase):
    files = _bad_data(tmp_path)
    files["missing"] = tmp_path / "missing.npy"
    files["nonempty"] = tmp_path / "full"
    files["nonempty"].mkdir()
    (files["nonempty"] / "keep.txt").write_text("precious")
    out = tmp_path / "out"
    argv = [a.format(**files) for a in argv]
    if argv and "--out" not in argv:
        argv += ["--out", str(out)]
    code, stdout, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("dae: error: ") and err.count("\n") == 1, err
    assert phrase in err
    assert not out.exists()  # nothing written
    assert (files["nonempty"] / "keep.txt").read_text() == "precious"


def test_out_of_range_data_is_accepted_with_squared_error(tmp_path, capsys):
    files = _bad_data(tmp_path)
    code, _, err = run(capsys, "train", "--data", files["range"], "--loss", "squared-error", "--hidden", 4,
                       "--epochs", 1, "--batch-size", 10, "--lr", "0.01", "--out", tmp_path / "ok", "--quiet")
    assert code == 0, err


def test_the_installed_command_reports_errors_without_a_traceback(tmp_path):
    for argv in (["train", "--lr", "-1"], ["train", "--data", str(tmp_path / "nope.csv")]):
        p = subprocess.run([sys.executable, "-m", "dae", *argv, "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and p.stderr.startswith("dae: error: ")
        assert "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "dae", "train", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "--corruption" in p.stdout and "--untied" in p.stdout


def test_every_subcommand_has_help(capsys):
    for command in ("train", "tutorial"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        assert "--data" in capsys.readouterr().out


@pytest.fixture
def trained(tmp_path, tiny_npy, capsys):
    out = tmp_path / "model"
    assert run(capsys, "train", "--data", tiny_npy, "--hidden", 7, "--epochs", 2, "--out", out, "--quiet")[0] == 0
    return out


def test_encode_writes_the_codes_of_every_row(tmp_path, tiny_npy, trained, capsys):
    code, stdout, err = run(capsys, "encode", "--model", trained, "--data", tiny_npy, "--out", tmp_path / "f.npy")
    assert code == 0, err
    features = np.load(tmp_path / "f.npy")
    x = np.load(tiny_npy)
    with torch.no_grad():
        expected = load_model(trained).encode(torch.from_numpy(x)).numpy()
    assert features.shape == (400, 7) and np.allclose(features, expected, atol=1e-6)
    assert json.loads(stdout)["features"] == 7


def test_score_writes_one_reconstruction_error_per_row_and_summarises_them(tmp_path, tiny_npy, trained, capsys):
    for name in ("s.npy", "s.csv"):
        code, stdout, err = run(capsys, "score", "--model", trained, "--data", tiny_npy, "--out", tmp_path / name)
        assert code == 0, err
    scores = np.load(tmp_path / "s.npy")
    assert np.allclose(np.loadtxt(tmp_path / "s.csv"), scores)
    with torch.no_grad():
        expected = load_model(trained).reconstruction_error(torch.from_numpy(np.load(tiny_npy))).numpy()
    assert scores.shape == (400,) and np.allclose(scores, expected, rtol=1e-5)
    summary = json.loads(stdout)
    assert summary["rows"] == 400 and np.isclose(summary["mean"], scores.mean())
    assert summary["min"] <= summary["p50"] <= summary["max"]


def test_encode_takes_a_layer_of_an_sda(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((300, 16)).astype(np.float32)
    np.savez(tmp_path / "lab.npz", x_train=x, y_train=(x[:, 0] > 0.5).astype(np.int64))
    assert main(["sda", "--data", str(tmp_path / "lab.npz"), "--hidden", "9,5", "--pretrain-epochs", "1",
                 "--finetune-epochs", "2", "--batch-size", "10", "--out", str(tmp_path / "sda"), "--quiet"]) == 0
    for layer, width in ((1, 9), (2, 5)):
        out = tmp_path / f"l{layer}.npy"
        assert run(capsys, "encode", "--model", tmp_path / "sda", "--data", tmp_path / "lab.npz",
                   "--layer", layer, "--out", out)[0] == 0
        assert np.load(out).shape == (300, width)


@pytest.fixture(scope="module")
def sda_run(tmp_path_factory):
    """A small trained SdA (its folder holds a checkpoint too) and its labelled data."""
    folder = tmp_path_factory.mktemp("sda")
    x = np.random.default_rng(0).random((120, 36)).astype(np.float32)
    np.savez(folder / "lab.npz", x_train=x, y_train=(x[:, 0] > 0.5).astype(np.int64))
    assert main(["sda", "--data", str(folder / "lab.npz"), "--hidden", "6", "--pretrain-epochs", "1",
                 "--finetune-epochs", "1", "--batch-size", "10", "--quiet", "--out", str(folder / "run")]) == 0
    return folder / "run", folder / "lab.npz"


ENCODE_MISTAKES = [
    (["encode", "--model", "{nomodel}", "--data", "{data}", "--out", "{out}"], "no such model folder"),
    (["encode", "--model", "{model}", "--data", "{wide}", "--out", "{out}"], "values per row"),
    (["encode", "--model", "{model}", "--data", "{data}", "--out", "{txt}"], "must end in .npy"),
    (["encode", "--model", "{model}", "--data", "{data}", "--out", "{data}"], "already exists"),
    (["encode", "--model", "{model}", "--data", "{data}", "--split", "test", "--out", "{out}"], "no test split"),
    (["encode", "--model", "{model}", "--data", "{data}", "--layer", "2", "--out", "{out}"], "one hidden layer"),
    (["score", "--model", "{model}", "--data", "{missing}", "--out", "{out}"], "no such file"),
    (["score", "--model", "{model}", "--data", "{data}", "--out", "{nodir}"], "no such folder"),
    (["score", "--model", "{data}", "--data", "{data}", "--out", "{out}"], "no such model folder"),
    (["score", "--data", "{data}", "--out", "{out}"], "--model"),
    (["score", "--model", "{sda}", "--data", "{data}", "--out", "{out}"], "needs a DenoisingAutoencoder"),
    (["sda", "--pretrained", "{model}", "--data", "{labelled}", "--out", "{outdir}"], "not a StackedDenoisingAutoencoder"),
    (["sda", "--resume", "{model}"], "not a StackedDenoisingAutoencoder"),
    (["train", "--resume", "{sda}"], "not a DenoisingAutoencoder"),
]


@pytest.mark.parametrize("argv, phrase", ENCODE_MISTAKES, ids=[f"{a[0]}-{p}" for a, p in ENCODE_MISTAKES])
def test_encode_and_score_mistakes_are_clean_errors(tmp_path, tiny_npy, trained, sda_run, capsys, argv, phrase):
    np.save(tmp_path / "wide.npy", np.zeros((5, 40), np.float32))
    names = {"model": trained, "data": tiny_npy, "wide": tmp_path / "wide.npy", "out": tmp_path / "o.npy",
             "txt": tmp_path / "o.txt", "nomodel": tmp_path / "nope", "missing": tmp_path / "missing.npy",
             "nodir": tmp_path / "no" / "o.npy", "sda": sda_run[0], "labelled": sda_run[1],
             "outdir": tmp_path / "newdir"}
    code, _, err = run(capsys, *[a.format(**names) for a in argv])
    assert code == 2 and err.startswith("dae: error: ") and err.count("\n") == 1, err
    assert phrase in err
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o.txt").exists()


def test_a_learning_rate_that_blows_up_stops_with_a_divergence_message(tmp_path, tiny_npy, capsys):
    code, _, err = run(capsys, "train", "--data", tiny_npy, "--lr", "1e7", "--hidden", 8, "--epochs", 3,
                       "--out", tmp_path / "d")
    assert code == 2 and err.startswith("dae: error: training diverged at epoch 1")
    assert "lower learning rate" in err
