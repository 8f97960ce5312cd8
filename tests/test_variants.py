"""Beyond the tutorial: penalties (sparsity, contraction, weight decay) and optimisers (momentum,
Nesterov, Adam, a schedule), as the literature defines them, reachable from the command line."""

import copy
import json

import numpy as np
import pytest
import torch

import dae.cli
from dae import DenoisingAutoencoder, load_model, train
from dae.cli import main
from dae.training import _AutogradSteps, _SGDStep


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "linear"])
def test_the_contractive_penalty_is_the_squared_frobenius_norm_of_the_jacobian(activation):
    m = DenoisingAutoencoder(7, 5, activation=activation, contraction=1.0,
                             generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        m.b.normal_()
    x = torch.rand(6, 7, dtype=torch.float64)
    norms = [torch.autograd.functional.jacobian(m.encode, row[None]).pow(2).sum() for row in x]
    assert torch.allclose(m.penalty(m.encode(x)), torch.stack(norms).mean())


def test_the_sparsity_penalty_is_the_kl_divergence_to_the_target():
    m = DenoisingAutoencoder(4, 3, sparsity_target=0.1, sparsity_weight=2.0)
    y = torch.tensor([[0.2, 0.5, 0.1], [0.4, 0.5, 0.1]])
    rho, rho_hat = 0.1, y.mean(0)
    kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    assert torch.allclose(m.penalty(y), 2.0 * kl.sum())


def test_the_sparsity_penalty_pulls_the_mean_activation_toward_the_target():
    x = (torch.rand(2000, 30, generator=torch.Generator().manual_seed(0)) < 0.3).float()

    def mean_activation(weight):
        m = DenoisingAutoencoder(30, 20, sparsity_target=0.05, sparsity_weight=weight,
                                 generator=torch.Generator().manual_seed(1))
        train(m, x, epochs=10, batch_size=20, learning_rate=0.1, generator=0)
        with torch.no_grad():
            return m.encode(x).mean().item()

    free, sparse, sparser = mean_activation(0.0), mean_activation(3.0), mean_activation(30.0)
    assert abs(sparse - 0.05) < 0.5 * abs(free - 0.05), (free, sparse)
    assert abs(sparser - 0.05) < abs(sparse - 0.05), (sparse, sparser)  # the heavier, the closer


def test_autograd_steps_with_plain_sgd_equal_the_hand_written_steps():
    x = torch.rand(80, 12, dtype=torch.float64)
    m = DenoisingAutoencoder(12, 6, corruption_level=0.3, generator=torch.Generator().manual_seed(0)).double()
    twin = copy.deepcopy(m)
    fast = _SGDStep(m, 10, 8, 0.1)
    slow = _AutogradSteps(twin, 10, 8, "sgd", 0.1, 0.0, False, 0.0, None)
    with torch.no_grad():
        a = fast.chunk(x, torch.Generator().manual_seed(5))
        b = slow.chunk(x, torch.Generator().manual_seed(5))
    assert np.isclose(a, b, rtol=1e-10)
    for p, q in zip(m.parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12)


def test_weight_decay_shrinks_the_weights_and_spares_the_biases():
    x = torch.rand(200, 10)

    def norms(decay):
        m = DenoisingAutoencoder(10, 6, generator=torch.Generator().manual_seed(0))
        train(m, x, epochs=5, batch_size=10, weight_decay=decay, generator=0)
        return m.W.norm().item()

    assert norms(0.1) < 0.8 * norms(0.0)
    m = DenoisingAutoencoder(10, 6)
    step = _AutogradSteps(m, 10, 1, "sgd", 0.1, 0.0, False, 0.5, None)
    decays = {id(p): g["weight_decay"] for g in step.optimizer.param_groups for p in g["params"]}
    assert decays[id(m.W)] == 0.5 and decays[id(m.b)] == 0.0 and decays[id(m.b_prime)] == 0.0


@pytest.mark.parametrize("options", [
    {"optimizer": "sgd", "momentum": 0.9},
    {"optimizer": "sgd", "momentum": 0.9, "nesterov": True},
    {"optimizer": "adam", "learning_rate": 0.005},
    {"schedule": "cosine"},
])
def test_every_optimiser_lowers_the_cost(options):
    x = (torch.rand(400, 25, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    m = DenoisingAutoencoder(25, 10, corruption_level=0.2, generator=torch.Generator().manual_seed(0))
    history = train(m, x, epochs=6, batch_size=20, generator=0, **({"learning_rate": 0.05} | options))
    assert history[-1].cost < 0.95 * history[0].cost


CLI_VARIANTS = [
    ["--optimizer", "adam", "--lr", "0.005"],
    ["--momentum", "0.9", "--nesterov", "--lr", "0.02"],
    ["--weight-decay", "0.001"],
    ["--schedule", "cosine"],
    ["--sparsity-weight", "0.5", "--sparsity-target", "0.1"],
    ["--contraction", "0.1"],
    ["--activation", "tanh", "--loss", "squared-error", "--lr", "0.01"],
    ["--activation", "relu", "--untied"],
    ["--noise", "salt-and-pepper", "--corruption", "0.2"],
    ["--noise", "gaussian", "--corruption", "0.1"],
]


@pytest.mark.parametrize("extra", CLI_VARIANTS, ids=lambda a: " ".join(a))
def test_every_variant_can_be_reached_from_the_command_line_and_trains(tmp_path, extra, capsys):
    x = (np.random.default_rng(0).random((300, 16)) < 0.3).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "x.npy"), "--hidden", "8", "--epochs", "4", "--quiet",
                 "--out", str(out), *extra])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["history"][-1]["cost"] < summary["history"][0]["cost"]
    load_model(out)


@pytest.mark.parametrize("optimizer", [["--momentum", "0.9", "--lr", "0.02"], ["--optimizer", "adam", "--lr", "0.005"]])
def test_a_resumed_run_with_optimizer_state_continues_bit_for_bit(tmp_path, monkeypatch, optimizer):
    x = (np.random.default_rng(0).random((300, 16)) < 0.3).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    common = ["train", "--data", str(tmp_path / "x.npy"), "--hidden", "8", "--epochs", "4", "--quiet", *optimizer]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    real_save = dae.cli.save_checkpoint

    def save_then_stop(path, model, generator, state, optimizer_state=None, tensors=None):
        real_save(path, model, generator, state, optimizer_state, tensors)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # as if Ctrl-C came right after epoch 2's checkpoint

    monkeypatch.setattr(dae.cli, "save_checkpoint", save_then_stop)
    assert main([*common, "--out", str(tmp_path / "part")]) == 130
    monkeypatch.setattr(dae.cli, "save_checkpoint", real_save)
    assert main(["train", "--resume", str(tmp_path / "part"), "--quiet"]) == 0
    whole, resumed = load_model(tmp_path / "whole"), load_model(tmp_path / "part")
    assert all(torch.equal(p, q) for p, q in zip(whole.parameters(), resumed.parameters()))
