"""One-class novelty detection on MNIST: train on one digit, score every test digit, AUROC.

For each digit class k: the detectors are fitted on the training images of class k only (the
50,000-image training split: about 5,000 each), then score all 10,000 test images; class k is
normal, the nine others anomalous; the AUROC of each detector is printed per class with the mean
over the ten classes, beside the published Deep SVDD row (Ruff et al., ICML 2018, table 1, a
convolutional network).  In the same run, on the same data:

* ``dA``: :class:`dae.sklearn.AutoencoderOutlierDetector` around a :class:`dae.sklearn.DAETransformer`;
* ``deep``: the same detector around a :class:`dae.sklearn.DeepAutoencoderTransformer`;
  each scored by its squared error, its cross-entropy, and the squared error plus w times the
  distance from the row's code to the training codes (``code_weight``, :class:`dae.anomaly.NeighbourScore`)
  for each w of :data:`CODE_WEIGHTS`;
* ``PCA``: the squared reconstruction error with k components (the issue's baseline: 30);
* scikit-learn's ``IsolationForest`` and ``OneClassSVM`` (RBF kernel, gamma "scale").

**Selection on validation only.**  Each family has a few candidates (the dA's size and noise, the
score: squared error, cross-entropy or squared error + w x code distance; PCA's components; the
OC-SVM's nu).  They are compared on
a validation set made without the test digits nor any other class: the validation split's
images of class k (normal) against anomalies made from them (turned 90 degrees, upside down,
the bottom half mirrored) and images of random pen strokes.  The candidate with the best mean
validation AUROC over the ten classes and the seeds is the family's choice, and only its test
AUROC is computed: per class the mean over the seeds, and the mean over the classes with its
standard deviation over the seeds (each seed fits every detector afresh: the autoencoders'
initial weights, noise and minibatch order, PCA's and the forest's random state).  This
benchmark also chose the defaults of ``dae score`` and the detector: the score
(``dae.config.ANOMALY_SCORE``) and the weight of the code distance
(``dae.config.ANOMALY_CODE_WEIGHT``), each the one with the highest mean validation AUROC over
the autoencoders.

    python benchmarks/one_class.py [--classes 0,1,...] [--seeds 0,1,2] [--threads 1] [--roc-class 8]
        [--out DIR] [--validation-only]

Each class and seed is fitted once into ``--out``: ``class{k}-seed{s}.json`` (validation AUROCs,
fit times) and ``class{k}-seed{s}.npz`` (each candidate's scores of the test digits), so the
classes can be split over processes side by side (``--classes``); the call that finds all ten
classes of every seed prints the tables and writes ``one_class.json`` and ``one_class_roc.png``
(test ROC curves of each chosen detector for ``--roc-class``, the first seed).  Only the chosen
candidates' scores are ever compared with the test labels.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.svm import OneClassSVM

from dae import load_mnist
from dae.anomaly import SCORES
from dae.config import ANOMALY_NEIGHBORS
from dae.files import write_bytes, write_text
from dae.sklearn import AutoencoderOutlierDetector, DAETransformer, DeepAutoencoderTransformer

# Ruff et al. (2018), "Deep One-Class Classification", ICML, table 1: one-class Deep SVDD on MNIST, AUROC (%).
DEEP_SVDD = [98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6, 93.9, 96.5]
# The weights of the distance to the training codes tried beside the reconstruction error alone
# (dae.anomaly.NeighbourScore; k = dae.config.ANOMALY_NEIGHBORS neighbours).
CODE_WEIGHTS = (0.5, 1.0, 2.0, 4.0)


def candidates(seed: int) -> dict[str, dict[str, object]]:
    """Each family's candidates, as fitters: a function of the training rows returning
    ``{candidate name: scorer}``, a scorer mapping rows to abnormality (higher = more abnormal).
    An autoencoder is fitted once (seeded by ``seed``) and scored every way: by the detector's
    squared error, by its own ``score_samples`` (minus its loss, the cross-entropy), and by the
    squared error plus w times the code distance for each w of :data:`CODE_WEIGHTS`."""
    def autoencoder(name, make):
        def fit(x):
            detector = AutoencoderOutlierDetector(make(), anomaly_score="squared-error", code_weight=1.0,
                                                  n_neighbors=ANOMALY_NEIGHBORS).fit(x)
            parts = _Parts(detector)
            scorers = {f"{name} squared-error": lambda rows: parts(rows)[0],
                       f"{name} cross-entropy": lambda rows: -detector.autoencoder_.score_samples(rows)}
            for w in CODE_WEIGHTS:  # the same errors and distances, weighed as dae.anomaly.NeighbourScore does
                scorers[f"{name} squared-error + {w:g} x code distance"] = (
                    lambda rows, w=w: _weighed(detector, *parts(rows), w))
            return scorers
        return fit

    def da(n_hidden, level):  # the tutorial's dA training: rate 0.1, batch 20; 30 epochs of the 5,000 rows
        return lambda: DAETransformer(n_hidden=n_hidden, corruption_level=level, n_epochs=30, random_state=seed)

    def deep():  # dae deep's network and recipe, 30 fine-tuning epochs of the 5,000 rows
        return DeepAutoencoderTransformer(n_epochs=30, random_state=seed)

    def pca(k):
        def fit(x):
            p = PCA(k, random_state=seed).fit(x)
            return {f"PCA {k}": lambda rows: ((p.inverse_transform(p.transform(rows)) - rows) ** 2).sum(axis=1)}
        return fit

    def ocsvm(nu):
        def fit(x):
            m = OneClassSVM(kernel="rbf", gamma="scale", nu=nu).fit(x)
            return {f"OneClassSVM nu {nu}": lambda rows: -m.score_samples(rows)}
        return fit

    def forest(x):
        m = IsolationForest(random_state=seed).fit(x)
        return {"IsolationForest": lambda rows: -m.score_samples(rows)}

    return {
        "dA": [autoencoder(f"dA {n} noise {p}", da(n, p)) for n in (64, 256) for p in (0.0, 0.3)],
        "deep": [autoencoder("deep 1000-500-250-30", deep)],
        "PCA": [pca(k) for k in (10, 20, 30, 50)],
        "IsolationForest": [forest],
        "OneClassSVM": [ocsvm(nu) for nu in (0.1, 0.5)],
    }


class _Parts:
    """A fitted detector's reconstruction errors and code distances of each array of rows asked for
    (the validation and the test rows), kept so that each weight does not compute them again."""

    def __init__(self, detector):
        self.detector, self.known = detector, {}

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if id(rows) not in self.known:  # the array is kept with its parts, so its id is not reused
            self.known[id(rows)] = rows, (self.detector.reconstruction_error(rows), self.detector.code_distance(rows))
        return self.known[id(rows)][1]


def _weighed(detector, errors: np.ndarray, distances: np.ndarray, weight: float) -> np.ndarray:
    """The score of rows with these ``errors`` and code ``distances`` had ``detector`` been fitted with
    ``code_weight=weight`` (the standardised parts do not depend on it)."""
    e, d = detector.neighbour_score_.parts(torch.from_numpy(errors), torch.from_numpy(distances))
    return (e + weight * d).numpy()


def strokes(n: int, rng: np.random.Generator) -> np.ndarray:
    """n 28 x 28 images of 1 to 3 random pen strokes (polylines 2 to 3 pixels wide), in [0, 1]."""
    out = np.zeros((n, 28, 28), np.float32)
    for i in range(n):
        image = Image.new("L", (28, 28))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(1, 4)):
            points = [tuple(rng.integers(5, 23, 2).tolist()) for _ in range(rng.integers(2, 5))]
            draw.line(points, fill=255, width=int(rng.integers(2, 4)))
        out[i] = np.asarray(image) / 255.0
    return out.reshape(n, 784)


def made_anomalies(normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """As many anomalies as normal rows, made from them: a quarter each turned 90 degrees, upside
    down, with the bottom half mirrored left to right, and random strokes."""
    images = normal.reshape(-1, 28, 28)
    m = len(images) // 4
    parts = [np.rot90(images[:m], 1, axes=(1, 2)), np.flip(images[m:2 * m], 1),
             np.concatenate([images[2 * m:3 * m, :14], np.flip(images[2 * m:3 * m, 14:], 2)], 1),
             strokes(len(images) - 3 * m, rng).reshape(-1, 28, 28)]
    return np.concatenate([p.reshape(len(p), 784) for p in parts]).astype(np.float32)


def auroc(normal: np.ndarray, abnormality: np.ndarray) -> float:
    """AUROC (%) of ``abnormality`` for telling the rows where ``normal`` is False."""
    return 100.0 * roc_auc_score(~normal, abnormality)


def run_class(k: int, seed: int, data, families, out: Path) -> None:
    """Fit every candidate on the training digits k; write their validation AUROCs (class{k}-seed{seed}.json)
    and their abnormality scores of the test digits (.npz), not yet compared with the labels."""
    x_train, y_train = data.train.x.numpy(), data.train.y.numpy()
    x_valid, y_valid = data.valid.x.numpy(), data.valid.y.numpy()
    rng = np.random.default_rng(1000 + k)
    normal_valid = x_valid[y_valid == k]
    valid = np.concatenate([normal_valid, made_anomalies(normal_valid, rng)])
    is_normal = np.arange(len(valid)) < len(normal_valid)
    train = x_train[y_train == k]
    x_test = data.test.x.numpy()
    result = {"class": k, "seed": seed, "n_train": len(train), "validation_auroc": {}, "fit_seconds": {}}
    test_scores = {}
    for family in families.values():
        for fit in family:
            start = time.perf_counter()
            scorers = fit(train)
            seconds = time.perf_counter() - start
            for name, scorer in scorers.items():
                result["fit_seconds"][name] = seconds
                result["validation_auroc"][name] = auroc(is_normal, scorer(valid))
                test_scores[name] = scorer(x_test)
    buffer = io.BytesIO()
    np.savez(buffer, **test_scores)
    write_bytes(out / f"class{k}-seed{seed}.npz", buffer.getvalue())
    write_text(out / f"class{k}-seed{seed}.json", json.dumps(result, indent=1))
    print(f"class {k} seed {seed} (validation): "
          + ", ".join(f"{n} {v:.1f}" for n, v in result["validation_auroc"].items()),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="the classes this process fits")
    parser.add_argument("--seeds", default="0,1,2", help="the seeds of every detector this process fits")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--roc-class", type=int, default=8)
    parser.add_argument("--out", default="runs/one_class")
    parser.add_argument("--validation-only", action="store_true", help="stop before the test set (for trials)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist()
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        families = candidates(seed)
        for k in (int(k) for k in args.classes.split(",")):
            if not (out / f"class{k}-seed{seed}.json").exists():
                run_class(k, seed, data, families, out)
    missing = [(k, s) for s in seeds for k in range(10) if not (out / f"class{k}-seed{s}.json").exists()]
    if missing:
        print(f"(class, seed) still to fit: {missing}; the table needs all ten classes of each seed")
        return
    results = {(k, s): json.loads((out / f"class{k}-seed{s}.json").read_text()) for s in seeds for k in range(10)}
    names = list(results[0, seeds[0]]["validation_auroc"])
    valid_auc = {name: [r["validation_auroc"][name] for r in results.values()] for name in names}
    seconds = {name: statistics.mean(r["fit_seconds"][name] for r in results.values()) * 10 for name in names}

    print(f"Validation AUROC (%), mean over the ten classes and {len(seeds)} seeds: the held-out normal digits "
          "against anomalies made from them (never a test digit)")
    chosen = {}
    for family in candidates(seeds[0]):
        members = [name for name in names if _family(name) == family]
        means = {name: statistics.mean(valid_auc[name]) for name in members}
        chosen[family] = max(means, key=means.get)
        for name, mean in means.items():
            print(f"  {name:<56} {mean:6.2f}{'   <- chosen' if name == chosen[family] else '            '}"
                  f"   ({seconds[name]:.0f} s to fit the ten classes)")
    by_score = {s: statistics.mean(statistics.mean(v) for n, v in valid_auc.items() if n.endswith(s)) for s in SCORES}
    print("  mean over the autoencoders: " + ", ".join(f"{s} {v:.2f}" for s, v in by_score.items()))
    by_weight = {w: statistics.mean(statistics.mean(v) for n, v in valid_auc.items()
                                    if n.endswith(f"squared-error + {w:g} x code distance")) for w in CODE_WEIGHTS}
    print("  squared error + w x code distance, mean over the autoencoders: w = 0 (the error alone) "
          f"{by_score['squared-error']:.2f}, " + ", ".join(f"{w:g}: {v:.2f}" for w, v in by_weight.items()))
    if args.validation_only:
        return

    y_test = data.test.y.numpy()
    scores = {key: np.load(out / f"class{key[0]}-seed{key[1]}.npz") for key in results}
    print(f"\nTest AUROC (%) of each family's choice: digit k normal, the other test digits anomalous; per class the "
          f"mean over the seeds, then the mean over the classes +- its standard deviation over the {len(seeds)} seeds")
    print(f"{'detector':<56}" + "".join(f"{k:>6}" for k in range(10)) + "    mean")
    test_auc, spread = {}, {}
    for name in chosen.values():
        per_seed = [[auroc(y_test == k, scores[k, s][name]) for k in range(10)] for s in seeds]
        test_auc[name] = [statistics.mean(column) for column in zip(*per_seed)]
        means = [statistics.mean(row) for row in per_seed]
        spread[name] = statistics.stdev(means) if len(means) > 1 else 0.0
        print(f"{name:<56}" + "".join(f"{v:6.1f}" for v in test_auc[name])
              + f"  {statistics.mean(means):6.2f} +- {spread[name]:.2f}")
    print(f"{'Deep SVDD (Ruff et al. 2018), published':<56}" + "".join(f"{v:6.1f}" for v in DEEP_SVDD)
          + f"  {statistics.mean(DEEP_SVDD):6.2f}")

    figure = Figure(figsize=(5.5, 5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    k, s = args.roc_class, seeds[0]
    for name in chosen.values():
        fpr, tpr, _ = roc_curve(y_test != k, scores[k, s][name])
        ax.plot(fpr, tpr, label=f"{name} ({auroc(y_test == k, scores[k, s][name]):.1f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate (normal test digits flagged)", ylabel="true positive rate",
           title=f"One-class MNIST, digit {k} normal (seed {s}): test ROC curves")
    ax.legend(loc="lower right", fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes(out / "one_class_roc.png", buffer.getvalue())
    write_text(out / "one_class.json", json.dumps({
        "seeds": seeds, "chosen": chosen,
        "validation_auroc_mean": {n: statistics.mean(v) for n, v in valid_auc.items()},
        "test_auroc_per_class_mean_over_seeds": test_auc, "test_auroc_mean_sd_over_seeds": spread,
        "deep_svdd_published": DEEP_SVDD, "fit_seconds_ten_classes": seconds, "torch": torch.__version__}, indent=1))
    print(f"\nwrote {out / 'one_class.json'} and {out / 'one_class_roc.png'}")


def _family(name: str) -> str:
    return {"dA ": "dA", "deep": "deep", "PCA": "PCA", "Isol": "IsolationForest", "OneC": "OneClassSVM"}[
        next(p for p in ("dA ", "deep", "PCA", "Isol", "OneC") if name.startswith(p))]


if __name__ == "__main__":
    main()
