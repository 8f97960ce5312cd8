"""The scikit-learn estimators: scikit-learn's own checks, pipelines and grid search."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402  (bundled with scikit-learn: no download)
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from dae.sklearn import DAETransformer, SdAClassifier  # noqa: E402

SMALL = [
    DAETransformer(n_hidden=8, n_epochs=3, random_state=0),
    DAETransformer(n_hidden=8, n_epochs=3, loss="squared-error", activation="tanh", noise="gaussian",
                   learning_rate=0.01, random_state=0),
    SdAClassifier(hidden_layer_sizes=(16,), pretrain_epochs=2, finetune_epochs=30, batch_size=10, random_state=0),
]


@pytest.mark.parametrize("estimator", SMALL, ids=lambda e: repr(e))
def test_scikit_learns_own_checks_pass(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None, on_skip=None)
    failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) >= 40


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
    assert search.score(X[800:], y[800:]) > 0.85


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
    clf = SdAClassifier(hidden_layer_sizes=(100, 100), pretrain_epochs=3, finetune_epochs=40, batch_size=20,
                        random_state=0).fit(X[:1200], y[:1200])
    assert clf.score(X[1200:], y[1200:]) > 0.9
    proba = clf.predict_proba(X[1200:1210])
    assert proba.shape == (10, 10) and np.allclose(proba.sum(1), 1)
    assert list(clf.classes_) == list(range(10))


def test_an_unknown_or_missing_device_is_a_clear_error(digits):
    import torch

    X, y = digits
    with pytest.raises(ValueError, match="unknown device"):
        DAETransformer(n_hidden=4, n_epochs=1, device="tpu").fit(X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            SdAClassifier(hidden_layer_sizes=(4,), device="cuda").fit(X, y)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA GPU here")
def test_the_estimators_train_on_the_gpu(digits):
    X, y = digits
    codes = DAETransformer(n_hidden=16, n_epochs=2, random_state=0, device="cuda").fit_transform(X)
    assert codes.shape == (len(X), 16) and np.isfinite(codes).all()
    clf = SdAClassifier(hidden_layer_sizes=(32,), pretrain_epochs=1, finetune_epochs=5, batch_size=20,
                        random_state=0, device="cuda").fit(X, y)
    assert clf.score(X, y) > 0.5
