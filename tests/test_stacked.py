"""Stacked denoising autoencoders: shared parameters, greedy pre-training, fine-tuning with the
tutorial's early stopping (exactly SdA.py's rule), the hand-written fine-tuning step against
autograd, and the `dae sda` command."""

import copy
import importlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dae import StackedDenoisingAutoencoder, TrainState, TrainingDiverged, load_model, save_model
from dae.cli import main
from dae.config import SDA_PRESETS, ConfigError, FinetuneConfig, SdARunConfig, merge, refit_epochs, to_dict
from dae.steps import FinetuneStep, PseudoLabelStep
from dae.train import Patience, error_rate, finetune, pretrain

# The module, which monkeypatch reaches into (the name dae.train is the function).
train_module = importlib.import_module("dae.train")


def tiny_problem(n=600, seed=0):
    """Four classes, decided by two of 16 inputs in [0, 1], each at least 0.1 from 0.5."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 16, generator=g)
    x[:, :2] = torch.where(x[:, :2] > 0.5, 0.6 + 0.4 * x[:, :2], 0.4 * x[:, :2])
    y = (x[:, 0] > 0.5).long() + 2 * (x[:, 1] > 0.5).long()
    return x, y


def majority_error(y):
    """The error of always predicting the most frequent class: the baseline to beat."""
    return 1 - np.bincount(np.asarray(y)).max() / len(y)


def sda(*sizes, seed=0, **kwargs):
    return StackedDenoisingAutoencoder(16, list(sizes), 4, generator=torch.Generator().manual_seed(seed), **kwargs)


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_hidden_layer_shares_W_and_b_with_its_dA_and_only_b_prime_is_the_dAs_own():
    m = StackedDenoisingAutoencoder(16, [12, 8], 4, [0.1, 0.2], generator=torch.Generator().manual_seed(0))
    for layer, dA in zip(m.hidden, m.autoencoders):
        assert dA.W is layer.W and dA.b is layer.b
        assert all(dA.b_prime is not p for p in layer.parameters())
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == (16 * 12 + 12 + 16) + (12 * 8 + 8 + 12) + (8 * 4 + 4)
    assert [dA.corruption_level for dA in m.autoencoders] == [0.1, 0.2]


def test_without_corruption_levels_each_layer_takes_the_tutorials_and_deeper_ones_repeat_the_last():
    m = sda(5, 5, 5, 5, 5)
    assert [dA.corruption_level for dA in m.autoencoders] == [0.1, 0.2, 0.3, 0.3, 0.3]


def test_the_logistic_layer_starts_at_zero_so_every_class_starts_equally_likely():
    m = sda(12)
    assert torch.count_nonzero(m.classifier.W) == 0 and torch.count_nonzero(m.classifier.b) == 0
    assert torch.allclose(m.predict_proba(torch.rand(3, 16)), torch.full((3, 4), 0.25))


def test_pretraining_a_layer_changes_the_mlp_layer_and_trains_on_the_codes_below(monkeypatch):
    x, _ = tiny_problem()
    m = StackedDenoisingAutoencoder(16, [12, 8], 4, [0.1, 0.2], generator=torch.Generator().manual_seed(0))
    before = [layer.W.detach().clone() for layer in m.hidden]
    seen = []
    original_train = train_module.train

    def spy(model, data, *args, **kwargs):
        seen.append((model, data.clone()))
        return original_train(model, data, *args, **kwargs)

    monkeypatch.setattr(train_module, "train", spy)
    pretrain(m, x, epochs=1, learning_rate=0.1, batch_size=10, generator=0)
    for layer, W0 in zip(m.hidden, before):
        assert not torch.equal(layer.W, W0)  # the MLP's own W moved
    assert [model for model, _ in seen] == list(m.autoencoders)
    assert torch.equal(seen[0][1], x)
    with torch.no_grad():  # layer 2's dA saw the clean codes of layer 1 (after layer 1 was trained)
        assert torch.allclose(seen[1][1], torch.sigmoid(x @ m.hidden[0].W + m.hidden[0].b))


def test_pretraining_takes_one_epochs_value_per_layer_as_a_list_or_a_tuple():
    x, _ = tiny_problem(100)
    for epochs in ([1, 2], (1, 2)):
        histories = pretrain(sda(6, 4), x, epochs=epochs, learning_rate=0.1, batch_size=10, generator=0)
        assert [len(h) for h in histories] == [1, 2]
    with pytest.raises(ConfigError, match="3 values for 2 layers"):
        pretrain(sda(6, 4), x, epochs=[1, 2, 3], batch_size=10)


def test_encode_predict_and_predict_proba():
    m = sda(12, 8)
    with torch.no_grad():
        m.classifier.W.normal_()
    x = torch.rand(5, 16)
    assert m.encode(x, layer=0) is x
    assert m.encode(x, layer=1).shape == (5, 12) and m.encode(x).shape == (5, 8)
    p = m.predict_proba(x)
    assert torch.allclose(p.sum(1), torch.ones(5)) and torch.equal(m.predict(x), p.argmax(1))
    with pytest.raises(ValueError, match="layer"):
        m.encode(x, layer=3)


# --- the tutorial's early stopping ---------------------------------------------------------------


def test_patience_counts_minibatches_and_stops_at_the_first_iter_where_patience_le_iter():
    rule = Patience(10, FinetuneConfig(patience_epochs=2))
    assert rule.patience == 20 and rule.best == math.inf
    assert rule.steps_allowed(0) == 21  # iters 0..20: training stops after iter 20
    assert not rule.exhausted(19) and rule.exhausted(20)
    assert rule.update(9, 0.5)  # a first error is a best; 2 x 9 = 18 < 20 leaves patience alone
    assert rule.patience == 20
    assert rule.update(19, 0.3) and rule.patience == 38  # 0.3 < 0.995 x 0.5: patience = 2 x iter
    assert not rule.update(29, 0.31) and rule.best == 0.3 and rule.patience == 38
    assert rule.steps_allowed(30) == 9  # iters 30..38 of the next epoch
    assert not rule.exhausted(37) and rule.exhausted(38)
    # A new best by less than 0.5% is recorded but does not extend patience.
    assert rule.update(59, 0.2995) and rule.best == 0.2995 and rule.patience == 38
    # A resumed rule starts from the saved counters.
    again = Patience(10, FinetuneConfig(patience_epochs=2), patience=38, best=0.3)
    assert not again.update(39, 0.3) and again.steps_allowed(39) == 1


def test_the_patience_rule_on_a_longer_scripted_validation_curve():
    rule = Patience(100, FinetuneConfig(patience_epochs=10))  # patience starts at 1000 minibatches
    curve = {1: 0.10, 2: 0.05, 8: 0.04}  # big improvements; other epochs are worse or barely better
    stopped = None
    for epoch in range(1, 100):
        last = epoch * 100 - 1  # iter of the epoch's last minibatch, where it validates
        error = curve.get(epoch, 0.0399 if epoch > 8 else 0.2)
        rule.update(last, error)
        if rule.exhausted(last):
            stopped = epoch
            break
        assert rule.steps_allowed(last + 1) == rule.patience - last  # up to and including iter = patience
    # At epoch 8 the 20% improvement sets patience to 2 x 799 = 1598 minibatches; epoch 9's
    # 0.25% improvement is a new best but does not extend it.  Iter 1598 is in epoch 16.
    assert rule.patience == 1598 and rule.best == 0.0399
    assert stopped == 16
    assert rule.steps_allowed(1500) == 99  # in finetune, epoch 16 runs iters 1500..1598 and stops there


def scripted_validation(monkeypatch, valid_x, errors):
    """Make finetune's validation errors ``errors`` (in order); return the model's parameters
    at each validation, keyed by its 1-based count."""
    scripted, snapshots = iter(errors), {}
    real_error_rate = train_module.error_rate

    def fake_error_rate(model, xs, ys, world=None):
        if xs is valid_x:
            snapshots[len(snapshots) + 1] = params(model)
            return next(scripted)
        return real_error_rate(model, xs, ys, world=world)

    monkeypatch.setattr(train_module, "error_rate", fake_error_rate)
    return snapshots


def test_finetune_stops_inside_an_epoch_exactly_where_the_tutorial_does(monkeypatch):
    """The issue's curve: 10 minibatches an epoch, patience 2 epochs (20 minibatches).  Epoch 2
    (iter 19) improves from 0.5 to 0.3, so patience = 2 x 19 = 38; the tutorial (SdA.py) then
    stops at iter 38, the 9th minibatch of epoch 4, before that epoch's validation (where 0.2
    would have been a new best).  The best model, epoch 2's, is the one kept."""
    x, y = tiny_problem(150)
    m = sda(12)
    valid_x, test = x[100:], (x[50:100], y[50:100])
    snapshots = scripted_validation(monkeypatch, valid_x, [0.5, 0.3, 0.31, 0.2, 0.2, 0.2, 0.2, 0.2])
    state = TrainState()
    result = finetune(m, (x[:50], y[:50]), (valid_x, y[100:]), test, epochs=50, learning_rate=0.1,
                      batch_size=5, patience_epochs=2, state=state)
    assert result.stopped_by == "patience"
    assert len(result.history) == 4 and state.iteration == 39  # iters 0..38
    assert [e.complete for e in result.history] == [True, True, True, False]
    assert math.isnan(result.history[-1].valid_error) and len(snapshots) == 3  # epoch 4 never validated
    assert result.best_epoch == 2 and result.best_valid_error == 0.3
    assert same(params(m), snapshots[2]) and not same(snapshots[2], snapshots[3])  # the best model, restored
    assert result.history[1].test_error == result.test_error == train_module.error_rate(m, *test)
    assert result.history[2].test_error is None  # measured only at new bests


def tutorial_loop(errors, n_train_batches, patience_epochs, n_epochs):
    """SdA.py's fine-tuning loop (test_SdA), line for line, with the validation errors scripted:
    (epochs begun, iter it stopped at or None, iter of the best validation)."""
    patience = patience_epochs * n_train_batches
    patience_increase, improvement_threshold = 2.0, 0.995
    validation_frequency = min(n_train_batches, patience // 2)
    best_validation_loss, best_iter, done_looping, epoch = np.inf, 0, False, 0
    scripted, stopped = (e for e in errors), None
    while (epoch < n_epochs) and (not done_looping):
        epoch = epoch + 1
        for minibatch_index in range(n_train_batches):
            iter = (epoch - 1) * n_train_batches + minibatch_index  # noqa: A001  (the tutorial's name)
            if (iter + 1) % validation_frequency == 0:
                this_validation_loss = next(scripted)
                if this_validation_loss < best_validation_loss:
                    if this_validation_loss < best_validation_loss * improvement_threshold:
                        patience = max(patience, iter * patience_increase)
                    best_validation_loss, best_iter = this_validation_loss, iter
            if patience <= iter:
                done_looping, stopped = True, iter
                break
    return epoch, stopped, best_iter


@pytest.mark.parametrize("seed", [*range(6), "steady"])
def test_finetune_stops_and_keeps_the_best_as_the_tutorials_loop_does_on_random_curves(monkeypatch, seed):
    if seed == "steady":  # 2% better every epoch: patience keeps growing, all epochs run
        errors, patience_epochs = [0.5 * 0.98**k for k in range(60)], 2
    else:
        rng = np.random.default_rng(seed)
        errors = list(np.minimum.accumulate(rng.uniform(0.2, 0.6, 60)) * rng.uniform(0.99, 1.08, 60))
        patience_epochs = int(rng.integers(2, 5))
    n_epochs = 40
    epochs, stopped, best_iter = tutorial_loop(errors, 10, patience_epochs, n_epochs)
    x, y = tiny_problem(100)
    valid_x = x[50:]
    scripted_validation(monkeypatch, valid_x, errors)
    state = TrainState()
    result = finetune(sda(6), (x[:50], y[:50]), (valid_x, y[50:]), epochs=n_epochs, batch_size=5,
                      patience_epochs=patience_epochs, state=state)
    assert len(result.history) == epochs
    assert result.stopped_by == ("max_epochs" if stopped is None else "patience")
    assert state.iteration == (epochs * 10 if stopped is None else stopped + 1)
    assert result.best_epoch == (best_iter + 1) // 10


# --- fine-tuning ---------------------------------------------------------------------------------


def test_a_tiny_sda_learns_a_tiny_problem():
    x, y = tiny_problem(1200)
    g = torch.Generator().manual_seed(0)
    m = StackedDenoisingAutoencoder(16, [16, 16], 4, [0.1, 0.2], generator=g)
    pretrain(m, x[:800], epochs=2, learning_rate=0.1, batch_size=5, generator=g)
    result = finetune(m, (x[:800], y[:800]), (x[800:1000], y[800:1000]), (x[1000:], y[1000:]), epochs=30,
                      learning_rate=0.2, batch_size=5, momentum=0.9, schedule="cosine", shuffle=True, generator=g)
    assert majority_error(y[1000:]) > 0.6
    assert result.test_error < 0.03, result.test_error
    assert error_rate(m, x[800:1000], y[800:1000]) == result.best_valid_error


def test_pretrain_finetune_and_error_rate_take_float64_numpy_and_torch_inputs():
    x, y = tiny_problem(300)  # float32 values: cast to the model's float32 they are exactly the same
    outcomes = []
    for convert in (lambda t: t, lambda t: t.double(), lambda t: t.double().numpy()):
        m = sda(8)
        pretrain(m, convert(x[:200]), epochs=2, learning_rate=0.1, batch_size=5, generator=1)
        labels = y.numpy() if isinstance(convert(x[:1]), np.ndarray) else y
        result = finetune(m, (convert(x[:200]), labels[:200]), (convert(x[200:]), labels[200:]), epochs=3,
                          batch_size=5, momentum=0.5, generator=2)
        assert m.classifier.W.dtype == torch.float32
        outcomes.append((params(m), result.best_valid_error, error_rate(m, convert(x[200:]), labels[200:])))
    reference = outcomes[0]
    assert not same(reference[0], params(sda(8)))  # it trained
    for weights, valid_error, error in outcomes[1:]:
        assert same(weights, reference[0]) and valid_error == reference[1] and error == reference[2]


@pytest.mark.parametrize("where", ["train_set", "valid_set", "test_set"])
@pytest.mark.parametrize("bad", [-1, 4])
def test_finetune_refuses_labels_outside_0_to_n_classes_minus_1_before_training(where, bad):
    x, y = tiny_problem(100)
    wrong = y.clone()
    wrong[7] = bad
    sets = {"train_set": (x, y), "valid_set": (x, y), "test_set": (x, y), where: (x, wrong)}
    m = sda(6)
    before = params(m)
    with pytest.raises(ValueError, match=rf"{where}: labels must be in 0\.\.3"):
        finetune(m, **sets, epochs=1, batch_size=10)
    assert same(params(m), before)


def test_finetune_refuses_labels_that_are_not_integers_or_not_one_per_row():
    x, y = tiny_problem(100)
    with pytest.raises(ValueError, match="labels must be integers"):
        finetune(sda(6), (x, y.double() + 0.5), epochs=1, batch_size=10)
    with pytest.raises(ValueError, match="one label per row"):
        finetune(sda(6), (x, y[:50]), epochs=1, batch_size=10)


def test_when_fine_tuning_diverges_the_best_parameters_so_far_are_restored_before_the_error(monkeypatch):
    x, y = tiny_problem(100)
    m = sda(12)
    valid_x = x[50:]
    snapshots = scripted_validation(monkeypatch, valid_x, [0.5, 0.3, 0.4])  # epoch 2 is the best

    def break_after_epoch_3(e):
        if e.epoch == 3:
            with torch.no_grad():
                m.classifier.W.fill_(float("nan"))  # epoch 4's cost is NaN

    with pytest.raises(TrainingDiverged, match="diverged at epoch 4"):
        finetune(m, (x[:50], y[:50]), (valid_x, y[50:]), epochs=10, batch_size=5, callback=break_after_epoch_3)
    assert same(params(m), snapshots[2])
    assert all(torch.isfinite(p).all() for p in m.parameters())


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"learning_rate": -1.0}, {"momentum": 1.0}, {"schedule": "step"},
                                    {"patience_epochs": 1}, {"improvement_threshold": 0.0}, {"max_epochs": 3}])
def test_finetune_refuses_bad_settings_with_a_config_error(kwargs):
    x, y = tiny_problem(100)
    with pytest.raises(ConfigError):
        finetune(sda(4), (x, y), (x, y), **kwargs)


def test_finetune_refuses_a_batch_larger_than_the_data_and_a_model_refuses_full_dropout():
    x, y = tiny_problem(100)
    with pytest.raises(ValueError, match="batch size 1000 exceeds the 100 rows"):
        finetune(sda(4), (x, y), (x, y), batch_size=1000)
    for kwargs in ({"dropout": 1.0}, {"input_corruption": 1.0}):
        with pytest.raises(ConfigError, match="must be in"):
            sda(4, **kwargs)


def test_an_sda_saves_and_loads_back_identical(tmp_path):
    m = StackedDenoisingAutoencoder(16, [12, 8], 4, [0.1, 0.2], generator=torch.Generator().manual_seed(0),
                                    dropout=0.3, input_corruption=0.2)
    with torch.no_grad():
        m.classifier.W.normal_()
        m.autoencoders[1].b_prime.normal_()
    save_model(m, tmp_path / "sda")
    loaded = load_model(tmp_path / "sda")
    assert isinstance(loaded, StackedDenoisingAutoencoder)
    assert loaded.config == m.config
    assert same(params(loaded), params(m))
    assert loaded.autoencoders[0].W is loaded.hidden[0].W  # still shared after loading


# --- the hand-written fine-tuning step --------------------------------------------------------------


def autograd_reference(model, blocks, lr, momentum, generator):
    """Autograd on ``model(x, generator)`` in training mode, and torch.optim.SGD; the summed losses."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    sums = []
    for x, y in blocks:
        total = 0.0
        for xb, yb in zip(x.split(10), y.split(10)):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb, generator), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        sums.append(total)
    return sums


@pytest.mark.parametrize("regularised", [False, True], ids=["plain", "dropout+input_corruption"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_hand_written_finetuning_step_is_autograd_on_the_model_in_training_mode_and_torch_sgd(
        momentum, regularised):
    x, y = tiny_problem(60)
    x = x.double()
    kwargs = {"dropout": 0.3, "input_corruption": 0.2} if regularised else {}
    m = sda(12, 8, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        m.classifier.W.normal_(generator=torch.Generator().manual_seed(1))
    reference = copy.deepcopy(m)
    blocks = [(x[i * 30:(i + 1) * 30], y[i * 30:(i + 1) * 30]) for i in range(2)] * 2  # 4 blocks of 3 minibatches
    g_step, g_ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    step = FinetuneStep(m, momentum, batch_size=10, block_steps=3)
    step.set_learning_rate(0.3)
    with torch.no_grad():
        sums = [step(block, g_step) for block in blocks]
    expected = autograd_reference(reference, blocks, 0.3, momentum, g_ref)
    for (name, p), q in zip(m.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-10, atol=1e-12), name
    assert np.allclose(sums, expected, rtol=1e-12)
    # The same masks, drawn in the same order: both generators moved alike, and they did move.
    assert torch.equal(g_step.get_state(), g_ref.get_state())
    assert torch.equal(g_step.get_state(), torch.Generator().manual_seed(5).get_state()) != regularised


@pytest.mark.parametrize("weight", [0.0, 2.5], ids=["before the ramp", "pseudo-labels"])
def test_the_pseudo_label_step_is_autograd_on_labelled_plus_weighted_pseudo_labelled_costs(weight):
    """Lee (2013)'s cost: the labelled minibatch's mean NLL + alpha x the unlabelled one's mean NLL
    of the class the noise-free network predicts; the labelled minibatch drawn afresh per step."""
    x, y = tiny_problem(90)
    x = x.double()
    labelled, unlabelled = (x[:25], y[:25]), x[30:]  # 60 unlabelled rows: 2 blocks of 3 minibatches of 10
    m = sda(12, 8, dtype=torch.float64, dropout=0.3, input_corruption=0.2)
    with torch.no_grad():  # weights that predict several classes
        m.classifier.W.normal_(0.0, 10.0, generator=torch.Generator().manual_seed(4))
    assert len(m.predict(unlabelled).unique()) > 2
    reference = copy.deepcopy(m)
    g_step, g_ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    step = PseudoLabelStep(m, labelled, 0.9, batch_size=10, block_steps=3)
    step.set_learning_rate(0.3)
    step.weight = weight
    with torch.no_grad():
        sums = [step((block,), g_step) for block in unlabelled.split(30)]

    reference.train()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.3, momentum=0.9)
    expected, pseudo_seen = [], []
    for block in unlabelled.split(30):
        total = 0.0
        for xb in block.split(10):
            pick = torch.randperm(25, generator=g_ref)[:10]
            optimizer.zero_grad()
            if weight:
                with torch.no_grad():
                    pseudo = reference.predict(xb)
                pseudo_seen.append(pseudo)
                logits = reference(torch.cat([labelled[0][pick], xb]), g_ref)
                loss = F.cross_entropy(logits[:10], labelled[1][pick]) + weight * F.cross_entropy(logits[10:], pseudo)
            else:
                loss = F.cross_entropy(reference(labelled[0][pick], g_ref), labelled[1][pick])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        expected.append(total)
    for (name, p), q in zip(m.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-10, atol=1e-12), name
    assert np.allclose(sums, expected, rtol=1e-12)
    assert torch.equal(g_step.get_state(), g_ref.get_state())
    if weight:  # the pseudo-labels were not all one class (the cost would then be a constant push)
        assert len(torch.cat(pseudo_seen).unique()) > 1


def test_a_finetuning_step_with_momentum_keeps_its_velocity_as_torch_sgd_names_it():
    x, y = tiny_problem(20)
    m = sda(6)
    step = FinetuneStep(m, 0.9, batch_size=10, block_steps=2)
    step.set_learning_rate(0.1)
    with torch.no_grad():
        step((x, y), torch.Generator())
    saved = step.state_dict()
    assert sorted(saved["state"]) == list(range(4)) and all(torch.count_nonzero(s["momentum_buffer"])
                                                            for s in saved["state"].values())
    fresh = FinetuneStep(copy.deepcopy(m), 0.9, batch_size=10, block_steps=2)
    fresh.load_state_dict(saved)
    assert all(torch.equal(a["momentum_buffer"], b["momentum_buffer"])
               for a, b in zip(fresh.state_dict()["state"].values(), saved["state"].values()))


def test_eval_mode_and_predict_never_drop_units_or_mask_inputs():
    m = sda(12, 8, dropout=0.5, input_corruption=0.5)
    with torch.no_grad():
        m.classifier.W.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.rand(50, 16)
    with torch.no_grad():
        h = x
        for layer in m.hidden:
            h = torch.sigmoid(h @ layer.W + layer.b)
        clean = h @ m.classifier.W + m.classifier.b
        g = torch.Generator().manual_seed(3)
        start = g.get_state()
        m.train()
        assert not torch.allclose(m(x, g), clean)  # training mode drops units and masks inputs
        assert torch.allclose(m.predict_proba(x), torch.softmax(clean, 1)) and torch.equal(m.predict(x),
                                                                                            clean.argmax(1))
        assert error_rate(m, x, clean.argmax(1)) == 0.0
        m.eval()
        g.set_state(start)
        assert torch.allclose(m(x, g), clean) and torch.equal(g.get_state(), start)  # nothing drawn


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def labelled(tmp_path):
    x, y = tiny_problem(700)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x[:600].numpy(), y_train=y[:600].numpy(), x_test=x[600:].numpy(), y_test=y[600:].numpy())
    return path


SMALL = ["--hidden", "24,12", "--pretrain-epochs", "2", "--pretrain-batch-size", "5", "--finetune-epochs", "8",
         "--batch-size", "5", "--quiet"]


def test_dae_sda_writes_its_outputs_and_a_checkpoint_per_pretrained_layer(tmp_path, labelled, capsys):
    out = tmp_path / "run"
    assert main(["sda", "--data", str(labelled), *SMALL, "--out", str(out)]) == 0, capsys.readouterr().err
    assert {"filters.png", "pretrain_curve.png", "finetune_curve.png", "metrics.jsonl", "summary.json",
            "model.safetensors", "config.json", "run_config.json", "pretrained"} <= {p.name for p in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    x, y = tiny_problem(700)
    model = load_model(out)
    assert model.hidden_layer_sizes == [24, 12]
    # The test error is that of the model kept (the best one), and far better than the baseline.
    assert summary["test_error"] == error_rate(model, x[600:], y[600:])
    assert summary["test_error"] < majority_error(y[600:]) / 2
    assert summary["pretrain_seconds"] > 0 and summary["finetune_seconds"] > 0
    assert summary["n_train"] == 500 and summary["n_valid"] == 100  # a sixth split off for validation
    assert summary["config"] == json.loads((out / "run_config.json").read_text())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["layer"], r["epoch"]) for r in lines if r["phase"] == "pretrain"] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all("valid_error" in r for r in lines if r["phase"] == "finetune")
    assert json.loads((out / "pretrained" / "config.json").read_text())["pretrained_layers"] == 2


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


def test_fine_tuning_from_pretrained_takes_this_runs_dropout_and_input_masking(tmp_path, labelled):
    """They act in fine-tuning only: a rerun with other values uses them, not the first run's."""
    assert main(["sda", "--data", str(labelled), *SMALL, "--out", str(tmp_path / "a")]) == 0
    saved = load_model(tmp_path / "a" / "pretrained").config
    assert (saved.dropout, saved.input_corruption) == (SDA_PRESETS["default"].model.dropout,
                                                       SDA_PRESETS["default"].model.input_corruption) != (0.5, 0.25)
    assert main(["sda", "--data", str(labelled), *SMALL, "--pretrained", str(tmp_path / "a" / "pretrained"),
                 "--dropout", "0.5", "--finetune-corruption", "0.25", "--out", str(tmp_path / "b")]) == 0
    tuned = load_model(tmp_path / "b")
    assert (tuned.config.dropout, tuned.config.input_corruption) == (0.5, 0.25)


def test_the_tutorial_preset_is_the_tutorials_test_SdA_number_for_number():
    # SdA.py, test_SdA(finetune_lr=0.1, pretraining_epochs=15, pretrain_lr=0.001, training_epochs=1000,
    # batch_size=1): hidden_layers_sizes=[1000, 1000, 1000], corruption_levels = [.1, .2, .3],
    # numpy_rng = numpy.random.RandomState(89677), patience = 10 * n_train_batches,
    # patience_increase = 2., improvement_threshold = 0.995; plain SGD, minibatches in order.
    t = SDA_PRESETS["tutorial"]
    assert t.model.hidden_layer_sizes == (1000, 1000, 1000)
    assert t.model.corruption_levels == (0.1, 0.2, 0.3)
    assert (t.model.dropout, t.model.input_corruption) == (0.0, 0.0)
    p = t.pretraining
    assert (p.epochs, p.learning_rate, p.batch_size) == (15, 0.001, 1)
    assert (p.optimizer, p.momentum, p.nesterov, p.weight_decay, p.schedule, p.shuffle) == (
        "sgd", 0.0, False, 0.0, "constant", False)
    f = t.finetuning
    assert (f.learning_rate, f.epochs, f.batch_size) == (0.1, 1000, 1)
    assert (f.momentum, f.schedule, f.shuffle) == (0.0, "constant", False)
    assert (f.patience_epochs, f.improvement_threshold, f.patience_increase) == (10, 0.995, 2.0)
    assert (t.seed, t.pretrain, t.pretrained, t.data) == (89677, True, None, "mnist")


@pytest.mark.parametrize("preset", sorted(SDA_PRESETS))
def test_every_preset_runs_and_its_run_config_is_the_preset_with_the_options_given(tmp_path, labelled, preset):
    out = tmp_path / preset
    assert main(["sda", "--data", str(labelled), "--preset", preset, "--hidden", "8", "--corruption", "0.15",
                 "--pretrain-epochs", "1", "--finetune-epochs", "2", "--quiet", "--out", str(out)]) == 0
    expected = merge(SDA_PRESETS[preset], {"data": str(labelled),
                                           "model": {"hidden_layer_sizes": [8], "corruption_levels": [0.15]},
                                           "pretraining": {"epochs": [1]}, "finetuning": {"epochs": 2}})
    assert json.loads((out / "run_config.json").read_text()) == to_dict(expected)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == preset and summary["config"] == to_dict(expected)
    assert load_model(out).config == expected.model


def test_no_pretrain_skips_pretraining(tmp_path, labelled, capsys):
    out = tmp_path / "base"
    assert main(["sda", "--data", str(labelled), *SMALL, "--no-pretrain", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pretrained"] is False and summary["pretrain_seconds"] == 0
    assert all(json.loads(line)["phase"] == "finetune" for line in (out / "metrics.jsonl").read_text().splitlines())


def test_refit_epochs_keep_the_number_of_updates_and_run_at_least_one():
    assert refit_epochs(250, 50_000, 10_000) == 208  # 208 x 600 minibatches ~ 250 x 500
    assert refit_epochs(8, 500, 100) == 7 and refit_epochs(1, 10, 1000) == 1
    with pytest.raises(ConfigError, match="refit must be true or false"):
        SdARunConfig(refit="yes")


def test_refit_learns_from_the_validation_rows_too_for_as_many_updates_without_early_stopping(
        tmp_path, labelled, monkeypatch, capsys):
    import dae.experiments
    seen = []
    real_pretrain = dae.experiments.pretrain
    monkeypatch.setattr(dae.experiments, "pretrain", lambda model, x, *a, **k: (seen.append(len(x)),
                                                                                 real_pretrain(model, x, *a, **k)))
    out = tmp_path / "refit"
    assert main(["sda", "--data", str(labelled), *(a for a in SMALL if a != "--quiet"), "--refit", "--out", str(out)]) == 0  # with its output
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads((out / "run_config.json").read_text())["refit"] is True
    said = capsys.readouterr().out
    assert "refit: learning from the 500 training and 100 validation rows together, 7 fine-tuning epochs" in said
    assert "epoch 7, training cost " in said and "validation error" not in said
    # The 500 training and 100 validation rows together, in both phases; 8 epochs of 100 minibatches
    # on the 500 become 7 of 120 on the 600, all run, and the last model is kept.
    assert seen == [600] and summary["n_train"] == 600 and summary["n_valid"] == 0
    assert summary["best_valid_error"] is None and summary["stopped_by"] == "max_epochs"
    assert summary["finetune_epochs_run"] == summary["best_epoch"] == 7
    finetuning = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                  if json.loads(line)["phase"] == "finetune"]
    assert [m["epoch"] for m in finetuning] == list(range(1, 8)) and all(m["valid_error"] is None for m in finetuning)
    x, y = tiny_problem(700)
    assert summary["test_error"] == error_rate(load_model(out), x[600:], y[600:])
    assert summary["test_error"] < majority_error(y[600:]) / 2
    # The best preset refits; --no-refit keeps its validation rows out and stops early on them.
    assert SDA_PRESETS["best"].refit and not SDA_PRESETS["default"].refit and not SDA_PRESETS["tutorial"].refit
    kept = tmp_path / "kept"
    assert main(["sda", "--data", str(labelled), "--preset", "best", *SMALL, "--no-refit", "--out", str(kept)]) == 0
    summary = json.loads((kept / "summary.json").read_text())
    assert summary["n_train"] == 500 and summary["n_valid"] == 100 and summary["best_valid_error"] is not None


@pytest.mark.parametrize(
    "make, extra, phrase",
    [
        (lambda p: np.save(p.with_suffix(".npy"), np.random.rand(60, 4)), [], "needs labels"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.arange(60) % 3 - 2), [], "label"),
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
         ["--patience", "1"], "patience_epochs must be at least 2"),
        (lambda p: np.savez(p, x_train=np.random.rand(60, 4), y_train=np.arange(60) % 2),
         ["--batch-size", "1000"], "exceeds the 50 rows"),
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


def test_an_sda_run_stopped_inside_an_epoch_writes_strict_json_metrics(tmp_path, monkeypatch):
    """The epoch cut short by patience (as in the test above) was never validated: its line says
    so with null, as JSON has no NaN, and every line parses as strict JSON."""
    from dae import run_sda

    x, y = tiny_problem(150)
    np.savez(tmp_path / "d.npz", x_train=x[:50].numpy(), y_train=y[:50].numpy(), x_valid=x[100:].numpy(),
             y_valid=y[100:].numpy(), x_test=x[50:90].numpy(), y_test=y[50:90].numpy())
    real_error_rate, scripted = train_module.error_rate, iter([0.5, 0.3, 0.31, 0.2, 0.2, 0.2])
    monkeypatch.setattr(train_module, "error_rate", lambda model, xs, ys, world=None: next(scripted)
                        if len(xs) == 50 else real_error_rate(model, xs, ys, world=world))
    config = merge(SDA_PRESETS["default"], {"data": str(tmp_path / "d.npz"), "model": {"hidden_layer_sizes": [6]},
                                            "pretraining": {"epochs": 1},
                                            "finetuning": {"epochs": 50, "batch_size": 5, "patience_epochs": 2}})
    summary = run_sda(config, tmp_path / "run", say=None)
    assert summary["stopped_by"] == "patience" and summary["best_epoch"] == 2

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    lines = [json.loads(line, parse_constant=no_constants) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    finetuned = [m for m in lines if m["phase"] == "finetune"]
    assert [m["complete"] for m in finetuned] == [True, True, True, False]
    assert [m["valid_error"] for m in finetuned] == [0.5, 0.3, 0.31, None]
