"""Learning from few labels: `--labels N` for `dae sda` and `dae ladder`.

The rules: N labelled examples drawn balanced over the classes from `--label-seed`; every training
image is unlabelled data; no other label is read, not the validation split's, and not the other
training labels beyond the draw itself; the run records which labels it read.
"""

import json

import numpy as np
import pytest
import torch

import dae.steps
from dae import LadderNetwork, load_mnist, load_model
from dae.cli import LADDER_OPTIONS, build_parser, config_from_args, main
from dae.config import LABELLED_VALIDATION_FRACTION, LadderRunConfig
from dae.data import UNLABELLED, DataError, draw_labelled, hold_out_labelled

SDA_ARGS = ["--hidden", "24", "--pretrain-epochs", "1", "--finetune-epochs", "6", "--batch-size", "10", "--quiet"]
LADDER_ARGS = ["--hidden", "24,12", "--epochs", "2", "--batch-size", "50", "--quiet"]


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def _npz(path, mnist, *, y_train=None, y_valid=None):
    (x, y), (xv, yv), (xt, yt) = mnist.train, mnist.valid, mnist.test
    np.savez(path, x_train=x[:1500].numpy(), y_train=(y[:1500] if y_train is None else y_train).numpy(),
             x_valid=xv[:300].numpy(), y_valid=(yv[:300] if y_valid is None else y_valid).numpy(),
             x_test=xt[:500].numpy(), y_test=yt[:500].numpy())
    return path


# --- the draw ------------------------------------------------------------------------------------


def test_the_draw_is_balanced_reproducible_from_its_seed_and_never_takes_an_unlabelled_row():
    y = torch.arange(1000) % 10
    y[::7] = UNLABELLED
    a, b, c = draw_labelled(y, 100, 0), draw_labelled(y, 100, 0), draw_labelled(y, 100, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(y[a], minlength=10).tolist() == [10] * 10
    assert len(set(a.tolist())) == 100 and bool((y[a] != UNLABELLED).all())
    odd = draw_labelled(y, 23, 5)  # 2 of each class, one more of the first three
    assert torch.bincount(y[odd], minlength=10).tolist() == [3, 3, 3] + [2] * 7
    assert torch.equal(draw_labelled(y, None, 0), torch.nonzero(y != UNLABELLED).flatten())


@pytest.mark.parametrize("n", [9, 901])
def test_a_draw_that_cannot_be_balanced_is_a_data_error(n):
    y = torch.arange(1000) % 10  # 100 of each class
    with pytest.raises(DataError, match="cannot draw|fewer than"):
        draw_labelled(y, n if n < 10 else 1001, 0)
    with pytest.raises(DataError, match="class 0 has"):
        draw_labelled(torch.cat([torch.zeros(5), torch.ones(500)]).long(), 20, 0)


def test_the_held_out_fifth_is_drawn_from_each_class_and_is_disjoint_from_the_rest():
    y = torch.arange(1000) % 10
    drawn = draw_labelled(y, 100, 3)
    kept, held = hold_out_labelled(drawn, y, LABELLED_VALIDATION_FRACTION, 3)
    assert set(kept.tolist()).isdisjoint(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == drawn.tolist()
    assert torch.bincount(y[held], minlength=10).tolist() == [2] * 10
    kept, held = hold_out_labelled(drawn, y, 0.0, 3)  # nothing held out: no early stopping
    assert torch.equal(kept, drawn) and len(held) == 0


# --- no other label is read ------------------------------------------------------------------------


@pytest.mark.parametrize("command, args", [("sda", SDA_ARGS), ("sda", [*SDA_ARGS, "--pseudo-labels", "3"]),
                                           ("ladder", LADDER_ARGS)], ids=["sda", "sda-pseudo-labels", "ladder"])
def test_no_label_outside_the_n_is_read(command, args, mnist, tmp_path):
    """Poisoned validation labels, and every training label outside the draw removed (-1), give
    the very same run: the labels read are exactly those labelled.json names."""
    clean = _npz(tmp_path / "clean.npz", mnist)
    out = tmp_path / "clean"
    assert main([command, "--data", str(clean), "--labels", "40", "--label-seed", "7", *args, "--out", str(out)]) == 0
    record = json.loads((out / "labelled.json").read_text())
    assert record["labels"] == 40 and record["label_seed"] == 7 and len(record["indices"]) == 40

    # The poison is real: a run that does read the validation labels refuses them.
    poison = torch.full((300,), 10**9, dtype=torch.int64)
    y = mnist.train.y[:1500]
    only_drawn = torch.full_like(y, UNLABELLED)
    only_drawn[record["indices"]] = y[record["indices"]]
    poisoned = _npz(tmp_path / "poisoned.npz", mnist, y_train=only_drawn, y_valid=poison)
    if args is SDA_ARGS:
        assert main(["sda", "--data", str(_npz(tmp_path / "p2.npz", mnist, y_valid=poison)), *args,
                     "--out", str(tmp_path / "reads")]) == 2
    # The drawn labels given alone (the rest -1, with labels=all) and with poisoned validation labels.
    out2 = tmp_path / "poisoned"
    assert main([command, "--data", str(poisoned), "--labels", "all", "--label-seed", "7", *args,
                 "--out", str(out2)]) == 0
    a, b = json.loads((out / "summary.json").read_text()), json.loads((out2 / "summary.json").read_text())
    assert a["test_error"] == b["test_error"]
    assert json.loads((out2 / "labelled.json").read_text())["indices"] == record["indices"]
    m1, m2 = load_model(out), load_model(out2)
    assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_the_sda_pretrains_on_every_image_and_fine_tunes_on_four_fifths_of_the_labels(mnist, tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", mnist)
    out = tmp_path / "run"
    assert main(["sda", "--data", str(data), "--labels", "50", *SDA_ARGS[:-1], "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["labels"], summary["n_train"], summary["n_valid"]) == (50, 40, 10)
    assert "1800 unlabelled" in capsys.readouterr().out  # 1500 training + 300 validation images
    record = json.loads((out / "labelled.json").read_text())
    assert len(record["held_out_for_early_stopping"]) == 10


def test_a_refit_with_few_labels_learns_from_the_labels_held_out_too(mnist, tmp_path):
    data = _npz(tmp_path / "d.npz", mnist)
    out = tmp_path / "run"
    assert main(["sda", "--data", str(data), "--labels", "50", *SDA_ARGS, "--refit", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["labels"], summary["n_train"], summary["n_valid"]) == (50, 50, 0)
    record = json.loads((out / "labelled.json").read_text())
    assert len(record["indices"]) == 50 and "held_out_for_early_stopping" not in record


# --- dae ladder ------------------------------------------------------------------------------------


def test_dae_ladder_writes_a_model_curves_and_a_summary(mnist, tmp_path):
    data = _npz(tmp_path / "d.npz", mnist)
    out = tmp_path / "run"
    assert main(["ladder", "--data", str(data), "--labels", "100", *LADDER_ARGS, "--noise-std", "0.2",
                 "--input-noise-std", "0.3", "--out", str(out)]) == 0
    for name in ("model.safetensors", "config.json", "run_config.json", "metrics.jsonl", "summary.json",
                 "labelled.json", "curve.png", "filters.png", "checkpoint.safetensors"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == 100 and summary["n_unlabelled"] == 1800 and summary["epochs"] == 2
    assert 0 <= summary["test_error"] < 0.9
    model = load_model(out, kind=LadderNetwork)
    assert model.sizes == (784, 24, 12, 10)
    assert (model.noise_std, model.input_noise_std) == (0.2, 0.3)  # the authors' recipe for 1000 labels
    assert model.target_gradient  # the default: the denoising gradient reaches the clean path
    config = json.loads((out / "config.json").read_text())  # a model saved before input_noise_std: noise_std
    del config["input_noise_std"], config["target_gradient"]  # ... and before target_gradient: trained without
    (out / "config.json").write_text(json.dumps(config))
    old = load_model(out, kind=LadderNetwork)
    assert (old.input_noise_std, old.target_gradient) == (0.2, False)
    config_from_cli = config_from_args(build_parser().parse_args(["ladder", "--constant-targets"]), LADDER_OPTIONS,
                                       LadderRunConfig())
    assert config_from_cli.model.target_gradient is False
    assert LadderNetwork.from_config(784, 10, config_from_cli.model).target_gradient is False
    # Inference normalises with the final weights' statistics over every image (1500 + 300), saved with the model.
    x_all = torch.cat([mnist.train.x[:1500], mnist.valid.x[:300]])
    z = x_all @ model.W[0]
    assert torch.allclose(model.running_mean(1), z.mean(0), atol=1e-4)
    assert torch.allclose(model.running_var(1), z.var(0), rtol=1e-3)
    x, y = mnist.test.x[:500], mnist.test.y[:500]
    assert int((model.predict(x) != y).sum()) == round(summary["test_error"] * 500)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(len(m["denoising"]) == 4 and m["valid_error"] is None for m in metrics)


def test_a_ladder_encodes_with_its_hidden_layers_and_does_not_score(mnist, tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", mnist)
    out = tmp_path / "run"
    assert main(["ladder", "--data", str(data), "--labels", "100", *LADDER_ARGS, "--out", str(out)]) == 0
    model = load_model(out)
    for layer, width in ((None, 12), (1, 24)):
        features = tmp_path / f"f{layer}.npy"
        argv = ["encode", "--model", str(out), "--data", str(data), "--split", "test", "--out", str(features)]
        assert main(argv + ([] if layer is None else ["--layer", str(layer)])) == 0
        expected = model.hidden(mnist.test.x[:500], layer or 2)
        assert np.allclose(np.load(features), expected.detach().numpy(), atol=1e-5) and expected.shape[1] == width
    capsys.readouterr()
    assert main(["encode", "--model", str(out), "--data", str(data), "--layer", "3", "--out",
                 str(tmp_path / "x.npy")]) == 2
    assert "the model has 2 hidden layers" in capsys.readouterr().err
    assert main(["score", "--model", str(out), "--data", str(data), "--out", str(tmp_path / "s.npy")]) == 2
    assert "not a LadderNetwork" in capsys.readouterr().err


def test_dae_ladder_with_every_label_shows_the_validation_error(mnist, tmp_path):
    data = _npz(tmp_path / "d.npz", mnist)
    out = tmp_path / "run"
    assert main(["ladder", "--data", str(data), "--labels", "all", *LADDER_ARGS, "--out", str(out)]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= m["valid_error"] <= 1 for m in metrics)
    assert json.loads((out / "summary.json").read_text())["n_unlabelled"] == 1500


def test_an_interrupted_ladder_resumes_to_the_same_weights(mnist, tmp_path, monkeypatch):
    data = _npz(tmp_path / "d.npz", mnist)
    args = ["ladder", "--data", str(data), "--labels", "60", *LADDER_ARGS[:-1], "--epochs", "3", "--quiet"]
    whole = tmp_path / "whole"
    assert main([*args, "--out", str(whole)]) == 0

    real, calls = dae.steps.LadderStep.__call__, [0]

    def interrupted(self, block, generator):  # Ctrl-C inside the second epoch
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(self, block, generator)

    monkeypatch.setattr(dae.steps.LadderStep, "__call__", interrupted)
    part = tmp_path / "part"
    assert main([*args, "--out", str(part)]) == 130
    assert json.loads((part / "summary.json").read_text())["interrupted"] is True
    monkeypatch.setattr(dae.steps.LadderStep, "__call__", real)
    assert main(["ladder", "--resume", str(part), "--quiet"]) == 0
    a, b = load_model(whole), load_model(part)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("args, message", [
    (["--labels", "0"], "expected a positive number of labels or 'all'"),
    (["--labels", "five"], "expected a positive number of labels or 'all'"),
    (["--labels", "5"], "cannot draw 5 labels balanced over 10 classes"),
    (["--labels", "100000"], "cannot draw 100000 labels"),
    (["--denoising-weights", "1,2"], "denoising_weights needs 4 values"),
    (["--noise-std", "-1"], "expected a non-negative number"),
])
def test_bad_options_are_one_line_errors(args, message, mnist, tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", mnist)
    out = tmp_path / "run"
    assert main(["ladder", "--data", str(data), *LADDER_ARGS, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dae: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_pseudo_labels_learn_from_every_image_and_need_unlabelled_ones(mnist, tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", mnist)
    calls = []
    real = dae.steps.PseudoLabelStep.__call__

    def spy(self, block, generator):
        calls.append((self.weight, len(block[0])))
        return real(self, block, generator)

    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dae.steps.PseudoLabelStep, "__call__", spy)
        assert main(["sda", "--data", str(data), "--labels", "50", "--pseudo-labels", "3", *SDA_ARGS[:-1],
                     "--out", str(out)]) == 0
    assert ("pseudo-labels of all 1800 images (Lee 2013), an epoch a pass over them; their weight: 0 up to "
            "epoch 1, rising to 3 at epoch 5") in capsys.readouterr().out
    # An epoch is a pass over the 1800 images (1500 training + 300 validation) in minibatches of 10;
    # the weight is 0 in the first tenth of the 6 epochs, then rises to 3 (from 6/10 of them on).
    assert sum(rows for _, rows in calls) == 6 * 1800
    ramp = [0, 0.4, 1.4, 2.4, 3, 3]  # alpha(t) of epochs 1..6: dae.config.pseudo_label_weight
    assert sorted({w for w, _ in calls}) == pytest.approx(sorted(set(ramp)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["finetuning"]["pseudo_labels"] == 3.0 and summary["finetune_epochs_run"] == 6
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["pseudo_label_weight"] for m in logged if m["phase"] == "finetune"] == pytest.approx(ramp)
    # Without unlabelled images there is nothing to pseudo-label: one line, no folder.
    out2 = tmp_path / "none"
    assert main(["sda", "--data", str(data), "--pseudo-labels", "3", *SDA_ARGS, "--out", str(out2)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dae: error: ") and "pseudo-labels need unlabelled images" in err and err.count("\n") == 1
    assert not out2.exists()


def test_unlabelled_rows_need_labels_for_the_plain_sda_path_and_bad_markers_are_refused(mnist, tmp_path, capsys):
    y = mnist.train.y[:1500].clone()
    y[:10] = -2
    bad = _npz(tmp_path / "bad.npz", mnist, y_train=y)
    assert main(["ladder", "--data", str(bad), *LADDER_ARGS, "--out", str(tmp_path / "r")]) == 2
    assert "labels must be >= -1 (-1: unlabelled), found -2" in capsys.readouterr().err
