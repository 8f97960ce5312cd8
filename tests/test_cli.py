"""The `dae` command: its help, its outputs, --config, and a clean one-line error for every user mistake."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dae import SDA_PRESETS, DeepRunConfig, LadderRunConfig, SdARunConfig, TrainRunConfig, load_model
from dae.cli import main
from dae.config import ANOMALY_CODE_WEIGHT, ANOMALY_NEIGHBORS, ANOMALY_SCORE, from_dict, to_dict


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
    assert names == {"filters.png", "reconstructions.png", "learning_curve.png", "metrics.jsonl", "summary.json",
                     "model.safetensors", "config.json", "run_config.json", "checkpoint.safetensors"}
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


def test_run_config_json_is_the_whole_resolved_config_and_reruns_the_run(tmp_path, tiny_npy, capsys):
    first, again = tmp_path / "first", tmp_path / "again"
    assert run(capsys, "train", "--data", tiny_npy, "--hidden", 6, "--epochs", 2, "--momentum", 0.5, "--seed", 7,
               "--out", first, "--quiet")[0] == 0
    saved = json.loads((first / "run_config.json").read_text())
    config = from_dict(TrainRunConfig, saved)
    assert saved == to_dict(config)  # every setting, written out in full
    assert (config.model.n_hidden, config.training.epochs, config.training.momentum, config.seed) == (6, 2, 0.5, 7)
    assert config.data == str(tiny_npy) and config.model.corruption_level == TrainRunConfig().model.corruption_level
    assert config.training.shuffle is False  # resolved: None means "shuffle only a stream"
    assert run(capsys, "train", "--config", first / "run_config.json", "--out", again, "--quiet")[0] == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (first, again))
    assert b["final_cost"] == a["final_cost"] and b["n_hidden"] == 6 and b["seed"] == 7
    assert all(torch.equal(p, q) for p, q in zip(load_model(first).parameters(), load_model(again).parameters()))


def test_a_toml_config_sets_what_it_names_and_options_override_it(tmp_path, tiny_npy, capsys):
    (tmp_path / "c.toml").write_text(f"data = '{tiny_npy}'\nseed = 5\n[model]\nn_hidden = 4\nnoise = 'gaussian'\n"
                                     "[training]\nepochs = 3\nlearning_rate = 0.05\n")
    out = tmp_path / "o"
    assert run(capsys, "train", "--config", tmp_path / "c.toml", "--epochs", 1, "--out", out, "--quiet")[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_hidden"], summary["noise"], summary["seed"]) == (4, "gaussian", 5)
    assert summary["learning_rate"] == 0.05
    assert summary["epochs"] == 1  # the option, over the file's 3
    assert summary["batch_size"] == TrainRunConfig().training.batch_size  # not in the file: the default


def test_an_sda_run_config_or_summary_reruns_the_sda(tmp_path, capsys):
    x = np.random.default_rng(1).random((120, 16)).astype(np.float32)
    np.savez(tmp_path / "lab.npz", x_train=x, y_train=(x[:, 0] > 0.5).astype(np.int64))
    first = tmp_path / "first"
    assert run(capsys, "sda", "--data", tmp_path / "lab.npz", "--hidden", "7,5", "--pretrain-epochs", 1,
               "--finetune-epochs", 3, "--batch-size", 10, "--out", first, "--quiet")[0] == 0
    summary = json.loads((first / "summary.json").read_text())
    saved = json.loads((first / "run_config.json").read_text())
    assert summary["config"] == saved and summary["preset"] == "default"
    config = from_dict(SdARunConfig, saved)
    assert config.model.hidden_layer_sizes == (7, 5) and config.finetuning.epochs == 3
    assert config.model.dropout == SDA_PRESETS["default"].model.dropout  # the preset's, not set on the line
    for name in ("run_config.json", "summary.json"):
        again = tmp_path / name.replace(".", "_")
        assert run(capsys, "sda", "--config", first / name, "--out", again, "--quiet")[0] == 0
        rerun = json.loads((again / "summary.json").read_text())
        assert rerun["best_valid_error"] == summary["best_valid_error"] and rerun["config"] == saved
        assert (again / "metrics.jsonl").read_text().count("train_loss") == 3
        losses = [[m.get("cost", m.get("train_loss")) for m in map(json.loads, (d / "metrics.jsonl").open())]
                  for d in (first, again)]
        assert losses[0] == losses[1]


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
    assert {p.name for p in out.iterdir()} == {"corruption_0", "corruption_30", "filters_corruption_0.png",
                                               "filters_corruption_30.png", "learning_curve.png", "run_config.json",
                                               "summary.json"}
    config = from_dict(TrainRunConfig, json.loads((out / "run_config.json").read_text()))
    assert config.model.n_hidden == 9 and config.training.epochs == 2 and config.data == str(tiny_npy)
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert [r["corruption_level"] for r in runs] == [0.0, 0.3]
    assert all(r["final_cost"] > 0 and r["train_seconds"] > 0 and r["n_hidden"] == 9 for r in runs)
    assert stdout.count("Training epoch 2, cost") == 2
    for level, summary in zip((0, 30), runs):
        part = out / f"corruption_{level}"
        assert {"model.safetensors", "summary.json", "metrics.jsonl", "filters.png"} <= {p.name for p in part.iterdir()}
        assert json.loads((part / "summary.json").read_text()) == summary
        assert load_model(part).corruption_level == level / 100 and load_model(part).n_hidden == 9
        assert (out / f"filters_corruption_{level}.png").read_bytes() == (part / "filters.png").read_bytes()
    with Image.open(out / "learning_curve.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100


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
    configs = {"cfg_json": ("bad.json", '{"training": {"epochs": 2'), "cfg_toml": ("bad.toml", "epochs = \n"),
               "cfg_unknown": ("unknown.json", '{"trainin": {}}'),
               "cfg_type": ("type.json", '{"training": {"epochs": "x"}}'),
               "cfg_sda": ("sda.json", '{"model": {"hidden_layer_sizes": [5]}}'),
               "cfg_da": ("da.toml", "[model]\nn_hidden = 5\n"), "cfg_version": ("v.json", '{"version": 99}'),
               "cfg_list": ("list.json", "[1, 2]"), "cfg_momentum": ("m.toml", "[training]\nmomentum = 0.9\n")}
    for key, (name, text) in configs.items():
        files[key] = tmp_path / name
        files[key].write_text(text)
    files["cfg_missing"] = tmp_path / "none.json"
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
    (["train", "--data", "{range}", "--batch-size", "60", "--loss", "squared-error"], "exceeds the 50 rows"),
    (["train", "--out", "{notdir}"], "not a folder"),
    (["train", "--out", "{nonempty}"], "not empty"),
    (["tutorial", "--data", "{nan}"], "non-finite"),
    (["tutorial", "--epochs", "-1"], "positive integer"),
    # --config files
    (["train", "--config", "{cfg_missing}"], "none.json: No such file"),
    (["train", "--config", "{cfg_json}"], "bad.json: not a valid JSON file"),
    (["train", "--config", "{cfg_toml}"], "bad.toml: not a valid TOML file"),
    (["train", "--config", "{cfg_unknown}"], "unknown setting trainin"),
    (["train", "--config", "{cfg_type}"], "training.epochs must be an integer"),
    (["train", "--config", "{cfg_sda}"], "unknown setting model.hidden_layer_sizes"),
    (["train", "--config", "{cfg_version}"], "newer"),
    (["train", "--config", "{cfg_list}"], "table of settings"),
    (["tutorial", "--config", "{cfg_toml}"], "not a valid TOML file"),
    (["sda", "--config", "{cfg_json}"], "not a valid JSON file"),
    (["sda", "--config", "{cfg_da}"], "unknown setting model.n_hidden"),
    # settings that contradict each other, on the line or between the file and the line
    (["train", "--nesterov"], "nesterov needs momentum"),
    (["tutorial", "--nesterov"], "nesterov needs momentum"),
    (["train", "--optimizer", "adam", "--momentum", "0.5"], "momentum is for sgd"),
    (["train", "--config", "{cfg_momentum}", "--optimizer", "adam"], "momentum is for sgd"),
    (["train", "--sparsity-weight", "0.1", "--activation", "tanh"], "sigmoid"),
    (["sda", "--hidden", "5,5", "--corruption", "0.1"], "1 levels for 2 layers"),
    (["sda", "--hidden", "5,5", "--pretrain-epochs", "1,2,3"], "3 values for 2 layers"),
    (["sda", "--patience", "1"], "at least 2"),
    (["sda", "--hidden", "5,,5"], "positive integer"),
    (["sda", "--preset", "fast"], "invalid choice"),
    (["train", "--resume", "{missing}"], "no checkpoint"),
    (["sda", "--resume", "{nonempty}"], "no checkpoint"),
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
    if argv and "--out" not in argv and "--resume" not in argv:
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
    (tmp_path / "c.toml").write_text("[training]\nnesterov = true\n")
    for argv in (["train", "--lr", "-1"], ["train", "--config", str(tmp_path / "c.toml")]):
        p = subprocess.run([sys.executable, "-m", "dae", *argv, "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and p.stderr.startswith("dae: error: ") and p.stderr.count("\n") == 1, p.stderr
        assert not (tmp_path / "o").exists()


TRAIN, SDA, LADDER, DEEP = TrainRunConfig(), SDA_PRESETS["default"], LadderRunConfig(), DeepRunConfig()


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _switch(on: bool) -> str:
    return "on" if on else "off"


NOT_SHOWN = object()  # an option without a default, such as --quiet
FIRST_IMAGE = "the first image's"  # what image_size None means: the size of a folder's first image

# Every option of every subcommand, and the default its help must show.
# The values come from dae.config: the help may not keep defaults of its own.
DA_HELP = {
    "--data": TRAIN.data, "--image-size": TRAIN.image_size or FIRST_IMAGE,
    "--hidden": TRAIN.model.n_hidden, "--corruption": TRAIN.model.corruption_level,
    "--noise": TRAIN.model.noise, "--loss": TRAIN.model.loss, "--activation": TRAIN.model.activation,
    "--untied": _switch(not TRAIN.model.tied), "--sparsity-target": TRAIN.model.sparsity_target,
    "--sparsity-weight": TRAIN.model.sparsity_weight, "--contraction": TRAIN.model.contraction,
    "--epochs": TRAIN.training.epochs, "--lr": TRAIN.training.learning_rate,
    "--batch-size": TRAIN.training.batch_size, "--optimizer": TRAIN.training.optimizer,
    "--momentum": TRAIN.training.momentum, "--nesterov": _switch(TRAIN.training.nesterov),
    "--weight-decay": TRAIN.training.weight_decay, "--schedule": TRAIN.training.schedule,
    "--shuffle": TRAIN.training.shuffle, "--stream": TRAIN.stream, "--seed": TRAIN.seed,
    "--checkpoint-every": TRAIN.checkpoint_every,
    "--config": NOT_SHOWN, "--out": "a new folder under ./runs/", "--quiet": NOT_SHOWN, "--device": TRAIN.device,
}
SDA_HELP = {
    "--preset": NOT_SHOWN, "--data": SDA.data, "--image-size": SDA.image_size or FIRST_IMAGE,
    "--hidden": SDA.model.hidden_layer_sizes,
    "--corruption": SDA.model.corruption_levels, "--dropout": SDA.model.dropout,
    "--finetune-corruption": SDA.model.input_corruption, "--pretrain-epochs": SDA.pretraining.epochs,
    "--pretrain-lr": SDA.pretraining.learning_rate, "--pretrain-batch-size": SDA.pretraining.batch_size,
    "--finetune-epochs": SDA.finetuning.epochs, "--finetune-lr": SDA.finetuning.learning_rate,
    "--batch-size": SDA.finetuning.batch_size, "--momentum": SDA.finetuning.momentum,
    "--schedule": SDA.finetuning.schedule, "--shuffle": SDA.finetuning.shuffle,
    "--patience": SDA.finetuning.patience_epochs, "--pseudo-labels": SDA.finetuning.pseudo_labels,
    "--seed": SDA.seed, "--no-pretrain": _switch(not SDA.pretrain),
    "--pretrained": SDA.pretrained, "--refit": SDA.refit, "--config": NOT_SHOWN, "--out": "a new folder under ./runs/", "--quiet": NOT_SHOWN,
    "--device": SDA.device, "--resume": NOT_SHOWN, "--labels": "all" if SDA.labels is None else SDA.labels,
    "--label-seed": SDA.label_seed,
}
LADDER_HELP = {
    "--data": LADDER.data, "--image-size": LADDER.image_size or FIRST_IMAGE,
    "--hidden": LADDER.model.hidden_layer_sizes, "--noise-std": LADDER.model.noise_std,
    "--input-noise-std": "the --noise-std" if LADDER.model.input_noise_std is None else LADDER.model.input_noise_std,
    "--denoising-weights": LADDER.model.denoising_weights,
    "--constant-targets": _switch(not LADDER.model.target_gradient), "--epochs": LADDER.training.epochs,
    "--lr": LADDER.training.learning_rate, "--batch-size": LADDER.training.batch_size,
    "--schedule": LADDER.training.schedule, "--seed": LADDER.seed, "--checkpoint-every": LADDER.checkpoint_every,
    "--labels": LADDER.labels, "--label-seed": LADDER.label_seed, "--config": NOT_SHOWN,
    "--out": "a new folder under ./runs/", "--quiet": NOT_SHOWN, "--device": LADDER.device, "--resume": NOT_SHOWN,
}
DEEP_HELP = {
    "--data": DEEP.data, "--image-size": DEEP.image_size or FIRST_IMAGE, "--hidden": DEEP.model.hidden_layer_sizes,
    "--code": DEEP.model.code_activation, "--tied": _switch(DEEP.model.tied),
    "--untied": _switch(not DEEP.model.tied), "--loss": DEEP.model.loss,
    "--corruption": DEEP.model.corruption_levels, "--pretrain-epochs": DEEP.pretraining.epochs,
    "--pretrain-lr": DEEP.pretraining.learning_rate, "--pretrain-batch-size": DEEP.pretraining.batch_size,
    "--epochs": DEEP.training.epochs, "--lr": DEEP.training.learning_rate, "--batch-size": DEEP.training.batch_size,
    "--optimizer": DEEP.training.optimizer, "--schedule": DEEP.training.schedule,
    "--no-pretrain": _switch(not DEEP.pretrain), "--seed": DEEP.seed, "--checkpoint-every": DEEP.checkpoint_every,
    "--config": NOT_SHOWN, "--out": "a new folder under ./runs/", "--quiet": NOT_SHOWN, "--device": DEEP.device,
    "--resume": NOT_SHOWN,
}
MODEL_HELP = {"--model": NOT_SHOWN, "--data": NOT_SHOWN,
              "--image-size": f"the image size the model was trained on, else {FIRST_IMAGE}", "--split": "train",
              "--out": NOT_SHOWN,
              "--device": TRAIN.device}
HELP = {
    "train": {**DA_HELP, "--resume": NOT_SHOWN},
    "tutorial": {k: v for k, v in DA_HELP.items() if k not in ("--corruption", "--checkpoint-every")},
    "sda": SDA_HELP,
    "ladder": LADDER_HELP,
    "deep": DEEP_HELP,
    "encode": {**MODEL_HELP, "--layer": "top"},
    "score": {**MODEL_HELP, "--score": ANOMALY_SCORE, "--code-weight": ANOMALY_CODE_WEIGHT,
              "--neighbors": ANOMALY_NEIGHBORS, "--contamination": NOT_SHOWN,
              "--reference": "the training split of --data", "--per-feature": NOT_SHOWN},
}


@pytest.mark.parametrize("command", sorted(HELP))
def test_every_option_of_every_subcommand_has_help_with_its_default_from_dae_config(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    # Each option's entry: its line, and the lines indented under it, joined.
    blocks = re.findall(r"^  -.*(?:\n {4,}.*)*", text, re.M)
    lines = {re.match(r"\s*(--[\w-]+)", b).group(1): " ".join(b.split()) for b in blocks if "--help" not in b}
    assert set(lines) == set(HELP[command])  # every option is specified here, and no other exists
    for flag, default in HELP[command].items():
        line = lines[flag]
        shown = re.search(r"\(default: ([^)]*)\)$", line)
        if default is NOT_SHOWN:
            assert shown is None, line
        else:
            assert shown is not None and shown.group(1) == _shown(default), line
        assert re.search(r"[a-z]{3}", line.split(flag, 1)[1].split("(default")[0]), f"no help text: {line}"
    assert not re.search(r"\b[A-Z]+\.[A-Z_]+\b", text)  # metavars are not settings' paths (MODEL.N_HIDDEN)
    if command == "sda":
        assert set(re.search(r"--preset \{(.*?)\}", text).group(1).split(",")) == set(SDA_PRESETS)
        assert "'default' is ours, for speed (default)" in lines["--preset"]
    if command == "tutorial":
        assert "0% and 30%" in text and "%%" not in text


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
        code, stdout, err = run(capsys, "score", "--model", trained, "--data", tiny_npy, "--out", tmp_path / name,
                                "--score", "cross-entropy", "--code-weight", 0)
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
    # a resumed run keeps its own settings: changing them is refused, not ignored
    (["train", "--resume", "{model}", "--epochs", "5"], "--epochs cannot change them"),
    (["train", "--resume", "{model}", "--config", "{data}"], "--config cannot change them"),
    (["train", "--resume", "{model}", "--out", "{outdir}"], "--out cannot change them"),
    (["sda", "--resume", "{sda}", "--finetune-epochs", "5"], "--finetune-epochs cannot change them"),
    (["sda", "--resume", "{sda}", "--preset", "best"], "--preset cannot change them"),
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
