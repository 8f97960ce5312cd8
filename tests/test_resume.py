"""Checkpoints: a run killed at any moment continues, with --resume, to the very same weights;
Ctrl-C stops cleanly; a checkpoint that is not what it claims is refused without running code."""

import json
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dae import load_model
from dae.cli import main
from dae.saving import CHECKPOINT, load_checkpoint

# About a second per epoch here: 40,000 steps of batch size 1.
ARGS = ["--hidden", "32", "--batch-size", "1", "--epochs", "4", "--lr", "0.01", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "binary.npy"
    np.save(path, (np.random.default_rng(0).random((40000, 64)) < 0.3).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "whole"
    assert main(["train", "--data", str(data), *ARGS, "--out", str(out)]) == 0
    return load_model(out)


def _start(data, out):
    return subprocess.Popen([sys.executable, "-m", "dae", "train", "--data", str(data), *ARGS, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(out, n, process, timeout=120):
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"the run did not reach epoch {n}")


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_sigkill_during_the_third_epoch_then_resume_gives_identical_weights(data, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    process = _start(data, out)
    _wait_for_epochs(out, 2, process)
    time.sleep(0.2)  # into the third epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2, "the kill should land in epoch 3"
    assert load_checkpoint(out / CHECKPOINT).state["epoch"] == 2
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert _same_weights(load_model(out), uninterrupted)
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_ctrl_c_stops_cleanly_with_a_checkpoint_and_an_interrupted_summary(data, uninterrupted, tmp_path):
    out = tmp_path / "interrupted"
    process = _start(data, out)
    _wait_for_epochs(out, 1, process)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "dae: interrupted" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["epochs_done"] >= 1
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert _same_weights(load_model(out), uninterrupted)
    assert "interrupted" not in json.loads((out / "summary.json").read_text())


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_posing_as_a_checkpoint_is_refused_and_never_runs(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--hidden", "4", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    target = tmp_path / "pwned"
    (out / CHECKPOINT).write_bytes(pickle.dumps(_Payload(str(target))))
    assert main(["train", "--resume", str(out)]) == 2
    assert "not a dae checkpoint" in capsys.readouterr().err
    assert not target.exists()


def test_resume_refuses_a_folder_without_a_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no checkpoint here" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", CHECKPOINT])
def test_a_pickle_under_any_model_or_checkpoint_name_is_refused_by_resume_and_encode(data, tmp_path, capsys, name):
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--hidden", "4", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    target = tmp_path / "pwned"
    (out / name).write_bytes(pickle.dumps(_Payload(str(target))))
    # encode first: a resume of this finished run writes its model files anew
    for argv in (["encode", "--model", str(out), "--data", str(data), "--out", str(tmp_path / "f.npy")],
                 ["train", "--resume", str(out)]):
        code = main(argv)
        err = capsys.readouterr().err
        broken = name in ("model.safetensors", "config.json") if argv[0] == "encode" else name == CHECKPOINT
        if broken:
            assert code == 2 and err.startswith("dae: error: "), err
        assert not target.exists()


SDA = ["--hidden", "12,8", "--pretrain-epochs", "2", "--finetune-epochs", "6", "--batch-size", "10", "--quiet"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.random((400, 16)).astype(np.float32)
    path = tmp_path_factory.mktemp("labelled") / "lab.npz"
    np.savez(path, x_train=x[:300], y_train=(x[:300, 0] > 0.5).astype(np.int64),
             x_test=x[300:], y_test=(x[300:, 0] > 0.5).astype(np.int64))
    return path


@pytest.mark.parametrize("stop_at", [("pretrain", 2, 1), ("finetune", None, 3)], ids=["pretraining", "fine-tuning"])
def test_an_sda_run_stopped_in_either_phase_resumes_to_the_same_model(labelled, tmp_path, monkeypatch, stop_at):
    import dae.cli

    assert main(["sda", "--data", str(labelled), *SDA, "--out", str(tmp_path / "whole")]) == 0
    real_save = dae.cli.save_checkpoint

    def save_then_stop(path, model, generator, state, optimizer_state=None, tensors=None):
        real_save(path, model, generator, state, optimizer_state, tensors)
        phase, layer, epoch = stop_at
        done = state["metrics"][-1]
        if done["phase"] == phase and done.get("layer") == layer and done["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(dae.cli, "save_checkpoint", save_then_stop)
    assert main(["sda", "--data", str(labelled), *SDA, "--out", str(tmp_path / "part")]) == 130
    assert json.loads((tmp_path / "part" / "summary.json").read_text())["interrupted"] is True
    monkeypatch.setattr(dae.cli, "save_checkpoint", real_save)
    assert main(["sda", "--resume", str(tmp_path / "part"), "--quiet"]) == 0
    whole, resumed = load_model(tmp_path / "whole"), load_model(tmp_path / "part")
    assert _same_weights(whole, resumed)
    a = json.loads((tmp_path / "whole" / "summary.json").read_text())
    b = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert (a["test_error"], a["best_valid_error"], a["best_epoch"]) == (b["test_error"], b["best_valid_error"],
                                                                          b["best_epoch"])
    lines = lambda run: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
                         for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert lines("whole") == lines("part")


def test_divergence_stops_the_run_and_leaves_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    import dae.cli

    real_save = dae.cli.save_checkpoint

    def save_then_break(path, model, generator, state, optimizer_state=None, tensors=None):
        real_save(path, model, generator, state, optimizer_state, tensors)
        with torch.no_grad():
            model.W.fill_(float("nan"))  # whatever comes next is lost

    monkeypatch.setattr(dae.cli, "save_checkpoint", save_then_break)
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--hidden", "4", "--epochs", "3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "training diverged at epoch 2" in err and "lower learning rate" in err
    checkpoint = load_checkpoint(out / CHECKPOINT)
    assert checkpoint.state["epoch"] == 1 and torch.isfinite(checkpoint.model.W).all()


def test_fine_tuning_that_blows_up_is_stopped(labelled, tmp_path, capsys):
    code = main(["sda", "--data", str(labelled), *SDA, "--finetune-lr", "1e6", "--out", str(tmp_path / "x")])
    assert code == 2 and "fine-tuning diverged at epoch" in capsys.readouterr().err
