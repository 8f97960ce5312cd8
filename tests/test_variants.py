"""Beyond the tutorial: penalties (sparsity, contraction, weight decay) and optimisers (momentum,
Nesterov, Adam, a schedule), as the literature defines them, reachable from the command line."""

import copy
import json

import numpy as np
import pytest
import torch

import dae.runs
from dae import DenoisingAutoencoder, TrainingConfig, load_model, train
from dae.cli import main
from dae.saving import load_checkpoint
from dae.steps import AutogradStep, DAStep


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


def test_the_penalties_are_added_to_the_loss():
    x = torch.rand(6, 7, dtype=torch.float64)
    plain = DenoisingAutoencoder(7, 5, generator=torch.Generator().manual_seed(0)).double()
    for settings in ({"contraction": 0.5}, {"sparsity_weight": 2.0}):
        m = DenoisingAutoencoder(7, 5, generator=torch.Generator().manual_seed(0), **settings).double()
        assert m.regularised and not plain.regularised
        expected = plain.loss(x) + m.penalty(m.encode(x))
        assert torch.allclose(m.loss(x), expected) and not torch.allclose(m.loss(x), plain.loss(x))


def test_the_sparsity_penalty_pulls_the_mean_activation_toward_the_target():
    x = (torch.rand(600, 30, generator=torch.Generator().manual_seed(0)) < 0.3).float()

    def mean_activation(weight):
        m = DenoisingAutoencoder(30, 20, sparsity_target=0.05, sparsity_weight=weight,
                                 generator=torch.Generator().manual_seed(1))
        train(m, x, epochs=10, batch_size=20, learning_rate=0.1, generator=0)
        with torch.no_grad():
            return m.encode(x).mean().item()

    free, sparse, sparser = mean_activation(0.0), mean_activation(3.0), mean_activation(30.0)
    assert abs(sparse - 0.05) < 0.5 * abs(free - 0.05), (free, sparse)
    assert abs(sparser - 0.05) < abs(sparse - 0.05), (sparse, sparser)  # the heavier, the closer


@pytest.mark.parametrize("noise", ["masking", "gaussian", "salt-and-pepper"])
@pytest.mark.parametrize("tied", [True, False])
def test_autograd_steps_with_plain_sgd_equal_the_hand_written_steps(noise, tied):
    x = torch.rand(80, 12, dtype=torch.float64)
    m = DenoisingAutoencoder(12, 6, corruption_level=0.3, noise=noise, tied=tied,
                             generator=torch.Generator().manual_seed(0)).double()
    twin = copy.deepcopy(m)
    fast = DAStep(m, 10, 8)
    slow = AutogradStep(twin, TrainingConfig(learning_rate=0.1, batch_size=10), 8)
    fast.set_learning_rate(0.1)
    slow.set_learning_rate(0.1)
    with torch.no_grad():
        a = fast((x,), torch.Generator().manual_seed(5))
        b = slow((x,), torch.Generator().manual_seed(5))
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
    m = DenoisingAutoencoder(10, 6, tied=False)
    step = AutogradStep(m, TrainingConfig(batch_size=10, weight_decay=0.5), 1)
    decays = {id(p): g["weight_decay"] for g in step.optimizer.param_groups for p in g["params"]}
    assert decays == {id(m.W): 0.5, id(m.W_prime): 0.5, id(m.b): 0.0, id(m.b_prime): 0.0}


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


def test_the_cosine_schedule_decays_the_learning_rate_epoch_by_epoch(monkeypatch):
    m = DenoisingAutoencoder(6, 3, generator=torch.Generator().manual_seed(0))
    seen = []
    real = AutogradStep.set_learning_rate

    def spy(self, lr):
        seen.append(lr)
        real(self, lr)

    monkeypatch.setattr(AutogradStep, "set_learning_rate", spy)
    train(m, torch.rand(40, 6), epochs=4, batch_size=10, learning_rate=0.2, schedule="cosine", generator=0)
    # 0.2 * (1 + cos(pi t)) / 2 at t = (epoch - 1) / epochs
    assert seen == pytest.approx([0.2 * (1 + np.cos(np.pi * t)) / 2 for t in (0, 0.25, 0.5, 0.75)])
    assert seen[0] == 0.2 and seen[2] == pytest.approx(0.1)


# --- from the command line -------------------------------------------------------------------

# (options, the settings they must leave in run_config.json, the options of the run they must differ from).
PLAIN: list[str] = []
CLI_VARIANTS = [
    (["--optimizer", "adam", "--lr", "0.005"], {"training": {"optimizer": "adam", "learning_rate": 0.005}},
     ["--lr", "0.005"]),
    (["--momentum", "0.9", "--lr", "0.02"], {"training": {"momentum": 0.9, "learning_rate": 0.02}}, ["--lr", "0.02"]),
    (["--momentum", "0.9", "--nesterov", "--lr", "0.02"], {"training": {"momentum": 0.9, "nesterov": True}},
     ["--momentum", "0.9", "--lr", "0.02"]),
    (["--weight-decay", "0.01"], {"training": {"weight_decay": 0.01}}, PLAIN),
    (["--schedule", "cosine"], {"training": {"schedule": "cosine"}}, PLAIN),
    (["--sparsity-weight", "0.5"], {"model": {"sparsity_weight": 0.5, "sparsity_target": 0.05}}, PLAIN),
    (["--sparsity-weight", "0.5", "--sparsity-target", "0.1"], {"model": {"sparsity_target": 0.1}},
     ["--sparsity-weight", "0.5"]),
    (["--contraction", "0.1"], {"model": {"contraction": 0.1}}, PLAIN),
    (["--activation", "tanh", "--loss", "squared-error", "--lr", "0.01"],
     {"model": {"activation": "tanh", "loss": "squared-error"}}, ["--loss", "squared-error", "--lr", "0.01"]),
    (["--activation", "relu", "--untied"], {"model": {"activation": "relu", "tied": False}}, ["--untied"]),
    (["--untied"], {"model": {"tied": False}}, PLAIN),
    (["--noise", "salt-and-pepper", "--corruption", "0.2"], {"model": {"noise": "salt-and-pepper"}},
     ["--corruption", "0.2"]),
    (["--noise", "gaussian", "--corruption", "0.1"], {"model": {"noise": "gaussian", "corruption_level": 0.1}},
     ["--corruption", "0.1"]),
    (["--corruption", "0.1"], {"model": {"corruption_level": 0.1}}, PLAIN),
]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """cli_run(options) -> the folder of `dae train` with those options on small binary data (run once each)."""
    root = tmp_path_factory.mktemp("variants")
    data = root / "x.npy"
    np.save(data, (np.random.default_rng(0).random((300, 16)) < 0.3).astype(np.float32))
    runs = {}

    def run(options):
        key = tuple(options)
        if key not in runs:
            out = root / f"run{len(runs)}"
            code = main(["train", "--data", str(data), "--hidden", "8", "--epochs", "4", "--quiet", "--out", str(out),
                         *options])
            assert code == 0, options
            runs[key] = out
        return runs[key]

    return run


def _subset(expected: dict, actual: dict) -> bool:
    return all(_subset(v, actual[k]) if isinstance(v, dict) else actual[k] == v for k, v in expected.items())


@pytest.mark.parametrize("options, settings, baseline", CLI_VARIANTS, ids=[" ".join(v[0]) for v in CLI_VARIANTS])
def test_every_variant_reached_from_the_command_line_takes_effect(cli_run, options, settings, baseline):
    out, other = cli_run(options), cli_run(baseline)
    config = json.loads((out / "run_config.json").read_text())
    assert _subset(settings, config), config
    summary = json.loads((out / "summary.json").read_text())
    flat = {k: v for part in settings.values() for k, v in part.items()}
    assert {k: summary[k] for k in flat} == flat  # the summary's settings are the run's
    costs = [json.loads(line)["cost"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(costs) == 4 and costs[-1] < costs[0] and summary["final_cost"] == costs[-1]
    # The option changed the training: the model differs from that of the run without it.
    model, plain = load_model(out), load_model(other)
    assert (model.activation, model.tied, model.loss_name, model.noise) == (
        config["model"]["activation"], config["model"]["tied"], config["model"]["loss"], config["model"]["noise"])
    assert model.corruption_level == config["model"]["corruption_level"]
    assert (model.W_prime is not None) == (not config["model"]["tied"])
    assert not torch.equal(model.W, plain.W)
    assert summary["final_cost"] != json.loads((other / "summary.json").read_text())["final_cost"]


def test_weight_decay_from_the_command_line_shrinks_the_weights(cli_run):
    decayed, plain = load_model(cli_run(["--weight-decay", "0.01"])), load_model(cli_run(PLAIN))
    assert decayed.W.norm() < plain.W.norm()


@pytest.mark.parametrize("options, kind", [
    (PLAIN, None),
    (["--momentum", "0.9", "--lr", "0.02"], {"momentum_buffer"}),
    (["--optimizer", "adam", "--lr", "0.005"], {"exp_avg", "exp_avg_sq", "step"}),
])
def test_the_checkpoint_holds_the_optimizers_state(cli_run, options, kind):
    checkpoint = load_checkpoint(cli_run(options) / "checkpoint.safetensors", kind=DenoisingAutoencoder)
    if kind is None:  # plain SGD keeps no state
        assert not checkpoint.optimizer_state
        return
    state = checkpoint.optimizer_state["state"]
    assert len(state) == 3  # W, b, b_prime
    assert all(set(entry) == kind for entry in state.values())
    assert any(bool(t.abs().sum()) for entry in state.values() for t in entry.values() if isinstance(t, torch.Tensor))


@pytest.mark.parametrize("optimizer", [["--momentum", "0.9", "--lr", "0.02"], ["--optimizer", "adam", "--lr", "0.005"],
                                       ["--contraction", "0.5"], ["--sparsity-weight", "0.5"]],
                         ids=lambda a: " ".join(a))
def test_a_resumed_run_continues_bit_for_bit(tmp_path, monkeypatch, optimizer):
    x = (np.random.default_rng(0).random((300, 16)) < 0.3).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    common = ["train", "--data", str(tmp_path / "x.npy"), "--hidden", "8", "--epochs", "4", "--quiet", *optimizer]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    real_save = dae.runs.save_checkpoint

    def save_then_stop(path, model, generator, state, *args, **kwargs):
        real_save(path, model, generator, state, *args, **kwargs)
        if state["train_state"]["epoch"] == 2:
            raise KeyboardInterrupt  # as if Ctrl-C came right after epoch 2's checkpoint

    monkeypatch.setattr(dae.runs, "save_checkpoint", save_then_stop)
    assert main([*common, "--out", str(tmp_path / "part")]) == 130
    assert json.loads((tmp_path / "part" / "summary.json").read_text())["epochs_done"] == 2
    monkeypatch.setattr(dae.runs, "save_checkpoint", real_save)
    assert main(["train", "--resume", str(tmp_path / "part"), "--quiet"]) == 0
    whole, resumed = load_model(tmp_path / "whole"), load_model(tmp_path / "part")
    assert all(torch.equal(p, q) for p, q in zip(whole.parameters(), resumed.parameters()))
    assert (json.loads((tmp_path / "whole" / "summary.json").read_text())["final_cost"]
            == json.loads((tmp_path / "part" / "summary.json").read_text())["final_cost"])
