"""Checkpoints: a run killed at any moment continues, with --resume, to the very same weights;
Ctrl-C stops cleanly; a checkpoint that is not what it claims is refused without running code."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import dae.runs
from dae import DenoisingAutoencoder, StackedDenoisingAutoencoder, load_model
from dae.cli import main
from dae.saving import CHECKPOINT, load_checkpoint, save_checkpoint

# 1024 steps of batch size 4 an epoch, in two blocks of 512 (dae.train.CHUNK_ROWS = 2048 rows).
ARGS = ["--hidden", "32", "--batch-size", "4", "--epochs", "4", "--lr", "0.01", "--quiet"]
BLOCKS_PER_EPOCH = 2

# `dae train` in a process of its own that sends itself a signal just before its n-th block of
# steps: a kill that lands at a known point inside an epoch, with nothing of the run's own
# shutdown (SIGKILL) or with the real path of a Ctrl-C (SIGINT).
SIGNAL_ITSELF = """
import os, signal, sys
import dae.steps
from dae.cli import main

sig, at = getattr(signal, sys.argv[1]), int(sys.argv[2])
# Python's own Ctrl-C handler, as in a terminal: a shell starts background jobs with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
real, calls = dae.steps.DAStep.__call__, [0]

def call(self, block, generator):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), sig)
    return real(self, block, generator)

dae.steps.DAStep.__call__ = call
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "binary.npy"
    np.save(path, (np.random.default_rng(0).random((4096, 64)) < 0.3).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "whole"
    assert main(["train", "--data", str(data), *ARGS, "--out", str(out)]) == 0
    return load_model(out)


def _run_signalled(data, out, signal_name, before_block):
    return subprocess.run([sys.executable, "-c", SIGNAL_ITSELF, signal_name, str(before_block), "train", "--data",
                           str(data), *ARGS, "--out", str(out)], capture_output=True, text=True, timeout=300)


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def _epochs(out):
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_during_the_third_epoch_then_resume_gives_identical_weights(data, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    done = _run_signalled(data, out, "SIGKILL", 2 * BLOCKS_PER_EPOCH + 2)  # epoch 3's first block has run
    assert done.returncode == -9, done.stderr
    assert _epochs(out) == [1, 2]
    checkpoint = load_checkpoint(out / CHECKPOINT)
    assert checkpoint.state["train_state"]["epoch"] == 2
    assert not (out / "model.safetensors").exists()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert _same_weights(load_model(out), uninterrupted)
    assert _epochs(out) == [1, 2, 3, 4]


def test_ctrl_c_stops_cleanly_with_a_checkpoint_and_an_interrupted_summary(data, uninterrupted, tmp_path):
    out = tmp_path / "interrupted"
    done = _run_signalled(data, out, "SIGINT", BLOCKS_PER_EPOCH + 2)  # inside epoch 2
    assert done.returncode == 130 and done.stderr.splitlines()[-1] == "dae: interrupted", done.stderr
    assert "Traceback" not in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary == {"interrupted": True, "epochs_done": 1, "epochs": 4, "final_cost": summary["final_cost"],
                       "resume": f"dae train --resume {out}"}
    assert summary["final_cost"] == json.loads((out / "metrics.jsonl").read_text())["cost"]
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert _same_weights(load_model(out), uninterrupted)
    assert "interrupted" not in json.loads((out / "summary.json").read_text())
    assert _epochs(out) == [1, 2, 3, 4]


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
            assert code == 2 and err.startswith("dae: error: ") and err.count("\n") == 1, err
        assert not target.exists()


@pytest.mark.parametrize("command, model", [
    ("train", DenoisingAutoencoder(8, 4)),
    ("sda", StackedDenoisingAutoencoder(8, [4], 2)),
], ids=["train", "sda"])
def test_a_checkpoint_from_before_the_redesign_is_refused_in_one_line(tmp_path, capsys, command, model):
    # Before, the state held the command's argparse options, and no config.
    options = {"data": "mnist", "hidden": 4, "epochs": 3, "lr": 0.1, "batch_size": 20, "seed": 123}
    save_checkpoint(tmp_path / CHECKPOINT, model, torch.Generator(),
                    {"epoch": 1, "history": [], "options": options, "metrics": [], "world_size": 1})
    assert main([command, "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dae: error: --resume {tmp_path}: ") and err.count("\n") == 1, err
    assert "older dae" in err and "start the run again" in err


SDA = ["--hidden", "12,8", "--pretrain-epochs", "2", "--pretrain-batch-size", "5", "--finetune-epochs", "6",
       "--batch-size", "5", "--quiet"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.random((400, 16)).astype(np.float32)
    path = tmp_path_factory.mktemp("labelled") / "lab.npz"
    np.savez(path, x_train=x[:300], y_train=(x[:300, 0] > 0.5).astype(np.int64),
             x_test=x[300:], y_test=(x[300:, 0] > 0.5).astype(np.int64))
    return path


@pytest.fixture(scope="module")
def whole_sda(labelled, tmp_path_factory):
    out = tmp_path_factory.mktemp("sda") / "whole"
    assert main(["sda", "--data", str(labelled), *SDA, "--out", str(out)]) == 0
    return out


def _lines(run):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stop_at", [("pretrain", 1, 2), ("pretrain", 2, 1), ("finetune", None, 3)],
                         ids=["end-of-layer-1", "pretraining", "fine-tuning"])
def test_an_sda_run_stopped_in_either_phase_resumes_to_the_same_model(labelled, whole_sda, tmp_path, monkeypatch,
                                                                       stop_at):
    real_save = dae.runs.save_checkpoint

    def save_then_stop(path, model, generator, state, optimizer_state=None, tensors=None):
        real_save(path, model, generator, state, optimizer_state, tensors)
        phase, layer, epoch = stop_at
        done = state["metrics"][-1]
        if done["phase"] == phase and done.get("layer") == layer and done["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(dae.runs, "save_checkpoint", save_then_stop)
    part = tmp_path / "part"
    assert main(["sda", "--data", str(labelled), *SDA, "--out", str(part)]) == 130
    summary = json.loads((part / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["resume"] == f"dae sda --resume {part}"
    assert load_checkpoint(part / CHECKPOINT).state["phase"] == stop_at[0]
    monkeypatch.setattr(dae.runs, "save_checkpoint", real_save)
    assert main(["sda", "--resume", str(part), "--quiet"]) == 0
    assert _same_weights(load_model(whole_sda), load_model(part))
    a = json.loads((whole_sda / "summary.json").read_text())
    b = json.loads((part / "summary.json").read_text())
    keys = ("test_error", "best_valid_error", "best_epoch", "stopped_by", "finetune_epochs_run", "config")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert _lines(whole_sda) == _lines(part)


def test_an_sda_run_with_pseudo_labels_stopped_in_fine_tuning_resumes_to_the_same_model(labelled, tmp_path,
                                                                                          monkeypatch):
    """The pseudo-label weight follows the epoch, and the labelled minibatches the generator: both resume."""
    args = ["sda", "--data", str(labelled), *SDA, "--labels", "40", "--pseudo-labels", "3"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main([*args, "--out", str(whole)]) == 0
    real_save = dae.runs.save_checkpoint

    def save_then_stop(path, model, generator, state, optimizer_state=None, tensors=None):
        real_save(path, model, generator, state, optimizer_state, tensors)
        if state["metrics"][-1]["phase"] == "finetune" and state["metrics"][-1]["epoch"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(dae.runs, "save_checkpoint", save_then_stop)
    assert main([*args, "--out", str(part)]) == 130
    monkeypatch.setattr(dae.runs, "save_checkpoint", real_save)
    assert main(["sda", "--resume", str(part), "--quiet"]) == 0
    assert _same_weights(load_model(whole), load_model(part))
    assert _lines(whole) == _lines(part)
    assert json.loads((whole / "summary.json").read_text())["finetune_epochs_run"] == 6


def test_divergence_stops_the_run_and_leaves_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    real_save = dae.runs.save_checkpoint

    def save_then_break(path, model, generator, state, optimizer_state=None, tensors=None):
        real_save(path, model, generator, state, optimizer_state, tensors)
        with torch.no_grad():
            model.W.fill_(float("nan"))  # whatever comes next is lost

    monkeypatch.setattr(dae.runs, "save_checkpoint", save_then_break)
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--hidden", "4", "--epochs", "3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "training diverged at epoch 2" in err and "lower learning rate" in err
    checkpoint = load_checkpoint(out / CHECKPOINT)
    assert checkpoint.state["train_state"]["epoch"] == 1 and torch.isfinite(checkpoint.model.W).all()
    assert _epochs(out) == [1]


def test_fine_tuning_that_blows_up_is_stopped_and_leaves_its_last_good_checkpoint(labelled, tmp_path, capsys):
    out = tmp_path / "x"
    code = main(["sda", "--data", str(labelled), *SDA, "--finetune-lr", "1e6", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "diverged at epoch 1" in err and err.count("\n") == 1, err
    checkpoint = load_checkpoint(out / CHECKPOINT)
    assert checkpoint.state["phase"] == "pretrain"  # the fine-tuning epoch that blew up was never saved
    assert all(torch.isfinite(p).all() for p in checkpoint.model.parameters())
