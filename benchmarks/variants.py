"""Each variant of the dA on MNIST, measured the same way: its final training cost, and the
validation and test error of a logistic regression trained on its features (the codes of the
50,000 training digits), beside logistic regression on the raw pixels; with ``--seeds N``, the
mean and standard deviation over N seeds (123, the tutorial's, and up).  Then, as an anomaly
detector, the reconstruction errors of test digits against those of noise and of inverted digits
(the tutorial's masking dA, seed 123).

Read the table by its validation column: a variant is better than another where its
validation error is lower; the test column is the figure reported for it.

Each result is kept in a JSON file of its own under ``--out`` and not measured again, so the runs
can be split over processes (``--only``, ``--first-seed``) and a last call prints the table of
all of them.

    python benchmarks/variants.py [--epochs 15] [--hidden 500] [--seeds 1] [--first-seed 123]
        [--only "raw pixels|no noise"] [--out runs/variants]

Needs scikit-learn.  One seed of every variant takes about half an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sda_presets import spread  # this folder's

from dae import DenoisingAutoencoder, TrainingDiverged, load_mnist, train
from dae.files import write_text
from dae.sklearn import DAETransformer

# Level 0.3 for every noise: the tutorial's masking level, and for salt-and-pepper the same
# fraction of inputs; for Gaussian noise a standard deviation of 0.3.
# Each row: the model's settings, and train()'s.  The rest is the tutorial's (784-500, 15 epochs,
# learning rate 0.1, batch 20, seed 123); relu codes and the linear decoder of squared error
# take a learning rate of 0.01, at which they do not blow up.
MASKING = dict(noise="masking", corruption_level=0.3)
TUTORIAL_SEED = 123  # the tutorial's numpy.random.RandomState(123); the other seeds follow it
VARIANTS = {
    "masking 0.3 (the tutorial's)": (MASKING, {}),
    "gaussian, sigma 0.3": (dict(noise="gaussian", corruption_level=0.3), {}),
    "salt-and-pepper 0.3": (dict(noise="salt-and-pepper", corruption_level=0.3), {}),
    "no noise": (dict(corruption_level=0.0), {}),
    "masking + sparsity (beta 0.1, rho 0.05)": (dict(MASKING, sparsity_weight=0.1, sparsity_target=0.05), {}),
    "contractive, no noise (lambda 0.1)": (dict(corruption_level=0.0, contraction=0.1), {}),
    "masking + weight decay 1e-4": (MASKING, dict(weight_decay=1e-4)),
    "masking, tanh codes": (dict(MASKING, activation="tanh"), {}),
    "masking, relu codes": (dict(MASKING, activation="relu"), dict(learning_rate=0.01)),
    "masking, untied": (dict(MASKING, tied=False), {}),
    "masking, squared error (linear decoder)": (dict(MASKING, loss="squared-error"), dict(learning_rate=0.01)),
    "masking, momentum 0.9 + cosine": (MASKING, dict(momentum=0.9, learning_rate=0.01, schedule="cosine")),
    "masking, Adam 1e-3": (MASKING, dict(optimizer="adam", learning_rate=1e-3)),
}


def logistic_errors(train_x, train_y, evaluated: list[tuple]) -> list[float]:
    """Errors on each (x, y) of ``evaluated`` of scikit-learn's LogisticRegression (lbfgs, at most
    200 iterations) fitted on the training rows."""
    clf = LogisticRegression(max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 200 iterations, the same for every row
        clf.fit(train_x, train_y)
    return [float((clf.predict(x) != y).mean()) for x, y in evaluated]


def measure(name: str, seed: int, mnist, epochs: int, hidden: int) -> dict:
    """One variant, one seed: its final cost, training seconds, and the logistic regression's
    validation and test errors on its codes."""
    x, y = mnist.train.x, mnist.train.y.numpy()
    evaluated = [(mnist.valid.x, mnist.valid.y.numpy()), (mnist.test.x, mnist.test.y.numpy())]
    start = time.perf_counter()
    if name == "raw pixels":
        return {"cost": None, "seconds": 0.0,
                **dict(zip(("valid", "test"), logistic_errors(x.numpy(), y, [(v.numpy(), w) for v, w in evaluated])))}
    if name.startswith("Pipeline"):
        pipe = Pipeline([("dae", DAETransformer(n_hidden=hidden, n_epochs=epochs, random_state=seed)),
                         ("clf", LogisticRegression(max_iter=200))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipe.fit(x.numpy(), y)
        errors = [1.0 - pipe.score(v.numpy(), w) for v, w in evaluated]
        return {"cost": pipe["dae"].history_[-1].cost, "seconds": time.perf_counter() - start,
                "valid": errors[0], "test": errors[1]}
    settings, training = VARIANTS[name]
    g = torch.Generator().manual_seed(seed)
    model = DenoisingAutoencoder(784, hidden, generator=g, **settings)
    try:
        history = train(model, x, epochs=epochs, generator=g, **training)
    except TrainingDiverged as e:
        return {"diverged": str(e)}
    seconds = time.perf_counter() - start
    with torch.no_grad():
        errors = logistic_errors(model.encode(x).numpy(), y, [(model.encode(v).numpy(), w) for v, w in evaluated])
    result = {"cost": history[-1].cost, "seconds": seconds, "valid": errors[0], "test": errors[1]}
    if settings is MASKING and not training and seed == TUTORIAL_SEED:
        result["anomaly"] = anomaly_scores(model, mnist.test.x)
    return result


def anomaly_scores(model, tx) -> dict:
    """Median, 1st and 99th percentiles of the reconstruction errors of test digits, uniform noise
    and inverted digits, and the fraction of each above the digits' 99th percentile."""
    g = torch.Generator().manual_seed(0)
    sets = {"test digits": tx, "uniform noise": torch.rand(10000, 784, generator=g), "inverted digits": 1 - tx}
    with torch.no_grad():
        scores = {k: model.reconstruction_error(v).numpy() for k, v in sets.items()}
    threshold = np.quantile(scores["test digits"], 0.99)
    return {k: [float(np.median(v)), float(np.quantile(v, 0.01)), float(np.quantile(v, 0.99)),
                float((v > threshold).mean())] for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per variant (default: %(default)s)")
    parser.add_argument("--first-seed", type=int, default=TUTORIAL_SEED)
    parser.add_argument("--only", help="variant names separated by | (default: all, and raw pixels)")
    parser.add_argument("--out", default="runs/variants", help="a folder for the results (default: %(default)s)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist()
    every = ["raw pixels", "Pipeline(DAETransformer, LogisticRegression)", *VARIANTS]
    names = args.only.split("|") if args.only else every
    for name in names:
        if name not in every:
            parser.error(f"unknown variant {name!r}")
        for seed in range(args.first_seed, args.first_seed + (1 if name == "raw pixels" else args.seeds)):
            path = out / f"{_slug(name)}-{args.epochs}-epochs-{args.hidden}-seed{seed}.json"
            if not path.is_file():
                result = measure(name, seed, mnist, args.epochs, args.hidden)
                write_text(path, json.dumps(result))
                print(f"{path.name}: {result}", flush=True)
    report(out, every, args.epochs, args.hidden)


def report(out: Path, names: list[str], epochs: int, hidden: int) -> None:
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; 784-{hidden}, {epochs} epochs, "
          f"learning rate 0.1, batch 20; logistic regression on the codes, error in %")
    print(f"{'variant':44s} {'final cost':>10s} {'seconds':>8s} {'validation':>14s} {'test':>14s}  seeds")
    anomaly = None
    for name in names:
        files = sorted(out.glob(f"{_slug(name)}-{epochs}-epochs-{hidden}-seed*.json"))
        runs = [json.loads(p.read_text()) for p in files]
        done = [r for r in runs if "diverged" not in r]
        if len(done) < len(runs):
            print(f"{name:44s} diverged in {len(runs) - len(done)} of {len(runs)} seeds", flush=True)
        if not done:
            continue
        cost = "" if done[0]["cost"] is None else f"{statistics.mean(r['cost'] for r in done):10.2f}"
        print(f"{name:44s} {cost:>10s} {statistics.mean(r['seconds'] for r in done):8.1f} "
              f"{spread([100 * r['valid'] for r in done]):>14s} {spread([100 * r['test'] for r in done]):>14s}"
              f"  {len(done)}")
        anomaly = anomaly or next((r["anomaly"] for r in done if "anomaly" in r), None)
    if anomaly is not None:
        print("\nanomaly scores (cross-entropy of the reconstruction; the masking dA, seed 123):")
        for k, (median, low, high, above) in anomaly.items():
            print(f"  {k:16s} median {median:8.1f}   1st-99th percentile {low:8.1f}-{high:8.1f}"
                  f"   above the digits' 99th percentile: {above:.1%}")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


if __name__ == "__main__":
    main()
