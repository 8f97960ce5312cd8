"""The scikit-learn estimators: scikit-learn's own checks, pipelines and grid search; their
defaults and rules are dae.config's, as for the command line."""

import inspect
import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402  (bundled with scikit-learn: no download)
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

import dae.data  # noqa: E402
import dae.sklearn  # noqa: E402
from dae import load_model  # noqa: E402
from dae.cli import main  # noqa: E402
from dae.config import (SDA_PRESETS, VALIDATION_FRACTION, ConfigError, TrainRunConfig,  # noqa: E402
                        default_corruption_levels, merge)
from dae.sklearn import DAETransformer, SdAClassifier  # noqa: E402

SMALL = [
    DAETransformer(n_hidden=8, n_epochs=3, random_state=0),
    DAETransformer(n_hidden=8, n_epochs=3, loss="squared-error", activation="tanh", noise="gaussian",
                   learning_rate=0.01, random_state=0),
    SdAClassifier(hidden_layer_sizes=(16,), pretrain_epochs=1, pretrain_batch_size=5, finetune_epochs=10,
                  batch_size=5, random_state=0),
]


@pytest.mark.parametrize("estimator", SMALL, ids=lambda e: repr(e))
def test_scikit_learns_own_checks_pass(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None, on_skip=None)
    failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) >= 40


# --- the defaults and rules are dae.config's ---------------------------------------------------

DA, SDA = TrainRunConfig(), SDA_PRESETS["default"]
# Each estimator parameter and the setting of dae.config it stands for.
DA_SETTINGS = {"n_hidden": DA.model.n_hidden, "n_epochs": DA.training.epochs,
               "learning_rate": DA.training.learning_rate, "batch_size": DA.training.batch_size,
               "corruption_level": DA.model.corruption_level, "noise": DA.model.noise, "loss": DA.model.loss,
               "activation": DA.model.activation, "tied": DA.model.tied, "device": DA.device}
SDA_SETTINGS = {"hidden_layer_sizes": SDA.model.hidden_layer_sizes, "pretrain_epochs": SDA.pretraining.epochs,
                "pretrain_learning_rate": SDA.pretraining.learning_rate,
                "pretrain_batch_size": SDA.pretraining.batch_size, "finetune_epochs": SDA.finetuning.epochs,
                "learning_rate": SDA.finetuning.learning_rate, "batch_size": SDA.finetuning.batch_size,
                "momentum": SDA.finetuning.momentum, "schedule": SDA.finetuning.schedule,
                "dropout": SDA.model.dropout, "input_corruption": SDA.model.input_corruption,
                "validation_fraction": VALIDATION_FRACTION, "device": SDA.device}


@pytest.mark.parametrize("cls, settings", [(DAETransformer, DA_SETTINGS), (SdAClassifier, SDA_SETTINGS)],
                         ids=["DAETransformer", "SdAClassifier"])
def test_every_estimator_default_is_the_value_in_dae_config(cls, settings):
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()}
    extra = {"random_state": None} if cls is DAETransformer else {"random_state": None, "corruption_levels": None}
    assert defaults == {**settings, **extra}  # every parameter is a setting of dae.config, or one of these
    # None: the default levels of the depth, as dae.config gives them (the preset's, for its 3 layers).
    assert SDA.model.corruption_levels == default_corruption_levels(len(SDA.model.hidden_layer_sizes))


def _spy(monkeypatch, name, calls):
    real = getattr(dae.sklearn, name)

    def spy(*args, **kwargs):
        calls.append((name, args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(dae.sklearn, name, spy)


def test_the_settings_an_estimator_does_not_expose_are_dae_configs_too(monkeypatch):
    calls = []
    for name in ("train", "pretrain", "finetune"):
        _spy(monkeypatch, name, calls)
    X = np.random.default_rng(0).random((60, 8))
    DAETransformer(n_hidden=4, n_epochs=1, random_state=0).fit(X)
    clf = SdAClassifier(hidden_layer_sizes=(4,), pretrain_epochs=1, finetune_epochs=2, random_state=0)
    clf.fit(X, np.arange(60) % 2)
    (_, (_, _, trained), _), (_, (_, _, pretrained), _), (_, (_, _, _, _, finetuned), _) = calls
    # A dA in memory is trained in order, as `dae train` trains it (shuffle None: only streams are shuffled).
    assert trained == merge(DA.training, {"epochs": 1, "shuffle": False})
    assert pretrained == merge(SDA.pretraining, {"epochs": 1})
    assert finetuned == merge(SDA.finetuning, {"epochs": 2, "batch_size": 50})  # at most the rows it trains on
    assert clf.model_.config == merge(SDA.model, {"hidden_layer_sizes": [4]})


def test_corruption_levels_past_three_layers_repeat_the_last_in_the_estimator_and_the_command(tmp_path):
    X, y = np.random.default_rng(0).random((60, 8)), np.arange(60) % 2
    expected = [0.1, 0.2, 0.3, 0.3, 0.3]
    assert list(default_corruption_levels(5)) == expected
    clf = SdAClassifier(hidden_layer_sizes=(4,) * 5, pretrain_epochs=1, pretrain_batch_size=5, finetune_epochs=1,
                        batch_size=5, random_state=0).fit(X, y)
    assert [dA.corruption_level for dA in clf.model_.autoencoders] == expected
    path, out = tmp_path / "d.npz", tmp_path / "run"
    np.savez(path, x_train=X.astype(np.float32), y_train=y)
    assert main(["sda", "--data", str(path), "--hidden", "4,4,4,4,4", "--pretrain-epochs", "1",
                 "--pretrain-batch-size", "5", "--finetune-epochs", "1", "--batch-size", "5", "--quiet",
                 "--out", str(out)]) == 0
    assert json.loads((out / "run_config.json").read_text())["model"]["corruption_levels"] == expected
    assert [dA.corruption_level for dA in load_model(out).autoencoders] == expected


def test_the_classifiers_validation_split_is_the_command_lines_rule(monkeypatch):
    # `dae sda` splits data without a validation split by dae.data.split_validation
    # (dae.data.labelled_splits); so does the classifier, with its validation_fraction.
    assert dae.sklearn.split_validation is dae.data.split_validation
    calls = []
    for name in ("split_validation", "finetune"):
        _spy(monkeypatch, name, calls)
    rng = np.random.default_rng(0)
    X, y = rng.random((120, 8)), np.arange(120) % 3
    SdAClassifier(hidden_layer_sizes=(4,), pretrain_epochs=1, finetune_epochs=1, random_state=0).fit(X, y)
    (_, (x, labels, fraction, seed), _), (_, (_, train_set, valid_set, *_), _) = calls
    assert fraction == VALIDATION_FRACTION and len(x) == 120 and torch.equal(labels, torch.as_tensor(y))
    (xt, yt), (xv, yv) = dae.data.split_validation(x, labels, fraction, seed)
    assert len(xv) == 20 and not torch.equal(xv, x[-20:])  # a random sixth, not the last one
    assert all(torch.equal(a, b) for a, b in zip((*train_set, *valid_set), (xt, yt, xv, yv)))
    # Without a validation split all epochs run and the last model is kept.
    clf = SdAClassifier(hidden_layer_sizes=(4,), pretrain_epochs=1, finetune_epochs=2, validation_fraction=0,
                        random_state=0).fit(X, y)
    assert calls[-1][1][2] is None and clf.result_.stopped_by == "max_epochs" and len(clf.result_.history) == 2


def test_bad_settings_are_config_errors_when_fitting():
    X, y = np.random.default_rng(0).random((40, 8)), np.arange(40) % 2
    with pytest.raises(ConfigError, match="corruption_level must be in"):
        DAETransformer(n_hidden=4, corruption_level=1.5).fit(X)
    with pytest.raises(ConfigError, match="momentum must be in"):
        SdAClassifier(hidden_layer_sizes=(4,), momentum=1.0).fit(X, y)
    with pytest.raises(ConfigError, match="schedule must be one of"):
        SdAClassifier(hidden_layer_sizes=(4,), schedule="step").fit(X, y)


# --- what they do -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y  # pixels in [0, 1]


def test_a_pipeline_with_grid_search_over_the_corruption_level(digits):
    X, y = digits
    pipe = Pipeline([("dae", DAETransformer(n_hidden=64, n_epochs=5, random_state=0)),
                     ("clf", LogisticRegression(max_iter=500))])
    search = GridSearchCV(pipe, {"dae__corruption_level": [0.0, 0.3]}, cv=2).fit(X[:800], y[:800])
    assert set(search.cv_results_["param_dae__corruption_level"]) == {0.0, 0.3}
    assert search.score(X[800:], y[800:]) > 0.85  # chance: 0.1


def test_inputs_outside_the_unit_interval_are_mapped_into_it_for_cross_entropy(digits):
    X, _ = digits
    raw = X * 16.0  # 0..16
    t = DAETransformer(n_hidden=10, n_epochs=2, random_state=0).fit(raw)
    assert t.input_range_ == (0.0, 16.0)
    same = DAETransformer(n_hidden=10, n_epochs=2, random_state=0).fit(X)
    assert same.input_range_ == (0.0, 1.0)
    assert np.allclose(t.transform(raw), same.transform(X), atol=1e-5)  # the same model, in other units
    assert np.allclose(t.inverse_transform(t.transform(raw)) / 16.0, same.inverse_transform(same.transform(X)),
                       atol=1e-5)
    squared = DAETransformer(n_hidden=10, n_epochs=1, loss="squared-error", learning_rate=1e-4, random_state=0)
    assert squared.fit(raw).input_range_ == (0.0, 1.0)  # used as they are


def test_partial_fit_continues_training_and_scores_rank_digits_above_noise(digits):
    X, _ = digits
    t = DAETransformer(n_hidden=32, n_epochs=1, random_state=0)
    t.partial_fit(X)
    first = t.history_[-1].cost
    for _ in range(4):
        t.partial_fit(X)
    assert len(t.history_) == 5 and t.history_[-1].cost < first
    noise = np.random.default_rng(0).random((200, 64))
    assert np.median(t.score_samples(X[:200])) > np.median(t.score_samples(noise))
    assert list(t.get_feature_names_out())[:2] == ["daetransformer0", "daetransformer1"]
    assert t.components_.shape == (32, 64)


def test_the_sda_classifier_learns_digits(digits):
    X, y = digits
    clf = SdAClassifier(hidden_layer_sizes=(64,), pretrain_epochs=2, pretrain_batch_size=5, finetune_epochs=20,
                        batch_size=5, random_state=0).fit(X[:1200], y[:1200])
    assert clf.score(X[1200:], y[1200:]) > 0.85  # chance: 0.1
    proba = clf.predict_proba(X[1200:1210])
    assert proba.shape == (10, 10) and np.allclose(proba.sum(1), 1)
    assert list(clf.classes_) == list(range(10))


def test_an_unknown_or_missing_device_is_a_clear_error(digits):
    X, y = digits
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        DAETransformer(n_hidden=4, n_epochs=1, device="tpu").fit(X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            SdAClassifier(hidden_layer_sizes=(4,), device="cuda").fit(X, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_the_estimators_train_on_the_gpu(digits):
    X, y = digits
    codes = DAETransformer(n_hidden=16, n_epochs=2, random_state=0, device="cuda").fit_transform(X)
    assert codes.shape == (len(X), 16) and np.isfinite(codes).all()
    clf = SdAClassifier(hidden_layer_sizes=(32,), pretrain_epochs=1, finetune_epochs=5, batch_size=20,
                        random_state=0, device="cuda").fit(X, y)
    assert clf.score(X, y) > 0.5
