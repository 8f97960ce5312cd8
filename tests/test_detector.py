"""Anomaly detection by reconstruction error: dae.anomaly's scores and thresholds, the scikit-learn
outlier detector with PyOD's names beside scikit-learn's, and `dae score --contamination/--per-feature/--score`."""

import json
import re
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

import dae.anomaly  # noqa: E402
import dae.sklearn  # noqa: E402
from dae import DenoisingAutoencoder, load_model, save_model  # noqa: E402
from dae.anomaly import SCORES, TUKEY_FENCE, reconstruction_errors, threshold_from_contamination  # noqa: E402
from dae.cli import main  # noqa: E402
from dae.config import ANOMALY_CODE_WEIGHT, ANOMALY_NEIGHBORS, ANOMALY_SCORE  # noqa: E402
from dae.sklearn import AutoencoderOutlierDetector, DAETransformer  # noqa: E402


def small_da(**kwargs):
    return DAETransformer(**{"n_hidden": 8, "n_epochs": 5, "random_state": 0, **kwargs})


@pytest.fixture(scope="module")
def X():
    """200 rows of 12 values in [0, 1]: noisy copies of three prototypes."""
    rng = np.random.default_rng(0)
    prototypes = rng.random((3, 12))
    return np.clip(prototypes[rng.integers(0, 3, 200)] + 0.1 * rng.standard_normal((200, 12)), 0, 1)


# --- the threshold rule --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [7, 100, 301])
@pytest.mark.parametrize("q", [0.01, 0.1, 0.25, 0.5])
def test_a_fraction_q_flags_q_n_of_the_training_errors_within_one(n, q):
    errors = np.random.default_rng(n).exponential(size=n)
    threshold = threshold_from_contamination(errors, q)
    assert abs((errors > threshold).sum() - q * n) <= 1


def test_auto_is_tukeys_upper_fence_and_flags_planted_outliers():
    rng = np.random.default_rng(1)
    errors = np.concatenate([rng.normal(10, 1, 500), [30.0, 40.0, 50.0]])
    q1, q3 = np.percentile(errors, [25, 75])
    threshold = threshold_from_contamination(errors, "auto")
    assert threshold == pytest.approx(q3 + TUKEY_FENCE * (q3 - q1))
    flagged = np.flatnonzero(errors > threshold)
    assert set(range(500, 503)) <= set(flagged) and len(flagged) <= 3 + 0.01 * 500


@pytest.mark.parametrize("bad", [0, 0.0, 0.51, 1, -0.1, float("nan"), float("inf"), "all", None, True])
def test_contamination_must_be_auto_or_in_0_to_one_half(bad):
    with pytest.raises(ValueError, match=r"contamination must be 'auto' or a fraction in \(0, 0.5\]"):
        threshold_from_contamination(np.arange(10.0), bad)


# --- the scores ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def da():
    model = DenoisingAutoencoder(12, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.b_prime.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    return model


@pytest.mark.parametrize("score", SCORES)
def test_per_feature_errors_sum_to_each_rows_error(da, score):
    x = torch.rand(50, 12, generator=torch.Generator().manual_seed(2))
    per_feature = reconstruction_errors(da, x, score, per_feature=True)
    total = reconstruction_errors(da, x, score)
    assert per_feature.shape == (50, 12) and total.shape == (50,)
    assert (per_feature >= 0).all()
    torch.testing.assert_close(per_feature.sum(dim=1), total)


def test_cross_entropy_is_the_tutorials_loss_and_squared_error_that_of_the_reconstruction(da):
    x = torch.rand(30, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(reconstruction_errors(da, x, "cross-entropy"), da.reconstruction_error(x))
        z = torch.sigmoid(torch.sigmoid(x @ da.W + da.b) @ da.W.T + da.b_prime)  # tied weights, the tutorial's
        torch.testing.assert_close(reconstruction_errors(da, x, "squared-error"), ((x - z) ** 2).sum(dim=1))


def test_errors_do_not_depend_on_the_chunking_and_leave_the_model_as_it_was(da, monkeypatch):
    x = torch.rand(25, 12, generator=torch.Generator().manual_seed(4))
    whole = reconstruction_errors(da, x, "squared-error", per_feature=True)
    monkeypatch.setattr(dae.anomaly, "EVAL_ROWS", 4)
    da.train()
    torch.testing.assert_close(reconstruction_errors(da, x, "squared-error", per_feature=True), whole)
    assert da.training and all(p.grad is None for p in da.parameters())


def test_cross_entropy_needs_a_sigmoid_decoder():
    linear = DenoisingAutoencoder(4, 2, loss="squared-error")
    with pytest.raises(ValueError, match="sigmoid decoder"):
        reconstruction_errors(linear, torch.rand(3, 4), "cross-entropy")
    with pytest.raises(ValueError, match="score must be one of"):
        reconstruction_errors(linear, torch.rand(3, 4), "absolute-error")


# --- the scikit-learn detector ---------------------------------------------------------------------


DETECTORS = [
    AutoencoderOutlierDetector(small_da(n_epochs=2, n_hidden=4)),
    AutoencoderOutlierDetector(small_da(n_epochs=2, n_hidden=4), anomaly_score="cross-entropy", contamination=0.1),
    AutoencoderOutlierDetector(small_da(n_epochs=2, n_hidden=4, loss="squared-error", learning_rate=0.01)),
    AutoencoderOutlierDetector(small_da(n_epochs=2, n_hidden=4), code_weight=0.0),
]


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: repr(d))
def test_scikit_learns_own_checks_pass(detector):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(detector, on_fail=None, on_skip=None)
    failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed
    names = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {"check_outliers_train", "check_outliers_fit_predict", "check_fit_idempotent"} <= names
    assert len(names) >= 40


@pytest.mark.parametrize("q", [0.05, 0.2])
def test_contamination_q_flags_a_fraction_q_of_the_training_rows_within_one(X, q):
    detector = AutoencoderOutlierDetector(small_da(), contamination=q).fit(X)
    flagged = (detector.predict(X) == -1).sum()
    assert abs(flagged - q * len(X)) <= 1
    assert detector.labels_.sum() == flagged


def test_decision_function_changes_sign_at_offset(X):
    detector = AutoencoderOutlierDetector(small_da(), contamination=0.1).fit(X)
    scores, decision = detector.score_samples(X), detector.decision_function(X)
    np.testing.assert_allclose(decision, scores - detector.offset_)
    order = np.argsort(scores)
    signs = np.sign(decision[order])
    assert signs[0] < 0 < signs[-1]
    flips = np.flatnonzero(np.diff(signs))
    assert len(flips) == 1  # once, between the last score below offset_ and the first above
    assert scores[order][flips[0]] < detector.offset_ <= scores[order][flips[0] + 1]
    np.testing.assert_array_equal(detector.predict(X), np.where(scores < detector.offset_, -1, 1))


@pytest.mark.parametrize("code_weight", [0.0, 1.5])
def test_pyod_and_scikit_learn_directions_are_opposite_and_consistent(X, code_weight):
    detector = AutoencoderOutlierDetector(small_da(), code_weight=code_weight, contamination=0.1).fit(X)
    scores = detector.score_samples(X)  # scikit-learn: higher = more normal
    abnormal = detector.decision_scores_  # PyOD: higher = more abnormal
    order = np.argsort(scores)
    assert (np.diff(abnormal[order]) <= 0).all()  # a decreasing function of the scikit-learn score
    np.testing.assert_allclose(abnormal, -scores)
    if code_weight == 0:
        np.testing.assert_allclose(detector.reconstruction_error(X), abnormal)
    assert detector.threshold_ == -detector.offset_
    np.testing.assert_array_equal(detector.labels_, (abnormal > detector.threshold_).astype(int))
    np.testing.assert_array_equal(detector.labels_, (detector.predict(X) == -1).astype(int))
    assert set(np.unique(detector.labels_)) == {0, 1}


@pytest.mark.parametrize("score", SCORES)
def test_the_detectors_per_feature_errors_sum_to_its_errors(X, score):
    detector = AutoencoderOutlierDetector(small_da(), anomaly_score=score).fit(X)
    per_feature = detector.reconstruction_error(X[:20], per_feature=True)
    assert per_feature.shape == (20, X.shape[1])
    np.testing.assert_allclose(per_feature.sum(axis=1), detector.reconstruction_error(X[:20]))


def nearest_distances(codes, reference, k):
    """The mean distance from each code to its k nearest reference codes, a code's own (or its copy's,
    within a millionth of the norms) left out, by numpy alone."""
    d = np.linalg.norm(codes[:, None] - reference[None], axis=2)
    norms = np.linalg.norm(codes, axis=1)[:, None] + np.linalg.norm(reference, axis=1)[None]
    nearest = np.sort(np.where(d <= 1e-6 * norms, np.inf, d), axis=1)[:, :k]
    found = np.isfinite(nearest)  # fewer than k other codes: the mean of those there are
    return np.where(found, nearest, 0).sum(axis=1) / np.maximum(found.sum(axis=1), 1)


def expected_score(detector, X, rows, weight, k):
    """The score by its definition, from the transformer's public API and numpy alone: the error and the mean
    distance of the code to its k nearest training codes, each standardised by the training rows'."""
    def parts(x):
        reconstruction = detector.autoencoder_.inverse_transform(detector.autoencoder_.transform(x))
        codes, reference = detector.autoencoder_.transform(x), detector.autoencoder_.transform(X)
        return ((x - reconstruction) ** 2).sum(axis=1), nearest_distances(codes, reference, k)
    (e0, d0), (e, d) = parts(X), parts(rows)
    return (e - e0.mean()) / e0.std() + weight * (d - d0.mean()) / d0.std()


@pytest.mark.parametrize("weight, k", [(0.5, 1), (2.0, 7)])
def test_the_code_distance_is_added_to_the_error_each_standardised(X, weight, k):
    detector = AutoencoderOutlierDetector(small_da(), code_weight=weight, n_neighbors=k, contamination=0.1).fit(X)
    rows = np.clip(X[:30] + 0.2, 0, 1)
    # (the transformer reads X as float32)
    np.testing.assert_allclose(-detector.score_samples(rows), expected_score(detector, X, rows, weight, k), atol=1e-4)
    np.testing.assert_allclose(detector.decision_scores_, expected_score(detector, X, X, weight, k), atol=1e-4)
    assert abs(detector.labels_.sum() - 0.1 * len(X)) <= 1


def test_the_neighbour_score_of_identical_reference_rows_divides_by_no_zero():
    # Deviations 0: the errors' scale is a millionth of their size (1), the codes' (all 0) is 1.
    typical = dae.anomaly.NeighbourScore(torch.ones(4), torch.zeros(4, 2), 1.0, 2)
    assert torch.equal(typical.reference_scores, torch.zeros(4, dtype=torch.float64))
    row = typical(torch.tensor([3.0]), typical.distances(torch.tensor([[3.0, 4.0]])))  # error 3, distance 5
    assert row.item() == pytest.approx((3.0 - 1.0) / 1e-6 + 1.0 * (5.0 - 0.0) / 1.0)
    with pytest.raises(ValueError, match="needs more than 4 reference rows"):
        dae.anomaly.NeighbourScore(torch.ones(4), torch.zeros(4, 2), 1.0, 4)


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_contamination_flags_about_that_fraction_of_new_rows_like_the_training_rows(weight):
    """The threshold is set on the training rows' scores, each leaving the row out of its own neighbours,
    so that new rows from the same distribution are flagged about as often: counting a training row
    among its own neighbours (at distance 0) would lower its score and flag far more new rows."""
    rng = np.random.default_rng(3)
    prototypes = rng.random((4, 12))
    def draw(n):
        return np.clip(prototypes[rng.integers(0, 4, n)] + 0.1 * rng.standard_normal((n, 12)), 0, 1)
    detector = AutoencoderOutlierDetector(small_da(), code_weight=weight, contamination=0.1).fit(draw(600))
    flagged = (detector.predict(draw(2000)) == -1).mean()
    assert 0.06 <= flagged <= 0.14, flagged


def test_repeated_training_rows_are_not_their_own_neighbours_and_do_not_blow_the_scale_up(X):
    repeated = np.repeat(X[:30], 10, axis=0)  # 30 rows, 10 copies each
    detector = AutoencoderOutlierDetector(small_da(), code_weight=2.0, n_neighbors=5).fit(repeated)
    scores = detector.decision_scores_.reshape(30, 10)
    np.testing.assert_allclose(scores, scores[:, :1].repeat(10, axis=1), atol=1e-9)  # copies score alike
    assert np.abs(scores).max() < 10  # standard deviations: no rounding noise blown up
    np.testing.assert_allclose(detector.code_distance(X[:30]), detector.neighbour_score_.distances(
        torch.from_numpy(detector.autoencoder_.transform(X[:30]))).numpy(), rtol=1e-9)
    identical = AutoencoderOutlierDetector(small_da(), code_weight=2.0, n_neighbors=5).fit(np.repeat(X[:1], 20, 0))
    assert np.isfinite(identical.decision_scores_).all()


def test_distances_are_the_same_computed_in_chunks(monkeypatch):
    rng = np.random.default_rng(0)
    points, reference = torch.from_numpy(rng.random((37, 4))), torch.from_numpy(rng.random((50, 4)))
    whole = dae.anomaly.neighbour_distances(points, reference, 3)
    monkeypatch.setattr(dae.anomaly, "DISTANCE_PAIRS", 120)  # chunks of 2 rows
    np.testing.assert_allclose(dae.anomaly.neighbour_distances(points, reference, 3), whole, rtol=1e-12)
    np.testing.assert_allclose(whole, nearest_distances(points.numpy(), reference.numpy(), 3), rtol=1e-9)
    copies = torch.cat([reference, reference[:5], points[:2]])  # rows with copies, points in the reference
    for k in (3, len(copies)):  # (k = all the reference rows: the path for every row)
        np.testing.assert_allclose(dae.anomaly.neighbour_distances(points, copies, k),
                                   nearest_distances(points.numpy(), copies.numpy(), k), rtol=1e-9)
        np.testing.assert_allclose(dae.anomaly.neighbour_distances(reference, copies, k),
                                   nearest_distances(reference.numpy(), copies.numpy(), k), rtol=1e-9)


def test_code_weight_zero_scores_by_the_reconstruction_error_alone(X):
    detector = AutoencoderOutlierDetector(small_da(), code_weight=0.0).fit(X)
    assert detector.neighbour_score_ is None
    np.testing.assert_allclose(detector.decision_scores_, detector.reconstruction_error(X))
    np.testing.assert_allclose(-detector.score_samples(X[:10]), detector.reconstruction_error(X[:10]))
    with pytest.raises(ValueError, match="code_weight > 0"):
        detector.code_distance(X)


def test_the_distance_to_the_codes_flags_what_the_error_misses():
    """Rows the autoencoder reconstructs as well as the typical ones, but far from every typical code: the
    training rows fill two clusters of a 2-D plane in 6-D, the new rows lie on the plane between them."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((6, 2)))[0].T  # an orthonormal plane
    def on_plane(centres):
        return 0.5 + 0.1 * (centres + 0.3 * rng.standard_normal(centres.shape)) @ basis
    X = on_plane(np.repeat([[-2.0, 0.0], [2.0, 0.0]], 150, axis=0))
    between = on_plane(np.zeros((30, 2)))
    typical = on_plane(np.repeat([[-2.0, 0.0], [2.0, 0.0]], 15, axis=0))
    auc = {}
    for weight in (0.0, 1.0):
        detector = AutoencoderOutlierDetector(DAETransformer(n_hidden=2, loss="squared-error", learning_rate=0.05,
                                                             n_epochs=40, random_state=0), code_weight=weight).fit(X)
        normal, odd = detector.score_samples(typical), detector.score_samples(between)
        auc[weight] = (normal[:, None] > odd[None]).mean()  # P(a typical row scores as more normal)
    assert auc[1.0] > 0.95 and auc[1.0] > auc[0.0] + 0.2, auc


def test_the_errors_are_the_autoencoders_own(X):
    """Cross-entropy is the transformer's loss; squared error that of its reconstruction, by its public API."""
    ce = AutoencoderOutlierDetector(small_da(), anomaly_score="cross-entropy", code_weight=0).fit(X)
    np.testing.assert_allclose(ce.decision_scores_, -ce.autoencoder_.score_samples(X))
    se = AutoencoderOutlierDetector(small_da(), anomaly_score="squared-error").fit(X)
    reconstruction = se.autoencoder_.inverse_transform(se.autoencoder_.transform(X))
    # (the transformer reads X as float32)
    np.testing.assert_allclose(se.reconstruction_error(X, per_feature=True), (X - reconstruction) ** 2, atol=1e-6)


def test_a_value_beyond_the_training_range_counts_in_full(X):
    """Inputs outside [0, 1] are mapped by the training range; the clipping does not hide an outlier."""
    detector = AutoencoderOutlierDetector(small_da(), anomaly_score="squared-error").fit(10 * X)
    lo, hi = detector.autoencoder_.input_range_
    row = 10 * X[:1].copy()
    row[0, 0] = 1000.0
    mapped = (1000.0 - lo) / (hi - lo)
    assert detector.reconstruction_error(row, per_feature=True)[0, 0] >= (mapped - 1) ** 2
    assert detector.predict(row)[0] == -1


def test_the_defaults_are_dae_scores_and_the_tutorials_da(X):
    detector = AutoencoderOutlierDetector()
    assert detector.anomaly_score == ANOMALY_SCORE and detector.contamination == "auto"
    assert detector.code_weight == ANOMALY_CODE_WEIGHT and detector.n_neighbors == ANOMALY_NEIGHBORS
    detector.set_params(autoencoder=None).fit(X[:40])
    assert isinstance(detector.autoencoder_, DAETransformer)
    assert detector.autoencoder_.get_params() == DAETransformer().get_params()


def test_fit_clones_the_autoencoder_and_ignores_y(X):
    autoencoder = small_da()
    a = AutoencoderOutlierDetector(autoencoder).fit(X)
    assert not hasattr(autoencoder, "model_") and a.autoencoder_ is not autoencoder
    b = clone(a).fit(X, y=np.arange(len(X)))
    np.testing.assert_array_equal(a.decision_scores_, b.decision_scores_)


@pytest.mark.parametrize("params, message", [
    ({"contamination": 0.0}, "contamination must be"),
    ({"contamination": 0.75}, "contamination must be"),
    ({"contamination": "most"}, "contamination must be"),
    ({"anomaly_score": "absolute-error"}, "score must be one of"),
    ({"code_weight": -1.0}, "code_weight must be a finite number >= 0"),
    ({"code_weight": float("nan")}, "code_weight must be a finite number >= 0"),
    ({"code_weight": "yes"}, "code_weight must be a finite number >= 0"),
    ({"n_neighbors": 0}, "n_neighbors must be a positive integer"),
    ({"n_neighbors": 2.5}, "n_neighbors must be a positive integer"),
    ({"n_neighbors": "five", "code_weight": 0}, "n_neighbors must be a positive integer"),
    ({"n_neighbors": 200}, "needs more than 200 reference rows, got n_samples = 200"),
    ({"anomaly_score": "cross-entropy", "autoencoder": small_da(loss="squared-error")}, "loss='cross-entropy'"),
])
def test_bad_settings_are_refused_in_fit(X, params, message):
    detector = AutoencoderOutlierDetector(**{"autoencoder": small_da(), **params})
    with pytest.raises(ValueError, match=message):
        detector.fit(X)
    assert not hasattr(detector, "autoencoder_")


def test_bad_rows_are_refused(X):
    detector = AutoencoderOutlierDetector(small_da()).fit(X)
    with pytest.raises(ValueError, match="features"):
        detector.predict(X[:, :5])
    bad = X[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detector.reconstruction_error(bad)


def test_the_detector_takes_a_deep_autoencoder(X):
    deep = getattr(dae.sklearn, "DeepAutoencoderTransformer", None)
    if deep is None:
        pytest.skip("dae.sklearn has no DeepAutoencoderTransformer")
    autoencoder = deep()
    small = {k: v for k, v in {"hidden_layer_sizes": (8, 3), "n_epochs": 2, "pretrain_epochs": 1,
                                "random_state": 0}.items() if k in autoencoder.get_params()}
    detector = AutoencoderOutlierDetector(autoencoder.set_params(**small), contamination=0.1).fit(X)
    assert abs((detector.predict(X) == -1).sum() - 0.1 * len(X)) <= 1
    np.testing.assert_allclose(detector.decision_scores_, expected_score(detector, X, X, detector.code_weight,
                                                                          detector.n_neighbors), atol=1e-4)
    assert detector.code_distance(X[:5]).shape == (5,)


# --- dae score ------------------------------------------------------------------------------------------


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """300 binary 6x6 'images' (an image shape: the picture is drawn), as training and test splits
    of an .npz, and a model trained on the training split."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    x = (rng.random((300, 6, 6)) < 0.3).astype(np.float32)
    np.savez(folder / "data.npz", x_train=x[:240], x_test=x[240:])
    assert main(["train", "--data", str(folder / "data.npz"), "--hidden", "5", "--epochs", "2", "--quiet",
                 "--out", str(folder / "model")]) == 0
    return folder


@pytest.mark.parametrize("q", [0.1, 0.25])
def test_contamination_flags_a_fraction_of_the_training_split_and_says_the_threshold(tmp_path, images, capsys, q):
    out = tmp_path / "s.csv"
    code, stdout, err = run(capsys, "score", "--model", images / "model", "--data", images / "data.npz",
                            "--contamination", q, "--out", out)
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == "score,outlier" and len(lines) == 241
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    scores, outlier = table[:, 0], table[:, 1]
    assert set(np.unique(outlier)) == {0, 1}
    assert abs(outlier.sum() - q * 240) <= 1
    summary = json.loads(stdout)
    assert summary["outliers"] == outlier.sum() and summary["contamination"] == q
    assert summary["threshold_from"] == f"the training split of {images / 'data.npz'}"
    assert summary["threshold_rows"] == 240
    assert summary["score"] == ANOMALY_SCORE
    threshold = summary["threshold"]
    assert (scores[outlier == 1] > threshold).all() and (scores[outlier == 0] <= threshold).all()


def test_the_threshold_comes_from_the_training_split_whatever_split_is_scored(tmp_path, images, capsys):
    train, test = tmp_path / "train.npy", tmp_path / "test.npy"
    summaries = []
    for split, out in (("train", train), ("test", test)):
        code, stdout, err = run(capsys, "score", "--model", images / "model", "--data", images / "data.npz",
                                "--split", split, "--contamination", "auto", "--out", out)
        assert code == 0, err
        summaries.append(json.loads(stdout))
    assert summaries[0]["threshold"] == summaries[1]["threshold"]
    assert summaries[1]["rows"] == 60 and summaries[1]["threshold_rows"] == 240
    table = np.load(test)
    assert table.dtype.names == ("score", "outlier") and table.shape == (60,)
    np.testing.assert_array_equal(table["outlier"], table["score"] > summaries[1]["threshold"])
    errors = np.load(train)["score"]
    q1, q3 = np.percentile(errors.astype(np.float64), [25, 75])
    assert summaries[0]["threshold"] == pytest.approx(q3 + TUKEY_FENCE * (q3 - q1))


def test_a_reference_sets_the_threshold_for_new_data(tmp_path, images, capsys):
    np.savez(tmp_path / "new.npz", x_train=np.load(images / "data.npz")["x_test"])  # 60 new rows
    args = ["--model", images / "model", "--contamination", "0.1"]
    code, stdout, err = run(capsys, "score", *args, "--data", tmp_path / "new.npz", "--reference",
                            images / "data.npz", "--out", tmp_path / "new.csv")
    assert code == 0, err
    new = json.loads(stdout)
    code, stdout, err = run(capsys, "score", *args, "--data", images / "data.npz", "--out", tmp_path / "train.csv")
    assert code == 0, err
    assert new["threshold"] == json.loads(stdout)["threshold"]
    assert new["threshold_rows"] == 240 and new["rows"] == 60 and str(images / "data.npz") in new["threshold_from"]
    code, stdout, err = run(capsys, "score", *args, "--data", tmp_path / "new.npz", "--out", tmp_path / "own.csv")
    assert code == 0 and abs(json.loads(stdout)["outliers"] - 6) <= 1  # without it, the new rows set their own
    code, stdout, err = run(capsys, "score", *args, "--data", tmp_path / "new.npz", "--reference",
                            tmp_path / "missing.npz", "--out", tmp_path / "bad.csv")
    assert code == 2 and err.count("\n") == 1 and "missing.npz" in err and not (tmp_path / "bad.csv").exists()



def test_score_says_which_error_it_scores_by_and_computes_it(tmp_path, images, capsys):
    x = torch.from_numpy(np.load(images / "data.npz")["x_train"].reshape(240, 36))
    model = load_model(images / "model")
    with torch.no_grad():
        expected = {"squared-error": ((x - model.reconstruct(x)) ** 2).sum(dim=1),
                    "cross-entropy": model.reconstruction_error(x)}
    for score, argv in ((ANOMALY_SCORE, []), ("squared-error", ["--score", "squared-error"]),
                        ("cross-entropy", ["--score", "cross-entropy"])):
        out = tmp_path / f"{score}-{len(argv)}.npy"
        code, stdout, err = run(capsys, "score", "--model", images / "model", "--data", images / "data.npz",
                                "--code-weight", 0, "--out", out, *argv)
        assert code == 0, err
        assert json.loads(stdout)["score"] == score and json.loads(stdout)["code_weight"] == 0
        np.testing.assert_allclose(np.load(out), expected[score].numpy(), rtol=1e-5)


def test_per_feature_writes_errors_that_sum_to_the_scores_and_a_picture_of_the_worst(tmp_path, images, capsys):
    from PIL import Image

    out, per_feature = tmp_path / "s.npy", tmp_path / "pf.npy"
    code, stdout, err = run(capsys, "score", "--model", images / "model", "--data", images / "data.npz",
                            "--code-weight", 0, "--out", out, "--per-feature", per_feature)
    assert code == 0, err
    errors, scores = np.load(per_feature), np.load(out)
    assert errors.shape == (240, 36) and (errors >= 0).all()
    np.testing.assert_allclose(errors.sum(axis=1), scores, rtol=1e-6)
    picture = tmp_path / "pf_worst.png"
    summary = json.loads(stdout)
    assert summary["per_feature"] == str(per_feature) and summary["picture"] == str(picture)
    with Image.open(picture) as im:
        pixels = np.asarray(im.convert("L"))
    band_w = 2 * (10 * 7 - 1)  # 10 tiles of 6 pixels, 1-pixel spacing, enlarged x2
    assert pixels.shape[0] >= 3 * 2 * 6 and pixels.shape[1] > band_w
    # The first tile of the top band is the worst-scored row, as drawn: black 0, white 255.
    worst = np.load(images / "data.npz")["x_train"][np.argmax(scores)]
    tile = pixels[0:12:2, -band_w:][:, 0:12:2]
    np.testing.assert_array_equal(tile, np.rint(worst * 255))


def test_per_feature_of_rows_that_are_not_images_draws_no_picture(tmp_path, capsys):
    rows = tmp_path / "rows.npy"  # 10 values a row: not a square, so not images
    np.save(rows, np.random.default_rng(0).random((50, 10)).astype(np.float32))
    code, _, err = run(capsys, "train", "--data", rows, "--hidden", 3, "--epochs", 1, "--out", tmp_path / "m")
    assert code == 0, err
    code, stdout, err = run(capsys, "score", "--model", tmp_path / "m", "--data", rows, "--out", tmp_path / "s.csv",
                            "--per-feature", tmp_path / "pf.npy")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "pf.npy", "rows.npy", "s.csv"]
    assert "picture" not in json.loads(stdout) and np.load(tmp_path / "pf.npy").shape == (50, 10)


def test_score_takes_a_deep_autoencoder(tmp_path, images, capsys):
    code, _, err = run(capsys, "deep", "--data", images / "data.npz", "--hidden", "8,3", "--pretrain-epochs", 1,
                       "--epochs", 1, "--quiet", "--out", tmp_path / "deep")
    assert code == 0, err
    out, per_feature = tmp_path / "s.npy", tmp_path / "pf.npy"
    code, stdout, err = run(capsys, "score", "--model", tmp_path / "deep", "--data", images / "data.npz",
                            "--score", "squared-error", "--code-weight", 0, "--contamination", 0.1,
                            "--per-feature", per_feature, "--out", out)
    assert code == 0, err
    table = np.load(out)
    assert abs(table["outlier"].sum() - 24) <= 1 and json.loads(stdout)["outliers"] == table["outlier"].sum()
    np.testing.assert_allclose(np.load(per_feature).sum(axis=1), table["score"], rtol=1e-6)
    x = torch.from_numpy(np.load(images / "data.npz")["x_train"].reshape(240, 36))
    with torch.no_grad():
        expected = ((x - load_model(tmp_path / "deep").reconstruct(x)) ** 2).sum(dim=1).numpy()
    np.testing.assert_allclose(table["score"], expected, rtol=1e-5)


@pytest.mark.parametrize("split", ["train", "test"])
def test_score_adds_the_distance_to_the_reference_codes_by_its_definition(tmp_path, images, capsys, split):
    """The score of --code-weight W --neighbors K, by its definition in numpy: the error and the mean distance
    to the K nearest codes of the training split (a row's own left out), each standardised by the training
    split's."""
    data = np.load(images / "data.npz")
    model = load_model(images / "model")
    def parts(rows):
        x = torch.from_numpy(rows.reshape(len(rows), 36))
        with torch.no_grad():
            return ((x - model.reconstruct(x)) ** 2).sum(dim=1).double().numpy(), model.encode(x).double().numpy()
    (e0, c0), (e, c) = parts(data["x_train"]), parts(data[f"x_{split}"])
    d0, d = nearest_distances(c0, c0, 3), nearest_distances(c, c0, 3)
    expected = (e - e0.mean()) / e0.std() + 2.5 * (d - d0.mean()) / d0.std()
    code, stdout, err = run(capsys, "score", "--model", images / "model", "--data", images / "data.npz",
                            "--split", split, "--code-weight", 2.5, "--neighbors", 3, "--contamination", 0.1,
                            "--out", tmp_path / "s.npy")
    assert code == 0, err
    table, summary = np.load(tmp_path / "s.npy"), json.loads(stdout)
    np.testing.assert_allclose(table["score"], expected, atol=1e-4)
    assert summary["code_weight"] == 2.5 and summary["neighbors"] == 3 and summary["reference_rows"] == 240
    reference = (e0 - e0.mean()) / e0.std() + 2.5 * (d0 - d0.mean()) / d0.std()
    assert summary["threshold"] == pytest.approx(np.quantile(reference, 0.9), abs=1e-4)


def test_score_help_shows_the_defaults_from_dae_config(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = capsys.readouterr().out
    def option(name):  # the option's line and the lines indented under it
        return " ".join(re.search(rf"^  {name}.*(?:\n {{4,}}.*)*", text, re.M).group(0).split())
    assert option("--score").endswith(f"(default: {ANOMALY_SCORE})")
    assert all(score in option("--score") for score in SCORES)
    assert option("--code-weight").endswith(f"(default: {ANOMALY_CODE_WEIGHT})")
    assert option("--neighbors").endswith(f"(default: {ANOMALY_NEIGHBORS})")


MISTAKES = [
    (["--contamination", "0"], "--contamination: expected a fraction in (0, 0.5] or 'auto', got '0'"),
    (["--contamination", "0.6"], "expected a fraction in (0, 0.5]"),
    (["--contamination", "nan"], "expected a fraction in (0, 0.5]"),
    (["--contamination", "some"], "expected a fraction in (0, 0.5]"),
    (["--score", "absolute-error"], "--score: invalid choice"),
    (["--code-weight", "-1"], "--code-weight: expected a non-negative number, got '-1'"),
    (["--code-weight", "inf"], "--code-weight: expected a non-negative number"),
    (["--neighbors", "0"], "--neighbors: expected a positive integer, got '0'"),
    (["--neighbors", "240"], "needs more than 240 reference rows, and the training split of {data} has 240"),
    (["--per-feature", "{tmp}/pf.csv"], "--per-feature {tmp}/pf.csv: the file name must end in .npy"),
    (["--per-feature", "{tmp}/no/pf.npy"], "no such folder"),
    (["--per-feature", "{tmp}/taken.npy"], "already exists"),
    (["--per-feature", "{tmp}/pic.npy"], "pic_worst.png: already exists"),
    (["--per-feature", "{tmp}/o.npy"], "the same file as --out"),
    (["--model", "{linear}", "--score", "cross-entropy"], "--score cross-entropy needs a model with a sigmoid decoder"),
    (["--model", "{sda}"], "score needs a DenoisingAutoencoder (dae train) or a DeepAutoencoder"),
]


@pytest.fixture(scope="module")
def other_models(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("others")
    data = str(images / "data.npz")
    assert main(["train", "--data", data, "--hidden", "3", "--epochs", "1", "--loss", "squared-error", "--quiet",
                 "--out", str(folder / "linear")]) == 0
    np.savez(folder / "labelled.npz", x_train=np.load(data)["x_train"].reshape(240, 36), y_train=np.arange(240) % 2)
    assert main(["sda", "--data", str(folder / "labelled.npz"), "--hidden", "4", "--pretrain-epochs", "1",
                 "--finetune-epochs", "1", "--batch-size", "20", "--quiet", "--out", str(folder / "sda")]) == 0
    return folder


def test_score_gives_the_scores_and_outliers_of_the_detector_for_the_same_model(tmp_path, images, capsys):
    data = np.load(images / "data.npz")
    x_train, x_test = data["x_train"].reshape(240, 36), data["x_test"].reshape(60, 36)
    detector = AutoencoderOutlierDetector(small_da(), code_weight=1.5, n_neighbors=4, contamination=0.1).fit(x_train)
    save_model(detector.autoencoder_.model_, tmp_path / "model")
    code, stdout, err = run(capsys, "score", "--model", tmp_path / "model", "--data", images / "data.npz",
                            "--split", "test", "--code-weight", 1.5, "--neighbors", 4, "--contamination", 0.1,
                            "--out", tmp_path / "s.npy")
    assert code == 0, err
    table = np.load(tmp_path / "s.npy")
    np.testing.assert_allclose(table["score"], -detector.score_samples(x_test), atol=1e-4)  # float32 against 64
    assert json.loads(stdout)["threshold"] == pytest.approx(detector.threshold_, abs=1e-4)
    np.testing.assert_array_equal(table["outlier"] == 1, detector.predict(x_test) == -1)


@pytest.mark.parametrize("weight", [0, 1])
def test_a_reference_whose_scores_overflow_is_a_one_line_error(tmp_path, images, other_models, capsys, weight):
    huge = np.load(images / "data.npz")["x_train"].copy()
    huge[3] = 1e30  # its squared error overflows (a model trained with the squared error takes any values)
    np.savez(tmp_path / "huge.npz", x_train=huge)
    code, stdout, err = run(capsys, "score", "--model", other_models / "linear", "--data", images / "data.npz",
                            "--split", "test", "--reference", tmp_path / "huge.npz", "--contamination", 0.1,
                            "--code-weight", weight, "--out", tmp_path / "bad.csv")
    assert code == 2 and err.count("\n") == 1 and "(the reference rows) are not all finite" in err, err
    assert not (tmp_path / "bad.csv").exists()


@pytest.mark.parametrize("argv, phrase", MISTAKES, ids=[p for _, p in MISTAKES])
def test_mistakes_in_the_new_options_are_one_line_errors_and_write_nothing(tmp_path, images, other_models, capsys,
                                                                          argv, phrase):
    (tmp_path / "taken.npy").write_bytes(b"")
    (tmp_path / "pic_worst.png").write_bytes(b"")
    names = {"tmp": tmp_path, "linear": other_models / "linear", "sda": other_models / "sda",
             "data": images / "data.npz"}
    argv = [a.format(**names) for a in argv]
    if "--model" not in argv:
        argv += ["--model", str(images / "model")]
    before = sorted(tmp_path.iterdir())
    code, _, err = run(capsys, "score", "--data", images / "data.npz", "--out", tmp_path / "o.npy", *argv)
    assert code == 2 and err.startswith("dae: error: ") and err.count("\n") == 1, err
    assert phrase.format(**names) in err
    assert sorted(tmp_path.iterdir()) == before
