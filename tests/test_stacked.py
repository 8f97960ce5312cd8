"""Stacked denoising autoencoders: shared parameters, greedy pre-training, fine-tuning with the
tutorial's early stopping, and the `dae sda` command."""

import copy
import json

import numpy as np
import pytest
import torch

import dae.training
from dae import StackedDenoisingAutoencoder, load_model, save_model
from dae.cli import SDA_PRESETS, main
from dae.training import Patience, _FinetuneStep, error_rate, finetune, pretrain


def tiny_problem(n=600, seed=0):
    """Four classes, decided by two of 16 inputs in [0, 1], each at least 0.1 from 0.5."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 16, generator=g)
    x[:, :2] = torch.where(x[:, :2] > 0.5, 0.6 + 0.4 * x[:, :2], 0.4 * x[:, :2])
    y = (x[:, 0] > 0.5).long() + 2 * (x[:, 1] > 0.5).long()
    return x, y


def test_each_hidden_layer_shares_W_and_b_with_its_dA_and_only_b_prime_is_the_dAs_own():
    m = StackedDenoisingAutoencoder(16, [12, 8], 4, [0.1, 0.2], generator=torch.Generator().manual_seed(0))
    for layer, dA in zip(m.hidden, m.autoencoders):
        assert dA.W is layer.W and dA.b is layer.b
        assert all(dA.b_prime is not p for p in layer.parameters())
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == (16 * 12 + 12 + 16) + (12 * 8 + 8 + 12) + (8 * 4 + 4)
    assert [dA.corruption_level for dA in m.autoencoders] == [0.1, 0.2]


def test_the_logistic_layer_starts_at_zero_so_every_class_starts_equally_likely():
    m = StackedDenoisingAutoencoder(16, [12], 4, generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(m.log_W) == 0 and torch.count_nonzero(m.log_b) == 0
    assert torch.allclose(m.predict_proba(torch.rand(3, 16)), torch.full((3, 4), 0.25))


def test_pretraining_a_layer_changes_the_mlp_layer_and_trains_on_the_codes_below():
    x, _ = tiny_problem()
    m = StackedDenoisingAutoencoder(16, [12, 8], 4, [0.1, 0.2], generator=torch.Generator().manual_seed(0))
    before = [layer.W.detach().clone() for layer in m.hidden]
    seen = []
    original_train = dae.training.train

    def spy(model, data, **kwargs):
        seen.append(data.clone())
        return original_train(model, data, **kwargs)

    dae.training.train, saved = spy, dae.training.train
    try:
        pretrain(m, x, epochs=1, learning_rate=0.1, batch_size=10, generator=0)
    finally:
        dae.training.train = saved
    for layer, W0 in zip(m.hidden, before):
        assert not torch.equal(layer.W, W0)  # the MLP's own W moved
    assert torch.equal(seen[0], x)
    with torch.no_grad():
        assert torch.allclose(seen[1], torch.sigmoid(x @ m.hidden[0].W + m.hidden[0].b))  # clean codes of layer 1


def test_encode_predict_and_predict_proba():
    m = StackedDenoisingAutoencoder(16, [12, 8], 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.log_W.normal_()
    x = torch.rand(5, 16)
    assert m.encode(x, layer=0) is x
    assert m.encode(x, layer=1).shape == (5, 12) and m.encode(x).shape == (5, 8)
    p = m.predict_proba(x)
    assert torch.allclose(p.sum(1), torch.ones(5)) and torch.equal(m.predict(x), p.argmax(1))
    with pytest.raises(ValueError, match="layer"):
        m.encode(x, layer=3)


def test_the_patience_rule_on_a_scripted_validation_curve():
    rule = Patience(n_batches=100, patience_epochs=10)  # patience starts at 1000 minibatches
    curve = {1: 0.10, 2: 0.05, 8: 0.04}  # big improvements; other epochs are worse or barely better
    stopped = None
    for epoch in range(1, 100):
        error = curve.get(epoch, 0.0399 if epoch > 8 else 0.2)
        rule.update(epoch, error)
        if rule.exhausted(epoch):
            stopped = epoch
            break
    # At epoch 8 the 20% improvement sets patience to 2 x 799 = 1598 minibatches; epoch 9's
    # 0.25% improvement is a new best but does not extend it.  1598 <= 16 x 100: stop after 16.
    assert rule.patience == 1598 and rule.best == 0.0399
    assert stopped == 16


def test_finetune_stops_by_patience_restores_the_best_model_and_reports_its_test_error(monkeypatch):
    x, y = tiny_problem()
    m = StackedDenoisingAutoencoder(16, [12], 4, generator=torch.Generator().manual_seed(0))
    scripted = iter([0.5, 0.3, 0.31, 0.32, 0.33, 0.34, 0.35, 0.36, 0.37, 0.38, 0.39, 0.40])
    snapshots = {}
    real_error_rate = dae.training.error_rate

    def fake_error_rate(model, xs, ys, world=None):
        if xs is valid_x:
            snapshots[len(snapshots) + 1] = model.log_W.detach().clone()
            return next(scripted)
        return real_error_rate(model, xs, ys, world=world)

    valid_x = x[500:]
    monkeypatch.setattr(dae.training, "error_rate", fake_error_rate)
    result = finetune(m, (x[:500], y[:500]), (valid_x, y[500:]), (x[:100], y[:100]), max_epochs=50,
                      learning_rate=0.1, batch_size=50, patience_epochs=2)
    # Patience 2 epochs = 20 minibatches; epoch 2 (iteration 19) sets it to 38: stop after epoch 4.
    assert result.stopped_by == "patience" and len(result.history) == 4
    assert result.best_epoch == 2 and result.best_valid_error == 0.3
    assert torch.equal(m.log_W, snapshots[2])
    assert result.history[1].test_error == result.test_error == real_error_rate(m, x[:100], y[:100])
    assert result.history[2].test_error is None  # measured only at new bests


def test_a_tiny_sda_learns_a_tiny_problem():
    x, y = tiny_problem(1200)
    g = torch.Generator().manual_seed(0)
    m = StackedDenoisingAutoencoder(16, [32, 32], 4, [0.1, 0.2], generator=g)
    pretrain(m, x[:800], epochs=2, learning_rate=0.1, batch_size=10, generator=g)
    result = finetune(m, (x[:800], y[:800]), (x[800:1000], y[800:1000]), (x[1000:], y[1000:]), max_epochs=60,
                      learning_rate=0.2, batch_size=10, momentum=0.9, schedule="cosine", shuffle=True, generator=g)
    assert result.test_error < 0.03, result.test_error  # chance: 0.75
    assert error_rate(m, x[800:1000], y[800:1000]) == result.best_valid_error


def test_an_sda_saves_and_loads_back_identical(tmp_path):
    m = StackedDenoisingAutoencoder(16, [12, 8], 4, [0.1, 0.2], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.log_W.normal_()
        m.autoencoders[1].b_prime.normal_()
    save_model(m, tmp_path / "sda")
    loaded = load_model(tmp_path / "sda")
    assert isinstance(loaded, StackedDenoisingAutoencoder)
    assert [dA.corruption_level for dA in loaded.autoencoders] == [0.1, 0.2]
    for (name, p), q in zip(m.named_parameters(), loaded.parameters()):
        assert torch.equal(p, q), name
    assert loaded.autoencoders[0].W is loaded.hidden[0].W  # still shared after loading


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def labelled(tmp_path):
    x, y = tiny_problem(700)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x[:600].numpy(), y_train=y[:600].numpy(), x_test=x[600:].numpy(), y_test=y[600:].numpy())
    return path


SMALL = ["--hidden", "24,12", "--pretrain-epochs", "2", "--finetune-epochs", "8", "--batch-size", "20", "--quiet"]


def test_dae_sda_writes_its_outputs_and_a_checkpoint_per_pretrained_layer(tmp_path, labelled, capsys):
    out = tmp_path / "run"
    assert main(["sda", "--data", str(labelled), *SMALL, "--out", str(out)]) == 0, capsys.readouterr().err
    assert {"filters.png", "pretrain_curve.png", "finetune_curve.png", "metrics.jsonl", "summary.json",
            "model.safetensors", "config.json", "pretrained"} <= {p.name for p in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["test_error"] <= 1 and 0 <= summary["best_valid_error"] <= 1
    assert summary["pretrain_seconds"] > 0 and summary["finetune_seconds"] > 0
    assert summary["n_train"] == 500 and summary["n_valid"] == 100  # a sixth split off for validation
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["layer"], r["epoch"]) for r in lines if r["phase"] == "pretrain"] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all("valid_error" in r for r in lines if r["phase"] == "finetune")
    assert json.loads((out / "pretrained" / "config.json").read_text())["pretrained_layers"] == 2
    model = load_model(out)
    assert model.hidden_layer_sizes == [24, 12]


def test_fine_tuning_can_be_rerun_from_the_pretrained_checkpoint(tmp_path, labelled, capsys):
    first = tmp_path / "a"
    assert main(["sda", "--data", str(labelled), *SMALL, "--out", str(first)]) == 0
    checkpoint = load_model(first / "pretrained")
    reruns = []
    for name in ("b", "c"):
        assert main(["sda", "--data", str(labelled), *SMALL, "--pretrained", str(first / "pretrained"),
                     "--finetune-epochs", "1", "--finetune-lr", "1e-9", "--out", str(tmp_path / name)]) == 0
        reruns.append(json.loads((tmp_path / name / "summary.json").read_text()))
        assert reruns[-1]["pretrain_seconds"] == 0 and not (tmp_path / name / "pretrained").exists()
    assert reruns[0]["test_error"] == reruns[1]["test_error"]
    # With a vanishing learning rate the fine-tuned hidden layers are still the checkpoint's.
    tuned = load_model(tmp_path / "b")
    for layer, start in zip(tuned.hidden, checkpoint.hidden):
        assert torch.allclose(layer.W, start.W, atol=1e-6)


def test_fine_tuning_rerun_from_pretrained_draws_what_the_original_run_drew(tmp_path, labelled):
    assert main(["sda", "--data", str(labelled), *SMALL, "--out", str(tmp_path / "a")]) == 0
    assert main(["sda", "--data", str(labelled), *SMALL, "--pretrained", str(tmp_path / "a" / "pretrained"),
                 "--out", str(tmp_path / "b")]) == 0

    def finetuning(run):
        return [{k: m[k] for k in ("epoch", "train_loss", "valid_error", "test_error")}
                for m in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
                if m["phase"] == "finetune"]

    # Shuffles, input masks and dropout all come from the generator: the same stream, the same run.
    assert finetuning("b") == finetuning("a") and len(finetuning("a")) == 8
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # Another seed does not continue the stream: it starts from its own.
    assert main(["sda", "--data", str(labelled), *SMALL, "--pretrained", str(tmp_path / "a" / "pretrained"),
                 "--seed", "1", "--out", str(tmp_path / "c")]) == 0
    assert finetuning("c") != finetuning("a")


def test_the_tutorial_preset_is_the_tutorials_sda_and_every_preset_runs(tmp_path, labelled):
    # test_SdA: 3 x 1000 units, corruption 0.1/0.2/0.3, pretrain lr 0.001 x 15 epochs, batch 1,
    # finetune lr 0.1 for at most 1000 epochs, seed 89677 (the issue and SdA.py).
    assert {k: SDA_PRESETS["tutorial"][k] for k in ("hidden", "corruption", "pretrain_epochs", "pretrain_lr",
                                                    "pretrain_batch_size", "batch_size", "finetune_lr",
                                                    "finetune_epochs", "momentum", "seed")} == {
        "hidden": [1000] * 3, "corruption": [0.1, 0.2, 0.3], "pretrain_epochs": [15], "pretrain_lr": [0.001],
        "pretrain_batch_size": 1, "batch_size": 1, "finetune_lr": 0.1, "finetune_epochs": 1000, "momentum": 0.0,
        "seed": 89677}
    for preset in SDA_PRESETS:  # each preset's recipe, on a tiny network and data
        out = tmp_path / preset
        assert main(["sda", "--data", str(labelled), "--preset", preset, "--hidden", "8", "--corruption", "0.1",
                     "--pretrain-epochs", "1", "--finetune-epochs", "2", "--quiet", "--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        for key in ("dropout", "finetune_corruption", "batch_size", "momentum", "schedule", "finetune_lr"):
            assert summary[key] == SDA_PRESETS[preset][key], (preset, key)


def test_no_pretrain_skips_pretraining(tmp_path, labelled, capsys):
    out = tmp_path / "base"
    assert main(["sda", "--data", str(labelled), *SMALL, "--no-pretrain", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pretrained"] is False and summary["pretrain_seconds"] == 0
    assert all(json.loads(line)["phase"] == "finetune" for line in (out / "metrics.jsonl").read_text().splitlines())


@pytest.mark.parametrize(
    "make, extra, phrase",
    [
        (lambda p: np.save(p.with_suffix(".npy"), np.random.rand(60, 4)), [], "needs labels"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.arange(60) % 3 - 1), [], "label"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.full(60, 0.5)), [], "label"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.zeros(60, int)), [], "K >= 2"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.arange(60) % 2,
                            x_test=np.random.rand(5, 4), y_test=np.full(5, 7)), [], "0..1"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.arange(60) % 2),
         ["--hidden", "5,5", "--corruption", "0.1,0.2,0.3"], "3 levels for 2 layers"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.arange(60) % 2),
         ["--hidden", "5,5", "--pretrain-epochs", "1,2,3"], "3 values for 2 layers"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.arange(60) % 2),
         ["--hidden", "5,0"], "positive integer"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.arange(60) % 2),
         ["--momentum", "1.5"], "momentum"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.arange(60) % 2),
         ["--batch-size", "1000"], "larger than"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.arange(60) % 2),
         ["--pretrained", "/nonexistent"], "no such model folder"),
    ],
)
def test_dae_sda_user_mistakes_are_clean_errors(tmp_path, capsys, make, extra, phrase):
    path = tmp_path / "d.npz"
    make(path)
    data = path if path.exists() else path.with_suffix(".npy")
    out = tmp_path / "out"
    code = main(["sda", "--data", str(data), "--hidden", "5", "--pretrain-epochs", "1", "--finetune-epochs", "1",
                 "--batch-size", "10", *extra, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dae: error: ") and err.count("\n") == 1, err
    assert phrase in err
    assert not out.exists()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_hand_written_finetuning_steps_match_autograd_and_torch_sgd(momentum):
    x, y = tiny_problem(60)
    m = StackedDenoisingAutoencoder(16, [12, 8], 4, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        m.log_W.normal_()
    reference = copy.deepcopy(m)
    x = x.double()
    step = _FinetuneStep(m, momentum)
    with torch.no_grad():
        losses = [step(x[i * 10:(i + 1) * 10], y[i * 10:(i + 1) * 10], 0.3) for _ in range(2) for i in range(3)]
    expected_losses = []
    params = list(reference.hidden.parameters()) + [reference.log_W, reference.log_b]
    optimizer = torch.optim.SGD(params, lr=0.3, momentum=momentum)
    for _ in range(2):
        for i in range(3):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(reference(x[i * 10:(i + 1) * 10]), y[i * 10:(i + 1) * 10])
            loss.backward()
            optimizer.step()
            expected_losses.append(loss.item())
    for (name, p), q in zip(m.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-10, atol=1e-12), name
    assert np.allclose(losses, expected_losses, rtol=1e-12)


def test_hand_written_dropout_step_matches_autograd_with_the_same_masks():
    x, y = tiny_problem(10)
    x = x.double()
    m = StackedDenoisingAutoencoder(16, [12, 8], 4, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        m.log_W.normal_()
    reference = copy.deepcopy(m)
    step = _FinetuneStep(m, 0.0, dropout=0.3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        step(x, y, 0.5)
    g = torch.Generator().manual_seed(5)
    h = x
    for layer in reference.hidden:  # the same masks, drawn in the same order
        h = layer(h)
        h = h * torch.empty_like(h).bernoulli_(0.7, generator=g) / 0.7
    loss = torch.nn.functional.cross_entropy(torch.addmm(reference.log_b, h, reference.log_W), y)
    loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    for (name, p), q in zip(m.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("kwargs", [{"max_epochs": 0}, {"learning_rate": -1.0}, {"momentum": 1.0},
                                    {"dropout": 1.0}, {"schedule": "step"}, {"batch_size": 1000}])
def test_finetune_refuses_bad_settings(kwargs):
    x, y = tiny_problem(100)
    m = StackedDenoisingAutoencoder(16, [4], 4)
    with pytest.raises(ValueError):
        finetune(m, (x, y), (x, y), **kwargs)
