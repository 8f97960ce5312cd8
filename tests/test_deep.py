"""The deep autoencoder (Hinton & Salakhutdinov 2006) unrolled from a stack of dAs: unrolling
preserves the stack's function, tied and untied decoders, fine-tuning, PCA as the baseline,
`dae deep` end to end (outputs, resume, torchrun, errors), saving, `dae encode`, and the
scikit-learn transformer."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dae.runs
from dae import (DeepAutoencoder, DeepRunConfig, DenoisingAutoencoder, ModelFileError, StackedDenoisingAutoencoder,
                 TrainingConfig, load_mnist, load_model, pretrain, save_model, train_deep)
from dae.cli import main
from dae.config import ConfigError, from_dict, to_dict
from dae.deep import pca_fit
from dae.saving import CHECKPOINT, load_checkpoint
from dae.steps import AutogradStep
from dae.train import squared_error

HERE = Path(__file__).parent


def structured(n=300, d=20, seed=0):
    """Rows in [0, 1] that depend on 3 hidden factors: something for a small code to find."""
    g = torch.Generator().manual_seed(seed)
    factors = torch.rand(n, 3, generator=g)
    mixing = torch.randn(3, d, generator=g) * 3
    return torch.sigmoid(factors @ mixing - mixing.sum(0) / 2 + 0.1 * torch.randn(n, d, generator=g))


def deep(*sizes, seed=0, n_visible=20, **kwargs):
    return DeepAutoencoder(n_visible, sizes, generator=torch.Generator().manual_seed(seed), **kwargs)


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- unrolling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tied, code, loss", [(False, "linear", "cross-entropy"), (True, "sigmoid", "cross-entropy"),
                                              (False, "sigmoid", "squared-error")])
def test_unrolling_preserves_the_function_of_the_pretrained_stack(tied, code, loss):
    x = structured()
    model = deep(12, 8, 3, tied=tied, code_activation=code, loss=loss)
    pretrain(model, x, epochs=2, learning_rate=0.1, batch_size=10, generator=0)
    dAs = list(model.autoencoders)
    assert [dA.activation for dA in dAs] == ["sigmoid", "sigmoid", code]
    assert [dA.loss_name for dA in dAs] == [loss, "cross-entropy", "cross-entropy"]  # the dAs above see codes in [0, 1]
    code_before = model.encode(x).detach()
    model.unroll()
    with torch.no_grad():
        h = x  # the stack's codes, composed by hand, layer by layer
        for k, dA in enumerate(dAs, start=1):
            h = dA.encode(h)
            assert torch.equal(model.encode(x, layer=k), h)
        assert torch.equal(model.encode(x), code_before)
        z = h  # and the dAs' decoders in reverse order
        for dA in reversed(dAs):
            z = dA.decode(z)
        assert torch.equal(model.decode(h), z)
        assert torch.equal(model.reconstruct(x), z)
    assert model.n_code == 3 and model.encode(x).shape == (len(x), 3)


def test_any_stack_unrolls_and_its_encoder_gives_the_stacks_codes():
    x = structured()
    sda = StackedDenoisingAutoencoder(20, [15, 7, 4], 3, generator=torch.Generator().manual_seed(1))
    pretrain(sda, x, epochs=1, learning_rate=0.1, batch_size=10, generator=0)
    model = DeepAutoencoder.from_stack(sda, code_activation="sigmoid")
    assert model.unrolled and model.hidden_layer_sizes == [15, 7, 4]
    with torch.no_grad():
        for k in range(4):
            assert torch.equal(model.encode(x, layer=k), sda.encode(x, layer=k))
    dAs = [DenoisingAutoencoder(20, 9, generator=torch.Generator().manual_seed(2)),
           DenoisingAutoencoder(9, 2, activation="linear", generator=torch.Generator().manual_seed(3))]
    model = DeepAutoencoder.from_stack(dAs)
    assert model.code_activation == "linear"
    with torch.no_grad():
        assert torch.equal(model.encode(x), dAs[1].encode(dAs[0].encode(x)))
        assert torch.equal(model.reconstruct(x), dAs[0].decode(dAs[1].decode(dAs[1].encode(dAs[0].encode(x)))))
    with pytest.raises(ValueError, match="do not chain"):
        DeepAutoencoder.from_stack([dAs[1], dAs[0]])


def test_untied_dAs_unroll_with_their_own_decoders_and_the_upper_ones_need_sigmoid_decoders():
    x = structured()
    dAs = [DenoisingAutoencoder(20, 9, tied=False, generator=torch.Generator().manual_seed(2)),
           DenoisingAutoencoder(9, 2, activation="linear", generator=torch.Generator().manual_seed(3))]
    model = DeepAutoencoder.from_stack(dAs)
    with torch.no_grad():
        assert torch.equal(model.reconstruct(x), dAs[0].decode(dAs[1].decode(dAs[1].encode(dAs[0].encode(x)))))
    assert not torch.equal(model.W_prime[0], model.autoencoders[0].W)  # dA 0's own W', not W
    with pytest.raises(ValueError, match="needs tied dAs"):
        DeepAutoencoder.from_stack(dAs, tied=True)
    upper = DenoisingAutoencoder(9, 2, loss="squared-error", generator=torch.Generator().manual_seed(4))
    with pytest.raises(ValueError, match="sigmoid decoder"):
        DeepAutoencoder.from_stack([dAs[0], upper])


def test_the_stack_is_pretrained_exactly_as_an_sdas_is():
    x = structured()
    sda = StackedDenoisingAutoencoder(20, [12, 6], 2, generator=torch.Generator().manual_seed(0))
    model = deep(12, 6, code_activation="sigmoid")
    with torch.no_grad():
        for mine, theirs in zip(model.autoencoders, sda.autoencoders):
            for name in ("W", "b", "b_prime"):
                getattr(mine, name).copy_(getattr(theirs, name))
    for m in (sda, model):
        pretrain(m, x, epochs=2, learning_rate=0.1, batch_size=10, generator=5)
    for mine, theirs in zip(model.autoencoders, sda.autoencoders):
        assert same(params(mine), params(theirs))


def test_untied_unrolling_copies_the_weights_and_tied_shares_them():
    x = structured()
    untied, tied = deep(8, 2), deep(8, 2, tied=True)
    for m in (untied, tied):
        assert m.W_prime is None and m.decoder_weight(0) is m.autoencoders[0].W
        m.unroll()
    assert tied.W_prime is None and all(tied.decoder_weight(k) is dA.W for k, dA in enumerate(tied.autoencoders))
    for k, dA in enumerate(untied.autoencoders):
        assert torch.equal(untied.W_prime[k], dA.W) and untied.W_prime[k].data_ptr() != dA.W.data_ptr()
    n_encoder = sum(p.numel() for p in tied.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_encoder + 20 * 8 + 8 * 2
    with torch.no_grad():
        untied.W_prime[0].add_(1.0)  # changing the decoder's copy leaves the encoder alone
    assert not torch.equal(untied.W_prime[0], untied.autoencoders[0].W)
    train_deep(untied, x, epochs=1, batch_size=10, generator=0)
    train_deep(tied, x, epochs=1, batch_size=10, generator=0)
    assert not torch.equal(untied.W_prime[1], untied.autoencoders[1].W)  # fine-tuned apart
    assert tied.decoder_weight(1) is tied.autoencoders[1].W


def test_unroll_is_idempotent_and_never_copies_the_weights_again():
    model = deep(8, 2)
    model.unroll()
    copies = list(model.W_prime)
    with torch.no_grad():
        copies[0].add_(1.0)
    before = params(model)
    model.unroll()
    assert list(model.W_prime) == copies and same(params(model), before)


def test_the_weights_take_weight_decay_and_the_biases_do_not():
    model = deep(8, 2)
    model.unroll()
    step = AutogradStep(model, TrainingConfig(weight_decay=0.1), 1)
    decayed, plain = step.optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decayed["params"]) == ["W_prime.0", "W_prime.1", "autoencoders.0.W",
                                                              "autoencoders.1.W"]
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(names[id(p)].split(".")[-1] in ("b", "b_prime") for p in plain["params"])


# --- fine-tuning, errors, PCA ----------------------------------------------------------------------


def test_fine_tuning_lowers_the_reconstruction_error():
    x = structured()
    model = deep(12, 3)
    model.unroll()
    before = squared_error(model, x)
    history = train_deep(model, x, epochs=20, batch_size=10, learning_rate=0.01, generator=0, valid=x[:50])
    assert squared_error(model, x) < 0.5 * before
    assert history[-1].cost < history[0].cost
    assert history[-1].valid_error == pytest.approx(squared_error(model, x[:50]))


def test_a_pretrained_deep_autoencoder_beats_the_same_net_from_random_weights_after_the_same_fine_tuning():
    """Hinton & Salakhutdinov's point, on 1,000 MNIST digits: after the same short fine-tuning
    (5 epochs of Adam), the pre-trained 784-64-32-8 autoencoder reconstructs held-out digits with
    about a third less squared error than the one fine-tuned from its random initial weights
    (32-33 against 50-51 in three seeds)."""
    mnist = load_mnist()
    x, held_out = mnist.train.x[:1000], mnist.valid.x[:500]
    errors = {}
    for pretrained in (True, False):
        model = DeepAutoencoder(784, (64, 32, 8), generator=torch.Generator().manual_seed(0))
        noise = torch.Generator().manual_seed(0)
        if pretrained:
            pretrain(model, x, epochs=3, learning_rate=0.1, batch_size=20, generator=noise)
        train_deep(model, x, epochs=5, batch_size=20, learning_rate=1e-3, generator=noise)
        errors[pretrained] = squared_error(model, held_out)
    assert errors[True] < 0.8 * errors[False], errors


def test_squared_error_is_the_mean_over_rows_of_the_summed_squared_differences():
    class Zero:  # reconstructs every row as zeros
        def reconstruct(self, x):
            return torch.zeros_like(x)

    rows = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert squared_error(Zero(), rows) == (1 + 4 + 9 + 16) / 2
    model = deep(6, 2, n_visible=2)
    model.unroll()
    z = model.reconstruct(rows).detach().double()
    by_hand = ((rows.double() - z) ** 2).sum(dim=1).mean()
    assert squared_error(model, rows.numpy()) == pytest.approx(float(by_hand), rel=1e-6)


def test_pca_finds_the_subspace_of_the_data_and_its_error_is_what_the_rest_of_the_variance_leaves():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(10, 3, generator=g))[0].t()  # 3 orthonormal directions
    x = torch.randn(500, 3, generator=g) * torch.tensor([5.0, 3.0, 2.0]) @ basis + 7.0
    pca = pca_fit(x, 3)
    assert squared_error(pca, x) < 1e-8
    assert torch.allclose(pca.components.double() @ pca.components.double().t(), torch.eye(3, dtype=torch.float64))
    one = pca_fit(x, 1)
    centred = (x - x.mean(0)).double()
    residual = centred.pow(2).sum(1).mean() - (centred @ one.components[0]).pow(2).mean()
    assert squared_error(one, x) == pytest.approx(float(residual), rel=1e-5)
    assert abs(float(one.components[0] @ basis[0].double())) > 0.99  # the widest direction (of 500 samples)


# --- saving --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied, unrolled", [(False, True), (True, True), (False, False)])
def test_a_deep_autoencoder_saves_and_loads_whole(tmp_path, tied, unrolled):
    x = structured()
    model = deep(8, 2, tied=tied, loss="squared-error", corruption_levels=(0.0, 0.25))
    if unrolled:
        train_deep(model, x, epochs=1, batch_size=10, generator=0)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path, kind=DeepAutoencoder)
    assert loaded.unrolled == unrolled and loaded.config == model.config
    assert same(params(loaded), params(model))
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    with pytest.raises(ModelFileError, match="not a DenoisingAutoencoder"):
        load_model(tmp_path, kind=DenoisingAutoencoder)


# --- dae deep -------------------------------------------------------------------------------------

ARGS = ["--hidden", "16,2", "--pretrain-epochs", "2", "--pretrain-batch-size", "10", "--epochs", "3",
        "--batch-size", "20", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """240 binary 8x8 images, three labels: 200 to train on (a sixth of them held out), 40 test."""
    rng = np.random.default_rng(0)
    x = (rng.random((240, 8, 8)) < 0.3).astype(np.float32)
    y = rng.integers(0, 3, 240)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    return path


@pytest.fixture(scope="module")
def whole(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "whole"
    assert main(["deep", "--data", str(data), *ARGS, "--out", str(out)]) == 0
    return out


def _lines(run):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_dae_deep_writes_every_output(data, whole):
    assert {p.name for p in whole.iterdir()} == {
        "model.safetensors", "config.json", "run_config.json", "metrics.jsonl", "summary.json", "checkpoint.safetensors",
        "reconstructions.png", "codes.png", "curve.png", "pretrain_curve.png", "pretrained"}
    lines = _lines(whole)
    assert [(m["phase"], m.get("layer"), m["epoch"]) for m in lines] == [
        ("pretrain", 1, 1), ("pretrain", 1, 2), ("pretrain", 2, 1), ("pretrain", 2, 2),
        ("finetune", None, 1), ("finetune", None, 2), ("finetune", None, 3)]
    assert all({"cost", "valid_squared_error", "learning_rate"} <= m.keys() for m in lines[4:])
    summary = json.loads((whole / "summary.json").read_text())
    model = load_model(whole)
    assert isinstance(model, DeepAutoencoder) and model.unrolled and model.hidden_layer_sizes == [16, 2]
    assert (summary["n_train"], summary["n_valid"], summary["n_test"]) == (167, 33, 40)  # a sixth held out
    x_test = torch.from_numpy(np.load(data)["x_test"].reshape(40, 64))
    assert summary["test_squared_error"] == pytest.approx(squared_error(model, x_test), rel=1e-5)
    assert summary["test_cross_entropy"] == pytest.approx(float(model.reconstruction_error(x_test).mean().detach()), rel=1e-5)
    assert summary["valid_squared_error"] == lines[-1]["valid_squared_error"]
    assert summary["pca_test_squared_error"] > 0 and summary["code_size"] == 2 and summary["sizes"] == "64-16-2"
    assert from_dict(DeepRunConfig, summary["config"]) == from_dict(DeepRunConfig, json.loads(
        (whole / "run_config.json").read_text()))
    assert load_model(whole / "pretrained").unrolled is False
    with Image.open(whole / "reconstructions.png") as im:
        pixels = np.asarray(im)
    # Three bands of ten 8x8 images with 1-pixel spacing, enlarged twice: the test digits, then
    # the deep autoencoder's reconstructions of them (then PCA's).
    width, gap = 2 * (10 * 9 - 1), (pixels.shape[0] - 3 * 16) // 2
    bands = [pixels[i * (16 + gap): i * (16 + gap) + 16, -width:][::2, ::2] for i in range(3)]
    shown = [x_test[:10], model.reconstruct(x_test[:10]).detach()]
    for band, rows in zip(bands, shown):
        for i in range(10):
            assert np.abs(band[:, 9 * i: 9 * i + 8].astype(float) - 255 * rows[i].reshape(8, 8).numpy()).max() <= 1
    assert not np.array_equal(bands[1], bands[2])
    with Image.open(whole / "codes.png") as im:
        assert im.size == (800, 800)


def test_a_code_of_more_than_two_units_draws_no_scatter_and_no_pretraining_writes_no_pretrained_folder(data, tmp_path):
    out = tmp_path / "run"
    assert main(["deep", "--data", str(data), "--hidden", "8,3", "--no-pretrain", "--epochs", "2", "--batch-size",
                 "20", "--quiet", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert "codes.png" not in names and "pretrained" not in names and "pretrain_curve.png" not in names
    assert all(m["phase"] == "finetune" for m in _lines(out))
    assert json.loads((out / "summary.json").read_text())["pretrained"] is False


def test_a_code_wider_than_the_data_runs_without_a_pca_baseline(data, tmp_path, capsys):
    out = tmp_path / "wide"
    assert main(["deep", "--data", str(data), "--hidden", "96", "--no-pretrain", "--epochs", "1", "--batch-size",
                 "20", "--quiet", "--out", str(out)]) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["code_size"] == 96 and summary["pca_test_squared_error"] is None
    assert summary["test_squared_error"] > 0 and summary["train_squared_error"] > 0
    assert (out / "reconstructions.png").is_file() and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("stop_at", [("pretrain", 1, 1), ("pretrain", 2, 2), ("finetune", None, 2)],
                         ids=["in-pretraining", "end-of-pretraining", "fine-tuning"])
def test_a_run_stopped_in_either_phase_resumes_to_the_same_model(data, whole, tmp_path, monkeypatch, stop_at):
    real_save = dae.runs.save_checkpoint

    def save_then_stop(path, model, generator, state, optimizer_state=None, tensors=None):
        real_save(path, model, generator, state, optimizer_state, tensors)
        done = state["metrics"][-1]
        if (done["phase"], done.get("layer"), done["epoch"]) == stop_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(dae.runs, "save_checkpoint", save_then_stop)
    part = tmp_path / "part"
    assert main(["deep", "--data", str(data), *ARGS, "--out", str(part)]) == 130
    summary = json.loads((part / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["resume"] == f"dae deep --resume {part}"
    assert load_checkpoint(part / CHECKPOINT).state["phase"] == stop_at[0]
    monkeypatch.setattr(dae.runs, "save_checkpoint", real_save)
    assert main(["deep", "--resume", str(part), "--quiet"]) == 0
    assert same(params(load_model(whole)), params(load_model(part)))
    assert _lines(whole) == _lines(part)
    keys = ("test_squared_error", "valid_squared_error", "pca_test_squared_error", "final_cost", "config")
    a, b = (json.loads((run / "summary.json").read_text()) for run in (whole, part))
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


def test_dae_encode_writes_a_deep_models_codes_or_any_encoder_layer(data, whole, tmp_path, capsys):
    assert main(["encode", "--model", str(whole), "--data", str(data), "--split", "test",
                 "--out", str(tmp_path / "codes.npy")]) == 0
    codes = np.load(tmp_path / "codes.npy")
    x_test = torch.from_numpy(np.load(data)["x_test"].reshape(40, 64))
    assert codes.shape == (40, 2)
    assert np.allclose(codes, load_model(whole).encode(x_test).detach().numpy(), atol=1e-6)
    assert main(["encode", "--model", str(whole), "--data", str(data), "--layer", "1",
                 "--out", str(tmp_path / "first.npy")]) == 0
    assert np.load(tmp_path / "first.npy").shape == (200, 16)
    capsys.readouterr()
    assert main(["encode", "--model", str(whole), "--data", str(data), "--layer", "3",
                 "--out", str(tmp_path / "no.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dae: error: --layer 3: the model has 2 hidden layers") and err.count("\n") == 1


@pytest.mark.parametrize("argv, phrase", [
    (["--hidden", "0"], "--hidden: expected a positive integer"),
    (["--hidden", "8,x"], "--hidden: expected a positive integer"),
    (["--code", "bogus"], "--code: invalid choice"),
    (["--lr", "-1"], "--lr: expected a positive number"),
    (["--pretrain-lr", "0"], "--pretrain-lr: expected a positive number"),
    (["--corruption", "0.1"], "corruption_levels gives 1 levels for 2 layers"),
    (["--corruption", "1.5,0"], "--corruption: expected a number in [0, 1)"),
    (["--pretrain-epochs", "1,2,3"], "epochs: 3 values for 2 layers"),
    (["--batch-size", "1000"], "batch size 1000 exceeds the 167 rows"),
    (["--data", "missing.npz"], "missing.npz: no such file"),
])
def test_bad_options_are_one_clean_line(data, tmp_path, capsys, argv, phrase):
    out = tmp_path / "out"
    args = ["deep", "--data", str(data), *ARGS, *argv, "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("dae: error: ") and err.count("\n") == 1 and phrase in err, err
    assert not out.exists()  # nothing written


def test_resume_refuses_any_other_option(whole, capsys):
    assert main(["deep", "--resume", str(whole), "--epochs", "5"]) == 2
    err = capsys.readouterr().err
    assert "--epochs cannot change them" in err and err.count("\n") == 1


def test_the_config_rules_of_a_deep_autoencoder():
    config = DeepRunConfig()
    assert config.model.corruption_levels == (0.1, 0.2, 0.3, 0.3)  # the tutorial's, the last repeated
    shallower = from_dict(DeepRunConfig, {"model": {"hidden_layer_sizes": [10, 2]}})
    assert shallower.model.corruption_levels == (0.1, 0.2)  # a new depth takes the default levels
    assert from_dict(DeepRunConfig, to_dict(config)) == config
    for bad in ({"model": {"code_activation": "tanh"}}, {"model": {"loss": "hinge"}},
                {"training": {"epochs": [1, 2]}}, {"image_size": [0, 3]}, {"checkpoint_every": 0}):
        with pytest.raises(ConfigError):
            from_dict(DeepRunConfig, bad)


def test_two_processes_fine_tune_as_one_with_twice_the_batch(data, tmp_path):
    """torchrun: with no noise in pre-training, 2 processes with minibatches of B end where 1
    process with 2B does (up to float rounding); only rank 0 writes."""
    common = ["deep", "--data", str(data), "--hidden", "16,2", "--corruption", "0,0", "--pretrain-epochs", "2",
              "--epochs", "3", "--device", "cpu", "--quiet"]
    two, one = tmp_path / "two", tmp_path / "one"
    runs = [{"argv": [*common, "--pretrain-batch-size", "5", "--batch-size", "10", "--out", str(two)]}]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    process = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              str(HERE / "torchrun_runs.py"), json.dumps(runs), str(tmp_path)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    assert [json.loads((tmp_path / f"rank{r}.json").read_text())["codes"] for r in range(2)] == [[0], [0]]
    assert main([*common, "--pretrain-batch-size", "10", "--batch-size", "20", "--out", str(one)]) == 0
    a, b = load_model(two), load_model(one)
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(a.parameters(), b.parameters()))
    s2, s1 = (json.loads((run / "summary.json").read_text()) for run in (two, one))
    assert s2["world_size"] == 2 and s2["global_batch_size"] == 20
    assert s2["test_squared_error"] == pytest.approx(s1["test_squared_error"], rel=1e-4)


# --- scikit-learn --------------------------------------------------------------------------------

def test_the_transformer_passes_scikit_learns_checks():
    pytest.importorskip("sklearn")
    from sklearn.utils.estimator_checks import check_estimator

    from dae.sklearn import DeepAutoencoderTransformer

    estimator = DeepAutoencoderTransformer(hidden_layer_sizes=(8, 2), pretrain_epochs=1, n_epochs=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None, on_skip=None)
    assert not [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    assert sum(r["status"] == "passed" for r in results) >= 40


def test_the_transformers_defaults_are_dae_deeps_and_it_codes_decodes_and_scores():
    pytest.importorskip("sklearn")
    import inspect

    from dae.sklearn import DeepAutoencoderTransformer

    c = DeepRunConfig()
    defaults = {name: p.default for name, p in inspect.signature(DeepAutoencoderTransformer).parameters.items()}
    assert defaults == {
        "hidden_layer_sizes": c.model.hidden_layer_sizes, "code_activation": c.model.code_activation,
        "tied": c.model.tied, "loss": c.model.loss, "corruption_levels": None, "pretrain": c.pretrain,
        "pretrain_epochs": c.pretraining.epochs, "pretrain_learning_rate": c.pretraining.learning_rate,
        "pretrain_batch_size": c.pretraining.batch_size, "n_epochs": c.training.epochs,
        "learning_rate": c.training.learning_rate, "batch_size": c.training.batch_size,
        "optimizer": c.training.optimizer, "schedule": c.training.schedule, "random_state": None,
        "device": c.device}
    X = structured().numpy() * 10 - 3  # outside [0, 1]: mapped into it for the cross-entropy
    t = DeepAutoencoderTransformer(hidden_layer_sizes=(12, 3), pretrain_epochs=2, n_epochs=20, batch_size=10,
                                   learning_rate=0.01, random_state=0).fit(X)
    codes = t.transform(X)
    assert codes.shape == (300, 3) and list(t.get_feature_names_out()) == [
        f"deepautoencodertransformer{i}" for i in range(3)]
    back = t.inverse_transform(codes)
    assert back.shape == X.shape and np.mean((back - X) ** 2) < 0.5 * np.mean(X.var(axis=0))  # beats X's mean
    model = t.model_.cpu().double()
    assert np.allclose(-t.score_samples(X), model.reconstruction_error(t.to_tensor(X).double()).detach().numpy())
